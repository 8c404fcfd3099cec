"""Pilot mode's decisions: runs that fit, allocations to request, runs lost with theirs."""

from __future__ import annotations

import pytest

from cerise.model import pilot
from cerise.model.pilot import Allocation, AllocationState, PilotSpec, Requeue
from cerise.model.states import Phase

SPEC = PilotSpec(cores=8, time_limit=600, max_allocations=2, margin=10)
QUEUED, RUNNING, ENDED = AllocationState.QUEUED, AllocationState.RUNNING, AllocationState.ENDED


def test_a_run_that_fits_an_allocation_is_taken() -> None:
    assert pilot.refusal(SPEC, cores=8, time_limit=590) is None
    assert pilot.refusal(SPEC, cores=0, time_limit=0) is None


def test_a_run_longer_than_any_allocation_is_refused_saying_both_times() -> None:
    message = pilot.refusal(SPEC, cores=1, time_limit=591)
    assert message is not None
    assert "591 s" in message and "590 s" in message and "timeLimitSeconds" in message


def test_a_run_wider_than_an_allocation_is_refused() -> None:
    message = pilot.refusal(SPEC, cores=9, time_limit=1)
    assert message is not None and "9 cores" in message and "(8, jobs.pilot.cores)" in message


@pytest.mark.parametrize(("states", "waiting", "wanted"), [
    ((), 0, 0),                    # nothing waits
    ((), 5, 1),                    # runs wait: one allocation
    ((QUEUED,), 5, 0),             # one is queued already: it will take them
    ((RUNNING,), 5, 1),            # the running one is full or short of time: another
    ((RUNNING, RUNNING), 5, 0),    # at the most
    ((RUNNING, QUEUED), 5, 0),
    ((RUNNING, ENDED, ENDED), 5, 1),  # ended ones do not count
    ((RUNNING,), 0, 0),
])
def test_allocations_follow_the_waiting_runs(
        states: tuple[AllocationState, ...], waiting: int, wanted: int) -> None:
    allocations = [Allocation(f"a{n}", state) for n, state in enumerate(states)]
    assert pilot.allocations_wanted(SPEC, allocations, waiting) == wanted


def test_a_run_lost_with_its_allocation_runs_again() -> None:
    assert pilot.after_lost(SPEC, attempt=1, died_in=(), allocation="a1") is Requeue.REQUEUE
    assert pilot.after_lost(SPEC, attempt=2, died_in=("a1",), allocation="a2") is \
        Requeue.REQUEUE


def test_a_run_lost_too_often_is_a_system_error_naming_its_allocations() -> None:
    move = pilot.after_lost(SPEC, attempt=3, died_in=("a1", "a2"), allocation="a3")
    assert not isinstance(move, Requeue)
    assert move.target is Phase.SYSTEM_ERROR
    assert "3 times" in move.message and "a1, a2, a3" in move.message
