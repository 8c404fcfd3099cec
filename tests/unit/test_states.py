"""The job state machine: every legal transition accepted, every other refused, mappings total."""

from __future__ import annotations

import itertools

import pytest

from cerise.model import states
from cerise.model.states import Phase, RestState, WesState

CANCELS = {
    (Phase.SUBMITTED, Phase.CANCELLED),
    (Phase.STAGING_IN, Phase.STAGING_IN_CR),
    (Phase.WAITING, Phase.WAITING_CR),
    (Phase.RUNNING, Phase.RUNNING_CR),
    (Phase.FINISHED, Phase.CANCELLED),
    (Phase.STAGING_OUT, Phase.STAGING_OUT_CR),
}

PROGRESS = {
    (Phase.SUBMITTED, Phase.STAGING_IN),
    (Phase.SUBMITTED, Phase.PERMANENT_FAILURE),
    (Phase.SUBMITTED, Phase.SYSTEM_ERROR),
    (Phase.STAGING_IN, Phase.WAITING),
    (Phase.STAGING_IN, Phase.PERMANENT_FAILURE),
    (Phase.STAGING_IN, Phase.SYSTEM_ERROR),
    (Phase.STAGING_IN_CR, Phase.WAITING_CR),
    (Phase.STAGING_IN_CR, Phase.CANCELLED),
    (Phase.STAGING_IN_CR, Phase.SYSTEM_ERROR),
    (Phase.WAITING, Phase.RUNNING),
    (Phase.WAITING, Phase.FINISHED),
    (Phase.WAITING, Phase.PERMANENT_FAILURE),
    (Phase.WAITING, Phase.SYSTEM_ERROR),
    (Phase.WAITING_CR, Phase.RUNNING_CR),
    (Phase.WAITING_CR, Phase.CANCELLED),
    (Phase.WAITING_CR, Phase.SYSTEM_ERROR),
    (Phase.RUNNING, Phase.FINISHED),
    (Phase.RUNNING, Phase.SYSTEM_ERROR),
    (Phase.RUNNING_CR, Phase.CANCELLED),
    (Phase.RUNNING_CR, Phase.SYSTEM_ERROR),
    (Phase.WAITING, Phase.STAGING_IN),  # submitted again with more time or memory
    (Phase.RUNNING, Phase.STAGING_IN),
    (Phase.FINISHED, Phase.STAGING_OUT),
    (Phase.FINISHED, Phase.SYSTEM_ERROR),
    (Phase.STAGING_OUT, Phase.SUCCESS),
    (Phase.STAGING_OUT, Phase.PERMANENT_FAILURE),
    (Phase.STAGING_OUT, Phase.TEMPORARY_FAILURE),
    (Phase.STAGING_OUT, Phase.SYSTEM_ERROR),
    (Phase.STAGING_OUT_CR, Phase.CANCELLED),
    (Phase.STAGING_OUT_CR, Phase.SYSTEM_ERROR),
}

LEGAL = CANCELS | PROGRESS
ALL_PAIRS = list(itertools.product(Phase, Phase))


def test_there_are_fifteen_phases() -> None:
    assert len(Phase) == 15


@pytest.mark.parametrize(("source", "target"), sorted(LEGAL))
def test_legal_transition_is_accepted(source: Phase, target: Phase) -> None:
    assert states.is_legal(source, target)
    states.check_transition(source, target)


@pytest.mark.parametrize(("source", "target"), [p for p in ALL_PAIRS if p not in LEGAL])
def test_illegal_transition_is_refused(source: Phase, target: Phase) -> None:
    assert not states.is_legal(source, target)
    with pytest.raises(states.IllegalTransition, match=f"from {source} to {target}"):
        states.check_transition(source, target)


@pytest.mark.parametrize("phase", sorted(states.FINAL))
def test_final_phases_are_never_left(phase: Phase) -> None:
    assert not any(states.is_legal(phase, target) for target in Phase)
    assert states.cancel_target(phase) is None


@pytest.mark.parametrize("phase", sorted(states.CANCELLING))
def test_cancel_of_a_cancelling_job_changes_nothing(phase: Phase) -> None:
    assert states.cancel_target(phase) is None


def test_every_non_final_phase_can_reach_a_final_phase() -> None:
    reachable = set(states.FINAL)
    changed = True
    while changed:
        changed = False
        for source, target in LEGAL:
            if target in reachable and source not in reachable:
                reachable.add(source)
                changed = True
    assert reachable == set(Phase)


def test_every_cancellation_ends_in_cancelled_without_running_on() -> None:
    """From a CR phase no path leads back to a phase without a pending cancel, or to Success."""
    for phase in states.CANCELLING:
        targets = states.PROGRESS[phase]
        assert targets <= states.CANCELLING | {Phase.CANCELLED, Phase.SYSTEM_ERROR}


@pytest.mark.parametrize(
    ("phase", "expected"),
    [
        (Phase.SUBMITTED, RestState.WAITING),
        (Phase.STAGING_IN, RestState.WAITING),
        (Phase.STAGING_IN_CR, RestState.WAITING),
        (Phase.WAITING, RestState.RUNNING),
        (Phase.WAITING_CR, RestState.RUNNING),
        (Phase.RUNNING, RestState.RUNNING),
        (Phase.RUNNING_CR, RestState.RUNNING),
        (Phase.FINISHED, RestState.RUNNING),
        (Phase.STAGING_OUT, RestState.RUNNING),
        (Phase.STAGING_OUT_CR, RestState.RUNNING),
        (Phase.SUCCESS, RestState.SUCCESS),
        (Phase.CANCELLED, RestState.CANCELLED),
        (Phase.PERMANENT_FAILURE, RestState.PERMANENT_FAILURE),
        (Phase.TEMPORARY_FAILURE, RestState.TEMPORARY_FAILURE),
        (Phase.SYSTEM_ERROR, RestState.SYSTEM_ERROR),
    ],
)
def test_rest_mapping(phase: Phase, expected: RestState) -> None:
    assert states.rest_state(phase) is expected


@pytest.mark.parametrize(
    ("phase", "expected"),
    [
        (Phase.SUBMITTED, WesState.QUEUED),
        (Phase.STAGING_IN, WesState.INITIALIZING),
        (Phase.STAGING_IN_CR, WesState.CANCELING),
        (Phase.WAITING, WesState.QUEUED),
        (Phase.WAITING_CR, WesState.CANCELING),
        (Phase.RUNNING, WesState.RUNNING),
        (Phase.RUNNING_CR, WesState.CANCELING),
        (Phase.FINISHED, WesState.RUNNING),
        (Phase.STAGING_OUT, WesState.RUNNING),
        (Phase.STAGING_OUT_CR, WesState.CANCELING),
        (Phase.SUCCESS, WesState.COMPLETE),
        (Phase.CANCELLED, WesState.CANCELED),
        (Phase.PERMANENT_FAILURE, WesState.EXECUTOR_ERROR),
        (Phase.TEMPORARY_FAILURE, WesState.EXECUTOR_ERROR),
        (Phase.SYSTEM_ERROR, WesState.SYSTEM_ERROR),
    ],
)
def test_wes_mapping(phase: Phase, expected: WesState) -> None:
    assert states.wes_state(phase) is expected


def test_rest_final_states_are_exactly_the_final_phases() -> None:
    finals = {RestState.SUCCESS, RestState.CANCELLED, RestState.SYSTEM_ERROR}
    finals |= {RestState.TEMPORARY_FAILURE, RestState.PERMANENT_FAILURE}
    assert {p for p in Phase if states.rest_state(p) in finals} == states.FINAL
