"""Retrying a run that its time limit or memory ended: the policy, the decision, the message."""

from __future__ import annotations

import re
from typing import Any

import pytest

from cerise.model import compute, decisions, retries
from cerise.model.decisions import Memory
from cerise.model.observations import Observation, RemoteState
from cerise.model.retries import Attempt, EndedBy, NextRequest, RetryPolicy
from cerise.model.states import Phase
from cerise.operator.submission import this_attempt
from cerise.remote.schedulers import Request, torque

TIMED_OUT = Observation(RemoteState.DONE, 143, started=1000, ended=1061, signal="TERM",
                        signalled_at=1060, timed_out=True)
OUT_OF_MEMORY = Observation(RemoteState.DONE, 137, started=1000, ended=1010,
                            out_of_memory="Slurm reports OUT_OF_MEMORY")


def poll(seen: Observation, run: retries.Run | None, time_limit: int = 60,
         phase: Phase = Phase.RUNNING, now: float = 2000.0,
         memory: Memory | None = None) -> decisions.Decision:
    return decisions.after_poll(phase, seen, memory or Memory(), now=now, refresh=1.0,
                                time_limit=time_limit, run=run)


def run_of(status: dict[str, Any], **policy: Any) -> retries.Run:
    return retries.current_run(RetryPolicy(**policy), status)


def test_a_timed_out_run_is_submitted_again_with_its_time_limit_multiplied() -> None:
    decision = poll(TIMED_OUT, run_of({"remoteJobId": "7"}, attempts=2, time_factor=3))
    assert decision.move is not None and decision.move.target is Phase.STAGING_IN
    assert decision.move.fields == {
        "attempt": 2, "remoteJobId": "", "timeLimit": 180, "memory": 0,
        "attempts": [{"number": 1, "timeLimitSeconds": 60, "memoryMiB": 0,
                      "endedBy": "time limit", "remoteJobId": "7"}],
        "preemptions": 0, "preempted": False}  # the next attempt's run counts its own
    assert decision.move.message.endswith("; attempt 2 of 2 with a time limit of 3 min")
    assert "time limit of 1 min" in decision.move.message


def test_without_a_retry_policy_a_timed_out_run_ends_as_before() -> None:
    for run in (None, run_of({})):
        decision = poll(TIMED_OUT, run)
        assert decision.move is not None and decision.move.target is Phase.FINISHED
        assert "attempts" not in decision.move.fields or run is not None
        assert "not tried again" not in decision.move.message


def test_the_last_attempt_says_what_was_tried_up_to_the_ceiling() -> None:
    history = [{"number": 1, "timeLimitSeconds": 600, "memoryMiB": 0, "endedBy": "time limit",
                "remoteJobId": "1"},
               {"number": 2, "timeLimitSeconds": 1200, "memoryMiB": 0,
                "endedBy": "time limit", "remoteJobId": "2"}]
    run = run_of({"attempt": 3, "remoteJobId": "3", "attempts": history}, attempts=5,
                 max_time=2400)
    decision = poll(TIMED_OUT, run, time_limit=2400)
    assert decision.move is not None and decision.move.target is Phase.FINISHED
    assert ("ran out of time 3 times: 10 min, 20 min, 40 min (ceiling); not tried again: its "
            "time limit is at the ceiling of 40 min") in decision.move.message
    assert decision.move.fields["endReason"] == decision.move.message
    assert [a["remoteJobId"] for a in decision.move.fields["attempts"]] == ["1", "2", "3"]


def test_attempts_run_out() -> None:
    run = run_of({"attempt": 2, "attempts": [
        {"number": 1, "timeLimitSeconds": 60, "memoryMiB": 0, "endedBy": "time limit"}]},
        attempts=2)
    decision = poll(TIMED_OUT, run, time_limit=120)
    assert decision.move is not None and decision.move.target is Phase.FINISHED
    assert decision.move.message.endswith(
        "ran out of time 2 times: 1 min, 2 min; not tried again: no attempts are left")


def test_a_run_out_of_memory_is_submitted_again_with_more_memory_up_to_the_ceiling() -> None:
    run = run_of({"memory": 1000, "remoteJobId": "9"}, attempts=3, memory_factor=4,
                 max_memory=3000)
    decision = poll(OUT_OF_MEMORY, run)
    assert decision.move is not None and decision.move.target is Phase.STAGING_IN
    assert decision.move.fields["memory"] == 3000
    assert decision.move.fields["timeLimit"] == 60
    assert decision.move.fields["attempts"][0]["endedBy"] == "memory"
    assert decision.move.message == (
        "the job ran out of its memory of 1000 MiB: Slurm reports OUT_OF_MEMORY; attempt 2 of "
        "3 with 3000 MiB of memory")


def test_a_run_that_asked_for_no_memory_is_not_retried_for_memory() -> None:
    decision = poll(OUT_OF_MEMORY, run_of({}, attempts=3))
    assert decision.move is not None and decision.move.target is Phase.FINISHED
    assert "it asked for no memory (ramMin), so there is none to raise" in \
        decision.move.message


def test_an_exit_status_of_137_alone_is_no_memory_end() -> None:
    seen = Observation(RemoteState.DONE, 137, started=1000, ended=1010)
    decision = poll(seen, run_of({"memory": 1000}, attempts=3))
    assert decision.move == decisions.Move(Phase.FINISHED, "the runner exited with status 137",
                                           {"exitCode": 137})


def test_a_run_killed_outright_at_its_limit_is_retried_once_given_up_on() -> None:
    seen = Observation(RemoteState.VANISHED, started=1000)
    run = run_of({"remoteJobId": "5"}, attempts=2)
    first = poll(seen, run, now=1061.0)
    later = poll(seen, run, now=1061.0 + decisions.MIN_VANISH_GRACE + 1, memory=first.memory)
    assert later.move is not None and later.move.target is Phase.STAGING_IN
    assert later.move.fields["timeLimit"] == 120
    assert later.cancel_remote


def test_a_retry_without_a_time_limit_of_its_own_is_not_possible() -> None:
    seen = Observation(RemoteState.DONE, 143, timed_out=True)
    decision = poll(seen, run_of({}, attempts=2), time_limit=0)
    assert decision.move is not None and decision.move.target is Phase.FINISHED
    assert "asked for no time limit of its own" in decision.move.message


@pytest.mark.parametrize(("time_limit", "factor", "ceiling", "expected"), [
    (60, 2.0, None, 120), (60, 1.5, None, 90), (100, 1.01, None, 101), (1, 1.2, None, 2),
    (60, 3.0, 100, 100),
])
def test_time_grows_by_the_factor_to_the_ceiling(time_limit: int, factor: float,
                                                  ceiling: int | None, expected: int) -> None:
    policy = RetryPolicy(attempts=2, time_factor=factor, max_time=ceiling)
    ended = Attempt(1, time_limit, 0, EndedBy.TIME, "")
    assert retries.next_attempt(policy, ended) == NextRequest(expected, 0)


def test_a_job_asks_for_less_than_its_resource_allows_never_more() -> None:
    resource = RetryPolicy(attempts=3, time_factor=2, max_time=7200, max_memory=8000)
    job = retries.for_job(resource, {"attempts": 9, "timeFactor": 4, "maxTimeSeconds": 99999,
                                     "maxMemoryMiB": 4000}, max_time=3600)
    assert job == RetryPolicy(attempts=3, time_factor=4, memory_factor=2, max_time=3600,
                              max_memory=4000)
    assert retries.for_job(resource, {"attempts": 1}).attempts == 1
    assert retries.for_job(resource, None, memory_per_node=2000).max_memory == 2000


@pytest.mark.parametrize(("settings", "error"), [
    ({"attempts": 0}, "attempts must be from 1 to 10"),
    ({"timeFactor": 0.5}, "timeFactor and memoryFactor must be from 1 to 100"),
    ({"maxTimeSeconds": 0}, "must be at least 1"),
    ({"attempts": "many"}, "every field must be a number"),
    ({"tries": 3}, "unknown field 'tries'"),
])
def test_a_resource_with_a_bad_retry_section_is_refused_with_a_message(
        settings: dict[str, Any], error: str) -> None:
    with pytest.raises(compute.InvalidResource, match=error):
        compute.parse_spec({"jobs": {"protocol": "local"}, "retry": settings})


def test_a_resource_retry_section_is_read() -> None:
    spec = compute.parse_spec({"jobs": {"protocol": "local"}, "retry": {
        "attempts": 3, "timeFactor": 2.5, "memoryFactor": 1.5, "maxTimeSeconds": 86400,
        "maxMemoryMiB": 64000}})
    assert spec.retry == RetryPolicy(3, 2.5, 1.5, 86400, 64000)
    assert compute.parse_spec({"jobs": {"protocol": "local"}}).retry.attempts == 1


def test_mixed_ends_are_told_apart() -> None:
    attempts = [Attempt(1, 60, 1000, EndedBy.TIME, ""), Attempt(2, 120, 1000, EndedBy.MEMORY, "")]
    assert retries.tried(RetryPolicy(attempts=3), attempts) == (
        "ran out of time or memory 2 times: 1 min (time), 1000 MiB (memory)")


def test_each_attempt_has_a_name_of_its_own_even_where_names_are_cut_short() -> None:
    names = [retries.run_name("3f2a9c1d-0b7e-4c55-9d0e-1a2b3c4d5e6f", n) for n in (1, 2, 3)]
    assert names[0] == "cerise-3f2a9c1d-0b7e-4c55-9d0e-1a2b3c4d5e6f"
    assert len({torque.job_name(Request(name)) for name in names}) == 3


def test_a_retry_is_submitted_under_its_own_name_with_its_own_request() -> None:
    first = Request("cerise-u1", cores=4, time_limit=60, memory=100)
    body: dict[str, Any] = {"metadata": {"uid": "u1"}, "status": {}}
    assert this_attempt(body, first) == first
    body["status"] = {"attempt": 2, "timeLimit": 180, "memory": 100}
    assert this_attempt(body, first) == Request("cerise2-u1", cores=4, time_limit=180,
                                                memory=100)


@pytest.mark.parametrize(("settings", "message"), [
    ({"attempts": "3"}, "attempts is '3'"),
    ({"attempts": 2.5}, "attempts is 2.5"),
    ({"timeFactor": True}, "timeFactor is True"),
    ({"maxMemoryMiB": None}, "maxMemoryMiB is None"),
])
def test_values_are_numbers_as_the_crd_types_them(settings: dict[str, object],
                                                   message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        retries.parse_policy(settings, "retry")
