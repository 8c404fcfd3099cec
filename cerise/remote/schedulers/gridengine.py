"""Scheduler `gridengine`: qsub, qstat -xml and qdel of (Son of) Grid Engine 8.

Submit: `qsub -terse -notify -S /bin/bash -N NAME -wd WORK -j y -o LOG -r n -l h_rt=HH:MM:SS
[-pe PE N] [-q QUEUE] [options] job.sh` prints `ID` (`ID.1-10:1` for an array job); the id
is the part before the dot. `-notify` makes qdel and an exceeded `h_rt` send SIGUSR2
before SIGKILL, which the job script treats like SIGTERM (it records 143). `-S /bin/bash`
because queues usually start scripts with /bin/sh, ignoring `#!`. Names lose the
characters Grid Engine refuses and may not start with a digit. A job of more than one
core needs the resource's parallel environment (`-pe`); without one, the submit fails
and says so rather than run the job on one slot.

Status: one `qstat -u USER -xml` of all the user's jobs still in the queue, read with
ElementTree (qstat's own output; anything unreadable counts as no jobs). `qw`/`hqw` are
waiting; `r`, `t` and the suspended `s`/`S`/`T` running. A state with `E` (`Eqw`: the job
could not start, e.g. its directory is gone) counts as absent. Such a job never leaves the
queue by itself and has no exit code, so it polls as vanished, which the operator ends as
a failure after its grace period; a cancel (qdel) removes it from the queue.

Limits: qdel, like an `h_rt` overrun, kills the job with SIGKILL (the queue's default
`terminate_method`), so its TERM trap cannot write an exit code: a cancelled or overrun
job shows as vanished rather than done with 143.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from xml.etree import ElementTree

from cerise.remote.jobscript import JobFiles
from cerise.remote.schedulers import JobRef, QueueState, Request, batch
from cerise.remote.schedulers.batch import BatchSettings

RUNNING_LETTERS = frozenset("rtsST")
WAITING_LETTERS = frozenset("qwh")


def queue_state(state: str) -> QueueState:
    """qstat's state letters (`qw`, `hqw`, `r`, `Eqw`, `dr`…) as a queue state."""
    letters = set(state)
    if "E" in letters:
        return QueueState.ABSENT
    if letters & RUNNING_LETTERS:
        return QueueState.RUNNING
    if letters & WAITING_LETTERS:
        return QueueState.WAITING
    return QueueState.ABSENT


def job_states(output: str) -> dict[str, QueueState]:
    """Each listed job's state by id; none if the output is not XML."""
    try:
        root = ElementTree.fromstring(output)  # noqa: S314 - qstat's output, not user data
    except ElementTree.ParseError:
        return {}
    return {
        (entry.findtext("JB_job_number") or "").strip():
            queue_state((entry.findtext("state") or "").strip())
        for entry in root.iter("job_list")
    }


@dataclass(frozen=True)
class GridEngineScheduler:
    """Son of Grid Engine (and its relatives that keep `qstat -xml`)."""

    settings: BatchSettings = field(default_factory=BatchSettings)
    name = "gridengine"

    def submit_command(self, files: JobFiles, request: Request) -> str:
        environment = self.settings.parallel_environment
        if request.cores > 1 and not environment:
            message = (f"gridengine: the job asks for {request.cores} cores, but the compute "
                       "resource names no parallel environment (jobs.parallelEnvironment)")
            return f"{batch.command(['echo', message])} >&2; false"
        words = [
            "qsub", "-terse", "-notify", "-S", "/bin/bash",
            "-N", batch.job_name(request.name, keep="A-Za-z0-9_.-", limit=255),
            "-wd", files.work,
            "-j", "y", "-o", batch.scheduler_log(files),
            "-r", "n",
        ]  # fmt: skip
        if request.time_limit > 0:
            words += ["-l", f"h_rt={batch.clock(request.time_limit)}"]
        if request.cores > 1 and environment:
            words += ["-pe", environment, str(request.cores)]
        if self.settings.queue:
            words += ["-q", self.settings.queue]
        words += [*self.settings.options, files.script]
        return f"out=$({batch.command(words)}) && printf '%s\\n' \"${{out%%.*}}\""

    def queue_script(self, jobs: Sequence[JobRef]) -> str:
        return 'qstat -u "$(id -un)" -xml || exit'

    def parse_queue(self, output: str, jobs: Sequence[JobRef]) -> Mapping[str, QueueState]:
        states = job_states(output)
        return {job.key: states.get(job.remote_id, QueueState.ABSENT) for job in jobs}

    def cancel_script(self, jobs: Sequence[JobRef]) -> str:
        # qdel fails for jobs that already left; it still deletes the others.
        ids = batch.job_ids(jobs)
        return f"{batch.command(['qdel', *ids])} || true" if ids else "true"
