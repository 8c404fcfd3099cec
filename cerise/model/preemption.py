"""A run the scheduler requeued to run it again (a preemption): what the job's status says.

The job keeps its phase (`Waiting` or `Running`): it keeps its place on the compute
resource, and its end is the rerun's (`cerise.remote.schedulers.observe`). Its status
counts the requeues of the current attempt's run (`preemptions`, from the scheduler's
restart count), says when one was first seen (`preemptedAt`) and whether the job waits
to run again after one (`preempted`; WES shows `PREEMPTED` meanwhile).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from cerise.model.observations import Observation, RemoteState

REASON = "Preempted"
"""The reason of the Event that says a run was requeued."""
RUNNING_AGAIN = "running again after a preemption"
"""The job's message once its rerun runs."""


@dataclass(frozen=True)
class Preemption:
    """Status fields to write, and the message of a newly seen preemption (else None)."""

    fields: Mapping[str, Any] = field(default_factory=dict)
    message: str | None = None


def after_poll(status: Mapping[str, Any], seen: Observation, *, now: str) -> Preemption | None:
    """What the job's `status` must say after a poll saw its run as `seen` (`now` as the
    status writes times); None when it says it already."""
    recorded = status.get("preemptions")
    recorded = recorded if isinstance(recorded, int) else 0
    waiting = seen.restarts > 0 and seen.state is RemoteState.WAITING
    if seen.restarts > recorded:
        times = "" if seen.restarts == 1 else f" (time {seen.restarts})"
        return Preemption(
            {"preemptions": seen.restarts, "preemptedAt": now, "preempted": waiting},
            f"preempted: the scheduler requeued the run{times}; it will run again")
    if bool(status.get("preempted")) != waiting:
        rerun = seen.state is RemoteState.RUNNING and not waiting
        return Preemption({"preempted": waiting, **({"message": RUNNING_AGAIN} if rerun else {})})
    return None
