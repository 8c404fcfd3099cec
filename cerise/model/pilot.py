"""Pilot mode's decisions: which runs an allocation can ever take, when to ask for another
allocation, and what becomes of a run whose allocation ended under it.

In pilot mode (`jobs.pilot` of a ComputeResource) a run is handed to a queue on the
resource's file system instead of the batch scheduler, and a few *allocations* — batch
jobs of a configured size, each running an agent — take the runs from that queue
(`cerise.remote.pilot`). The worker gathers what the one status command saw and asks
these functions; nothing here does I/O.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

from cerise.model.decisions import Move
from cerise.model.states import Phase


@dataclass(frozen=True)
class PilotSpec:
    """A ComputeResource's pilot mode settings."""

    cores: int
    """Cores of each allocation, shared by its runs."""
    time_limit: int = 3600
    """Seconds each allocation asks for."""
    max_allocations: int = 1
    """Most allocations queued or running at once."""
    idle: int = 300
    """Seconds without a run after which an allocation ends itself."""
    max_attempts: int = 3
    """Most times a run is started; one more loss of its allocation is a SystemError."""
    margin: int = 10
    """Seconds an allocation keeps free before its end when it decides whether a run fits."""


class AllocationState(StrEnum):
    """An allocation as the batch scheduler has it."""

    QUEUED = "Queued"
    RUNNING = "Running"
    ENDED = "Ended"


@dataclass(frozen=True)
class Allocation:
    """What the worker knows of one allocation."""

    name: str
    state: AllocationState


def refusal(spec: PilotSpec, cores: int, time_limit: int) -> str | None:
    """Why no allocation of this resource can ever run a run asking for `cores` and
    `time_limit` seconds; None if one can."""
    if cores > spec.cores:
        return (f"the workflow asks for {cores} cores, more than an allocation of this "
                f"resource has ({spec.cores}, jobs.pilot.cores)")
    room = spec.time_limit - spec.margin
    if time_limit > room:
        return (f"the workflow asks for {time_limit} s, more than an allocation of this "
                f"resource can give a run ({room} s of jobs.pilot.timeLimitSeconds "
                f"{spec.time_limit} s)")
    return None


def allocations_wanted(spec: PilotSpec, allocations: Sequence[Allocation],
                       waiting_runs: int) -> int:
    """How many allocations to request now: one while runs wait, none is queued already
    (it will take them when it starts) and fewer than the most are queued or running."""
    active = [a for a in allocations if a.state is not AllocationState.ENDED]
    if waiting_runs == 0 or len(active) >= spec.max_allocations:
        return 0
    if any(a.state is AllocationState.QUEUED for a in active):
        return 0
    return 1


class Requeue(StrEnum):
    """The run goes back to the queue (the answer of `after_lost` when it may run again)."""

    REQUEUE = "requeue"


def after_lost(spec: PilotSpec, attempt: int, died_in: Sequence[str],
               allocation: str) -> Move | Requeue:
    """A run whose allocation ended before the run did: back to the queue, or — after its
    `max_attempts`-th start — a SystemError naming the allocations it died in."""
    if attempt < spec.max_attempts:
        return Requeue.REQUEUE
    names = ", ".join(dict.fromkeys((*died_in, allocation)))
    return Move(Phase.SYSTEM_ERROR,
                f"the run was started {attempt} times and each time the allocation running "
                f"it ended first (allocations {names}); it is not started again")
