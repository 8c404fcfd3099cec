"""Scheduler `none`: the job script runs as a background process group on the host itself.

The id is the PID of the job script that `setsid` starts, which is also the process group
id, so a cancel signals the script (whose trap stops the runner) and the runner together.
A PID can be reused after the job has ended, so the queue view only counts a process as
ours if its command line names our job script; a line `ps` would not print makes the
status unavailable.

Search (after a submit cut short): the job script's process, by its command line.

Limits: there is no queue to refuse a job, so the submit refuses one that asks for more
cores than the host has (`nproc`) or more memory than it has (`MemTotal`). Memory is not
otherwise limited: `ulimit -v` would cap virtual memory, which runners and the programs
they start reserve far beyond what they use, and kill jobs that fit. A time limit is
enforced by the job script itself (`jobscript.TIME_LIMIT_VARIABLE`): it runs the runner
under `timeout` in a process group of its own, so the script, whose traps are set before
the clock starts, always outlives the runner and records that the limit stopped it.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping, Sequence

from cerise.remote.jobscript import TIME_LIMIT_VARIABLE, JobFiles
from cerise.remote.schedulers import (
    JobRef,
    QueueEntry,
    QueueState,
    Request,
    StatusUnavailable,
)

PS_LINE = re.compile(r"\s*(\d+)\s+(.*)")


class DirectScheduler:
    """Background processes, no queue."""

    name = "none"

    def submit_command(self, files: JobFiles, request: Request) -> str:
        script = shlex.quote(files.script)
        log = shlex.quote(f"{files.job_dir.rstrip('/')}/scheduler.txt")
        cores = max(1, int(request.cores))
        check = (f'[ {cores} -le "$(nproc)" ] || {{ echo "none: the job asks for {cores} '
                 f'cores, but this host has $(nproc)" >&2; exit 1; }}; ')
        if request.memory > 0:
            memory = int(request.memory)
            check += ("__mem=$(awk '/^MemTotal:/ {print int($2 / 1024)}' /proc/meminfo "
                      f'2>/dev/null); [ -z "$__mem" ] || [ {memory} -le "$__mem" ] || '
                      f'{{ echo "none: the job asks for {memory} MiB of memory, but this host '
                      'has $__mem MiB" >&2; exit 1; }; ')
        limit = (f"{TIME_LIMIT_VARIABLE}={int(request.time_limit)} "
                 if request.time_limit > 0 else "")
        return f"{check}{limit}setsid bash {script} > {log} 2>&1 < /dev/null & echo $!"

    def queue_script(self, jobs: Sequence[JobRef]) -> str:
        """`ps -o pid=,args=` lines of the jobs' processes that exist. Where there is a
        /proc, bash reads each one's command line itself: procps' `ps -p` reads the /proc
        entries of every process on the host (four files each) to print a few, which on a
        busy login node costs more than the whole rest of a status check."""
        pids = [job.remote_id for job in jobs if job.remote_id.isdigit()]
        if not pids:
            return "true"
        return f"""\
if [ -r /proc/self/cmdline ]; then
    for __cerise_pid in {" ".join(pids)}; do
        mapfile -d '' -t __cerise_args 2>/dev/null < "/proc/$__cerise_pid/cmdline" &&
            [ "${{#__cerise_args[@]}}" -gt 0 ] || continue
        printf '%s' "$__cerise_pid"
        printf ' %s' "${{__cerise_args[@]//$'\\n'/ }}"
        printf '\\n'
    done
else
    ps -ww -o pid=,args= -p {",".join(pids)} || true
fi"""

    def parse_queue(self, output: str, jobs: Sequence[JobRef]) -> Mapping[str, QueueEntry]:
        commands: dict[str, str] = {}
        # Only newlines end a line (the script prints a job's own as spaces): a reused PID's
        # arguments may hold U+2028, a form feed or a carriage return, which splitlines
        # would cut at.
        for line in output.split("\n"):
            if not line.strip():
                continue
            match = PS_LINE.fullmatch(line)
            if match is None:
                raise StatusUnavailable(
                    f"none: ps printed what Cerise cannot read: {line[:200]!r}")
            commands[match.group(1)] = match.group(2).strip()
        entries: dict[str, QueueEntry] = {}
        for job in jobs:
            ours = commands.get(job.remote_id, "").endswith(job.files.script)
            entries[job.key] = QueueEntry(QueueState.RUNNING if ours else QueueState.ABSENT)
        return entries

    def cancel_script(self, jobs: Sequence[JobRef]) -> str:
        groups = " ".join(f"-{job.remote_id}" for job in jobs if job.remote_id.isdigit())
        if not groups:
            return "true"
        return f"kill -TERM -- {groups} 2>/dev/null; true"

    def search_command(self, files: JobFiles, request: Request) -> str:
        return "ps -ww -eo pid=,args="

    def parse_search(self, output: str, files: JobFiles, request: Request) -> str | None:
        return process_of(output, files.script)


def process_of(output: str, script: str) -> str | None:
    """The PID of the job script `script` as started by a submit (`setsid bash SCRIPT`) in
    `ps -o pid=,args=` lines, or None."""
    for line in output.splitlines():
        match = PS_LINE.fullmatch(line)
        if match is not None and match.group(2).strip() == f"bash {script}":
            return match.group(1)
    return None
