"""Scheduler `torque`: qsub, qstat -f and qdel, for Torque/PBS and Slurm's Torque wrappers.

Written against both: Slurm's Perl wrappers (`slurm-wlm-torque`, tested) and real Torque
(by its documentation). What works on both:

* Submit: `qsub -N NAME -j oe -o LOG -r n -l walltime=HH:MM:SS,nodes=N:ppn=P [-q QUEUE]
  [options] job.sh`. No `-d` (the wrappers reject it; the job script `cd`s itself), no
  stdin script, no `DD:HH:MM:SS` walltime. Names are cut to 15 letters and digits (POSIX
  and older Torque). The output is the id: `123` (wrappers) or `123.server` (Torque).
  The wrappers print their errors on stdout; the submit moves them to stderr.
* Status: one `qstat -f ID…` for the jobs polled, read by `Job Id:` and `job_state`.
  Exit status 153 means some (Torque) or all (wrappers) ids are unknown, which is normal
  for finished jobs; any other failure fails the poll. Ids match on the part before the
  first dot, as `qstat` may print the server's full name.
* Cancel: `qdel ID…`, whose exit status is ignored: both fail for finished jobs.

Limits: the wrappers' qsub rebuilds the sbatch command as shell text and runs it through
`/bin/sh`, so a value holding shell syntax would run as a command there. Every value we
pass (queue, options, the job's paths) is therefore limited to `SAFE` characters on this
backend: a resource whose queue or options hold others is refused with a message, and so
is a job whose paths do (a base path with spaces, say). `ppn` is the cores per node; the
slots setting does not apply.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from cerise.remote.jobscript import JobFiles
from cerise.remote.schedulers import JobRef, QueueState, Request, batch
from cerise.remote.schedulers.batch import BatchSettings

UNKNOWN_JOB = 153
"""qstat's exit status for an unknown job id (PBSE_UNKJOBID 15001, modulo 256)."""

NAME_LENGTH = 15

WAITING_STATES = frozenset("QWHT")
"""Queued, waiting for its start time, held, in transit."""
RUNNING_STATES = frozenset("RES")
"""Running, exiting, suspended. C (completed) and the wrappers' U (unknown) are absent."""


def queue_state(state: str) -> QueueState:
    """A `job_state` letter as a queue state."""
    if state in WAITING_STATES:
        return QueueState.WAITING
    if state in RUNNING_STATES:
        return QueueState.RUNNING
    return QueueState.ABSENT


def short_id(job_id: str) -> str:
    """`123` of `123.server.example.org`."""
    return job_id.strip().split(".", 1)[0]


SAFE = re.compile(r"[A-Za-z0-9_@%+=:,./-]+")
"""Characters that mean the same to a shell as to qsub: all a value may hold on this backend."""


def _check(what: str, value: str) -> str:
    if not SAFE.fullmatch(value):
        raise ValueError(
            f"{what} {value[:100]!r} holds characters that Slurm's Torque wrappers would pass "
            "to a shell; on the torque scheduler only letters, digits and _@%+=:,./- are "
            "allowed")
    return value


@dataclass(frozen=True)
class TorqueScheduler:
    """Torque/PBS, or Slurm behind its Torque wrappers."""

    settings: BatchSettings = field(default_factory=BatchSettings)
    name = "torque"

    def __post_init__(self) -> None:
        if self.settings.queue:
            _check("the queue", self.settings.queue)
        for option in self.settings.options:
            _check("the scheduler option", option)

    def submit_command(self, files: JobFiles, request: Request) -> str:
        _check("the job directory", files.job_dir)
        name = batch.job_name(request.name, keep="A-Za-z0-9", limit=NAME_LENGTH)
        words = ["qsub", "-N", name, "-j", "oe", "-o", batch.scheduler_log(files), "-r", "n"]
        resources = []
        if request.time_limit > 0:
            resources.append(f"walltime={batch.clock(request.time_limit)}")
        if request.cores > 0:
            shape = batch.node_shape(request.cores, self.settings)
            resources.append(f"nodes={shape.nodes}:ppn={shape.cores_per_node}")
        if resources:
            words += ["-l", ",".join(resources)]
        if self.settings.queue:
            words += ["-q", self.settings.queue]
        words += [*self.settings.options, files.script]
        return (
            f"if out=$({batch.command(words)}); then printf '%s\\n' \"$out\"; "
            "else printf '%s\\n' \"$out\" >&2; false; fi"
        )

    def queue_script(self, jobs: Sequence[JobRef]) -> str:
        ids = batch.job_ids(jobs)
        if not ids:
            return "true"
        return (
            f"{batch.command(['qstat', '-f', *ids])}\n"
            f'status=$?; [ "$status" -eq 0 ] || [ "$status" -eq {UNKNOWN_JOB} ] '
            '|| exit "$status"'
        )

    def parse_queue(self, output: str, jobs: Sequence[JobRef]) -> Mapping[str, QueueState]:
        states: dict[str, QueueState] = {}
        current = ""
        for line in output.splitlines():
            text = line.strip()
            if text.startswith("Job Id:"):
                current = short_id(text.removeprefix("Job Id:"))
            elif current and text.startswith("job_state"):
                _, _, state = text.partition("=")
                states[current] = queue_state(state.strip())
        return {job.key: states.get(short_id(job.remote_id), QueueState.ABSENT) for job in jobs}

    def cancel_script(self, jobs: Sequence[JobRef]) -> str:
        ids = batch.job_ids(jobs)
        return f"{batch.command(['qdel', *ids])} || true" if ids else "true"
