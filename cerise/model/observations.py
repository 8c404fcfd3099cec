"""What the operator learns of a job on its compute resource: its state there, how it
ended, and what its submission reported.

Made by the remote side (`cerise.remote.schedulers`, `cerise.remote.jobscript`) from a
scheduler's and the job script's words; read by the decisions (`cerise.model.decisions`).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class RemoteState(StrEnum):
    """A job's state on the compute resource, from the queue and the markers together."""

    WAITING = "waiting"
    RUNNING = "running"
    DONE = "done"
    VANISHED = "vanished"
    """Gone from the queue without an exit code or a signal: killed hard, or the marker is
    not yet visible (network file systems). The poller gives it a grace period before
    calling it done."""


@dataclass(frozen=True)
class Observation:
    """One job's state, how it ended once it has, and the size of its log.

    The times are epoch seconds on the compute resource; they satisfy
    `cerise.model.limits.RunEnd`, so `limits.time_limit_message` can judge the end.
    """

    state: RemoteState
    exit_code: int | None = None
    log_size: int = 0
    """Bytes in the runner's log, so that only a log that grew is read."""
    started: int | None = None
    """When the job script started."""
    ended: int | None = None
    """When the exit code was recorded."""
    signal: str | None = None
    """The first signal the job script got (`TERM`, `USR2`) or `LIMIT` (its own limit)."""
    signalled_at: int | None = None
    timed_out: bool = False
    """The scheduler says the time limit ended the job (see `QueueEntry.timed_out`)."""
    out_of_memory: str | None = None
    """The scheduler's words when it says the job ran out of memory (`QueueEntry`)."""
    never_runs: str | None = None
    """The scheduler's words when it holds a waiting job that can never start."""
    restarts: int = 0
    """How many times the scheduler has requeued the job to run it again (a preemption):
    while it is waiting or running, the run it requeued is not the job's end."""


class SubmitOutcome(StrEnum):
    """What a submit (or lookup) script reported."""

    SUBMITTED = "submitted"
    UNKNOWN = "unknown"
    """An earlier submit holds the lock but recorded no id: it may or may not have happened."""
    REFUSED = "refused"
    """The scheduler will never take the job as asked; the detail has its words."""
    FAILED = "failed"
    """A passing failure (the scheduler is down): submitting again later may work."""
    NOT_SUBMITTED = "not submitted"
    LOOK_UP = "look up"
    """An earlier submit failed in a way that may have created the job all the same (a
    time-out): look for it by its name on the scheduler before submitting again."""
