"""Scheduler `none`: the job script runs as a background process group on the host itself.

The id is the PID of the process `setsid` starts (the job script, or `timeout` in front of
it when the job has a time limit), which is also the process group id, so a cancel
signals the script and the runner together. A PID can be reused after the job has
ended, so the queue view only counts a process as ours if its command line names our
job script.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping, Sequence

from cerise.remote.jobscript import JobFiles
from cerise.remote.schedulers import JobRef, QueueState, Request


class DirectScheduler:
    """Background processes, no queue."""

    name = "none"

    def submit_command(self, files: JobFiles, request: Request) -> str:
        script = shlex.quote(files.script)
        log = shlex.quote(f"{files.job_dir.rstrip('/')}/scheduler.txt")
        # A wall-clock limit: `timeout` sends SIGTERM, which the job script turns into 143.
        limit = f"timeout -s TERM {int(request.time_limit)} " if request.time_limit > 0 else ""
        return f"setsid {limit}bash {script} > {log} 2>&1 < /dev/null & echo $!"

    def queue_script(self, jobs: Sequence[JobRef]) -> str:
        pids = ",".join(job.remote_id for job in jobs if job.remote_id.isdigit())
        if not pids:
            return "true"
        return f"ps -o pid=,args= -p {pids} || true"

    def parse_queue(self, output: str, jobs: Sequence[JobRef]) -> Mapping[str, QueueState]:
        commands: dict[str, str] = {}
        for line in output.splitlines():
            pid, _, command = line.strip().partition(" ")
            commands[pid] = command.strip()
        states: dict[str, QueueState] = {}
        for job in jobs:
            ours = commands.get(job.remote_id, "").endswith(job.files.script)
            states[job.key] = QueueState.RUNNING if ours else QueueState.ABSENT
        return states

    def cancel_script(self, jobs: Sequence[JobRef]) -> str:
        groups = " ".join(f"-{job.remote_id}" for job in jobs if job.remote_id.isdigit())
        if not groups:
            return "true"
        return f"kill -TERM -- {groups} 2>/dev/null; true"
