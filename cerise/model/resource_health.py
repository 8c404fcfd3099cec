"""A compute resource's own status: whether it is Ready, when to say so, and its Event.

Only the resource's own observations decide its health — the worker's probe at start and
the one status command of each refresh — never one job's work: a job whose staging fails
for a passing reason says so in its own status and tries again, so one job cannot make
the resource flap between Ready and not.
"""

from __future__ import annotations

from dataclasses import dataclass

STATUS_INTERVAL = 30.0
"""Most often an unchanged status is written again (`lastPoll`; etcd is not a heartbeat
store)."""
MESSAGE_LIMIT = 4096
EVENT_LIMIT = 1024


@dataclass(frozen=True)
class Health:
    """What the resource's last observation found."""

    connected: bool
    error: str = ""
    reason: str = ""
    """CamelCase, why it is not Ready (`Unreachable`, `SchedulerUnavailable`…)."""

    @property
    def ready(self) -> bool:
        return self.connected and not self.error


@dataclass(frozen=True)
class Notice:
    """A Kubernetes Event about the resource."""

    type: str
    reason: str
    message: str


def judge(*, connected: bool, error: str = "", reason: str = "Unreachable",
          allocation_problem: str | None = None) -> Health:
    """The resource's health from an observation; pilot mode's refused allocations make a
    resource that answers not Ready all the same."""
    if connected and not error:
        if allocation_problem:
            return Health(True, allocation_problem, "AllocationRefused")
        return Health(True)
    return Health(connected, error, reason)


def write_due(previous: Health | None, health: Health, *, extra_changed: bool,
              since_written: float) -> bool:
    """Whether to write the status now: it changed, or it has not been written for
    `STATUS_INTERVAL` seconds."""
    return previous != health or extra_changed or since_written >= STATUS_INTERVAL


def ready_condition(health: Health, since: str) -> dict[str, str]:
    """The Ready condition; `since` is when its status last flipped."""
    return {"type": "Ready", "status": "True" if health.ready else "False",
            "reason": "Connected" if health.ready else health.reason,
            "message": ("the compute resource answers" if health.ready
                        else health.error[:MESSAGE_LIMIT]),
            "lastTransitionTime": since}


def flipped(previous: Health | None, health: Health) -> bool:
    """Whether the Ready condition's status changes (the first report counts)."""
    return previous is None or previous.ready != health.ready


def notice(previous: Health | None, health: Health) -> Notice | None:
    """The Event for a change of health: none for a first report that all is well."""
    if previous == health or (previous is None and health.ready):
        return None
    if health.ready:
        return Notice("Normal", "Ready", "the compute resource answers again")
    return Notice("Warning", health.reason, health.error[:EVENT_LIMIT])
