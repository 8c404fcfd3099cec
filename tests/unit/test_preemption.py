"""A run the scheduler requeued (a preemption): what the job's status and WES say."""

from __future__ import annotations

from typing import Any

import pytest

from cerise.apiserver.routers import wes
from cerise.model import preemption, states
from cerise.model.observations import Observation, RemoteState
from cerise.model.preemption import Preemption
from cerise.model.states import Phase, WesState

NOW = "2026-12-06T20:00:00Z"
REQUEUED = "preempted: the scheduler requeued the run; it will run again"


@pytest.mark.parametrize(("status", "seen", "expected"), [
    ({}, Observation(RemoteState.RUNNING), None),
    ({}, Observation(RemoteState.DONE, 0), None),
    ({}, Observation(RemoteState.WAITING, restarts=1),
     Preemption({"preemptions": 1, "preemptedAt": NOW, "preempted": True}, REQUEUED)),
    # Requeued and already dispatched again between two polls: counted, not waiting.
    ({}, Observation(RemoteState.RUNNING, restarts=1),
     Preemption({"preemptions": 1, "preemptedAt": NOW, "preempted": False}, REQUEUED)),
    ({"preemptions": 1, "preempted": True}, Observation(RemoteState.WAITING, restarts=1), None),
    ({"preemptions": 1, "preempted": True}, Observation(RemoteState.RUNNING, restarts=1),
     Preemption({"preempted": False, "message": "running again after a preemption"})),
    ({"preemptions": 1, "preempted": True}, Observation(RemoteState.DONE, 0, restarts=1),
     Preemption({"preempted": False})),
    ({"preemptions": 1, "preempted": False}, Observation(RemoteState.DONE, 0, restarts=1),
     None),
    ({"preemptions": 1}, Observation(RemoteState.WAITING, restarts=2),
     Preemption({"preemptions": 2, "preemptedAt": NOW, "preempted": True},
                "preempted: the scheduler requeued the run (time 2); it will run again")),
    ({"preemptions": "x"}, Observation(RemoteState.WAITING, restarts=1),
     Preemption({"preemptions": 1, "preemptedAt": NOW, "preempted": True}, REQUEUED)),
])
def test_what_the_status_says_after_a_poll(status: dict[str, Any], seen: Observation,
                                           expected: Preemption | None) -> None:
    assert preemption.after_poll(status, seen, now=NOW) == expected


@pytest.mark.parametrize(("phase", "preempted", "expected"), [
    (Phase.WAITING, True, WesState.PREEMPTED),
    (Phase.RUNNING, True, WesState.PREEMPTED),
    (Phase.WAITING, False, WesState.QUEUED),
    (Phase.RUNNING, False, WesState.RUNNING),
    (Phase.RUNNING_CR, True, WesState.CANCELING),
    (Phase.SUCCESS, True, WesState.COMPLETE),
])
def test_wes_shows_preempted_while_the_job_waits_after_a_preemption(
        phase: Phase, preempted: bool, expected: WesState) -> None:
    assert states.wes_state(phase, preempted=preempted) is expected


@pytest.mark.parametrize(("status", "expected"), [
    ({"phase": "Running", "preempted": True, "preemptions": 1}, WesState.PREEMPTED),
    ({"phase": "Running", "preempted": False, "preemptions": 1}, WesState.RUNNING),
    ({"phase": "Waiting"}, WesState.QUEUED),
])
def test_the_wes_router_reads_the_preemption_from_the_status(
        status: dict[str, Any], expected: WesState) -> None:
    body = {"metadata": {"name": "job", "namespace": "ns"}, "status": status}
    assert wes._state(body) is expected
