"""Batch schedulers as plug-ins: pure builders of shell text and parsers of its output.

A scheduler module builds three things — the submit command, ONE status script for all
jobs of a compute resource, and the cancel script — and parses the status output. The
executor (the operator's poller) runs them over the resource's shared connection.

Whatever the scheduler, a job's end is read from its `exit_code` marker (see
`cerise.remote.jobscript`): queues forget finished jobs, and accounting may be off. The
status script therefore always reports, per job, the queue's word and the markers.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

from cerise.remote.jobscript import JobFiles


class QueueState(StrEnum):
    """What the scheduler says of a job."""

    WAITING = "waiting"
    RUNNING = "running"
    ABSENT = "absent"
    """Not (or no longer) in the queue."""


class RemoteState(StrEnum):
    """A job's state on the compute resource, from the queue and the markers together."""

    WAITING = "waiting"
    RUNNING = "running"
    DONE = "done"
    VANISHED = "vanished"
    """Gone from the queue without an exit code: killed hard, or the marker is not yet visible
    (network file systems). The poller gives it a grace period before calling it done."""


@dataclass(frozen=True)
class JobRef:
    """A submitted job as the poller knows it."""

    key: str
    """A stable identifier of the job (its Kubernetes UID), also used in its job name."""
    files: JobFiles
    remote_id: str


@dataclass(frozen=True)
class Observation:
    """One job's state, its runner's exit code once known, and the size of its log."""

    state: RemoteState
    exit_code: int | None = None
    log_size: int = 0
    """Bytes in the runner's log, so that only a log that grew is read."""


@dataclass(frozen=True)
class Request:
    """What a job asks of the scheduler."""

    name: str
    cores: int = 0
    time_limit: int = 0
    """Seconds; 0 for the scheduler's default."""


class Scheduler(Protocol):
    """The contract every scheduler module fulfils."""

    name: str

    def submit_command(self, files: JobFiles, request: Request) -> str:
        """Shell text that submits `files.script` and prints only the scheduler's id."""
        ...

    def queue_script(self, jobs: Sequence[JobRef]) -> str:
        """Shell text printing the queue's view of `jobs` (one command for all of them)."""
        ...

    def parse_queue(self, output: str, jobs: Sequence[JobRef]) -> Mapping[str, QueueState]:
        """The queue state of each job (by key) from `queue_script`'s output."""
        ...

    def cancel_script(self, jobs: Sequence[JobRef]) -> str:
        """Shell text that stops `jobs`, queued or running."""
        ...


MARKERS_BEGIN = "--cerise-markers--"


def markers_script(jobs: Sequence[JobRef]) -> str:
    """Shell text printing, after a separator line, `<key> <exit code or -> <log size>` for
    each job."""
    lines = [f"echo {MARKERS_BEGIN}"]
    for job in jobs:
        code, log = shlex.quote(job.files.exit_code), shlex.quote(job.files.stderr)
        lines.append(
            f"printf '%s %s %s\\n' {shlex.quote(job.key)} "
            f'"$(cat {code} 2>/dev/null || echo -)" "$(stat -c %s {log} 2>/dev/null || echo 0)"'
        )
    return "\n".join(lines)


def status_script(scheduler: Scheduler, jobs: Sequence[JobRef]) -> str:
    """The one script run per poll of a compute resource: the queue, then the markers."""
    return f"{scheduler.queue_script(jobs)}\n{markers_script(jobs)}\n"


def parse_status(
    scheduler: Scheduler, output: str, jobs: Sequence[JobRef]
) -> dict[str, Observation]:
    """Every job's observation from `status_script`'s output."""
    queue_text, _, marker_text = output.partition(f"{MARKERS_BEGIN}\n")
    queue = scheduler.parse_queue(queue_text, jobs)
    markers: dict[str, tuple[int | None, int]] = {}
    for line in marker_text.splitlines():
        key, code, size = (*line.split(" ", 2), "", "")[:3]
        markers[key] = (int(code) if code.lstrip("-").isdigit() else None,
                        int(size) if size.strip().isdigit() else 0)
    return {
        job.key: observe(queue.get(job.key, QueueState.ABSENT), *markers.get(job.key, (None, 0)))
        for job in jobs
    }


def observe(queue: QueueState, exit_code: int | None, log_size: int = 0) -> Observation:
    """Combine the queue's word and the markers into one observation."""
    if exit_code is not None:
        return Observation(RemoteState.DONE, exit_code, log_size)
    if queue is QueueState.WAITING:
        return Observation(RemoteState.WAITING, log_size=log_size)
    if queue is QueueState.RUNNING:
        return Observation(RemoteState.RUNNING, log_size=log_size)
    return Observation(RemoteState.VANISHED, log_size=log_size)
