"""The worker's decisions, over every phase: what happens next for a job."""

from __future__ import annotations

import pytest

from cerise.model import decisions, states
from cerise.model.decisions import CANCEL_RESEND, MIN_VANISH_GRACE, Memory, Move, Work
from cerise.model.observations import Observation, RemoteState, SubmitOutcome
from cerise.model.states import Phase

WORK = {
    Phase.SUBMITTED: Work.STAGE_IN, Phase.STAGING_IN: Work.STAGE_IN,
    Phase.STAGING_IN_CR: Work.STAGE_IN, Phase.WAITING: Work.POLL, Phase.WAITING_CR: Work.POLL,
    Phase.RUNNING: Work.POLL, Phase.RUNNING_CR: Work.POLL, Phase.FINISHED: Work.STAGE_OUT,
    Phase.STAGING_OUT: Work.STAGE_OUT, Phase.STAGING_OUT_CR: Work.STAGE_OUT,
}


@pytest.mark.parametrize("phase", list(Phase))
def test_every_phase_has_its_work(phase: Phase) -> None:
    decision = decisions.next_work(phase, cancel=False, deleting=False)
    assert decision.move is None
    assert decision.work is WORK.get(phase, Work.NONE)


@pytest.mark.parametrize("phase", list(Phase))
def test_a_cancel_request_moves_a_job_to_its_cancel_phase_first(phase: Phase) -> None:
    decision = decisions.next_work(phase, cancel=True, deleting=False)
    target = states.cancel_target(phase)
    if target is None:  # final, or already cancelling: the work goes on
        assert decision.move is None
        assert decision.work is WORK.get(phase, Work.NONE)
    else:
        assert decision.move == Move(target, "cancellation requested")
        assert decision.work is Work.NONE


@pytest.mark.parametrize("phase", [None, *Phase])
def test_a_job_being_deleted_or_without_a_phase_gets_no_work(phase: Phase | None) -> None:
    assert decisions.next_work(phase, cancel=True, deleting=phase is not None) == \
        decisions.Decision()


def poll(phase: Phase, sighting: Observation, memory: Memory | None = None,
         now: float = 100.0, refresh: float = 1.0, time_limit: int = 0) -> decisions.Decision:
    return decisions.after_poll(phase, sighting, memory or Memory(), now=now, refresh=refresh,
                                time_limit=time_limit)


def test_a_waiting_job_that_starts_running_moves_and_its_log_is_followed() -> None:
    decision = poll(Phase.WAITING, Observation(RemoteState.RUNNING))
    assert decision.move == Move(Phase.RUNNING, "running")
    assert decision.follow_log


@pytest.mark.parametrize("phase", [Phase.WAITING, Phase.RUNNING])
def test_a_done_job_is_finished_with_its_exit_code(phase: Phase) -> None:
    decision = poll(phase, Observation(RemoteState.DONE, exit_code=1))
    assert decision.move == Move(Phase.FINISHED, "the runner exited with status 1",
                                 {"exitCode": 1})


def test_a_time_limit_end_is_carried_to_the_finished_job() -> None:
    seen = Observation(RemoteState.DONE, 143, started=1000, ended=1061, signal="TERM",
                       signalled_at=1060)
    decision = poll(Phase.RUNNING, seen, time_limit=60)
    assert decision.move is not None
    reason = decision.move.message
    assert "time limit of 1 min" in reason
    assert decision.move == Move(Phase.FINISHED, reason, {"exitCode": 143, "endReason": reason})
    assert decisions.finish_message(Phase.PERMANENT_FAILURE, "terminated", end_reason=reason,
                                    failed_step=None) == (Phase.PERMANENT_FAILURE, reason)


def test_a_cancel_long_before_the_limit_is_no_time_limit_end() -> None:
    seen = Observation(RemoteState.DONE, 143, started=1000, ended=1006, signal="TERM",
                       signalled_at=1005)
    decision = poll(Phase.RUNNING, seen, time_limit=600)
    assert decision.move is not None and "endReason" not in decision.move.fields


def test_a_job_killed_outright_at_its_limit_says_so_when_given_up_on() -> None:
    seen = Observation(RemoteState.VANISHED, started=1000)
    first = poll(Phase.RUNNING, seen, now=1061.0, time_limit=60)
    after = poll(Phase.RUNNING, seen, first.memory, now=1061.0 + MIN_VANISH_GRACE + 1,
                 time_limit=60)
    assert after.move is not None and after.move.target is Phase.FINISHED
    assert "time limit" in after.move.message
    assert after.move.fields["endReason"] == after.move.message


def test_a_running_job_stays_and_its_log_is_followed() -> None:
    decision = poll(Phase.RUNNING, Observation(RemoteState.RUNNING))
    assert decision.move is None and decision.follow_log and not decision.cancel_remote


def test_a_queued_job_stays_quietly() -> None:
    decision = poll(Phase.WAITING, Observation(RemoteState.WAITING))
    assert decision == decisions.Decision()


def test_a_job_the_scheduler_can_never_run_fails_and_leaves_the_queue() -> None:
    decision = poll(Phase.WAITING,
                    Observation(RemoteState.WAITING, never_runs="PartitionTimeLimit"))
    assert decision.move is not None
    assert decision.move.target is Phase.PERMANENT_FAILURE
    assert "PartitionTimeLimit" in decision.move.message
    assert decision.cancel_remote


def test_a_vanished_job_gets_a_grace_period_then_ends_without_an_exit_code() -> None:
    first = poll(Phase.RUNNING, Observation(RemoteState.VANISHED), now=100.0)
    assert first.move is None and first.memory.vanished_since == 100.0
    within = poll(Phase.RUNNING, Observation(RemoteState.VANISHED), first.memory,
                  now=100.0 + MIN_VANISH_GRACE)
    assert within.move is None
    after = poll(Phase.RUNNING, Observation(RemoteState.VANISHED), first.memory,
                 now=101.0 + MIN_VANISH_GRACE)
    assert after.move == Move(Phase.FINISHED, "the job left the scheduler without an exit code",
                              {"exitCode": None})
    assert after.cancel_remote


def test_the_grace_period_grows_with_a_slow_refresh() -> None:
    first = poll(Phase.RUNNING, Observation(RemoteState.VANISHED), now=0.0, refresh=30.0)
    assert poll(Phase.RUNNING, Observation(RemoteState.VANISHED), first.memory, now=89.0,
                refresh=30.0).move is None


def test_a_job_seen_again_forgets_that_it_vanished() -> None:
    memory = Memory(vanished_since=1.0)
    decision = poll(Phase.RUNNING, Observation(RemoteState.RUNNING), memory)
    assert decision.memory.vanished_since is None


@pytest.mark.parametrize("phase", [Phase.WAITING_CR, Phase.RUNNING_CR])
@pytest.mark.parametrize("seen", [RemoteState.DONE, RemoteState.VANISHED])
def test_a_cancelled_job_gone_from_the_resource_is_cancelled(
        phase: Phase, seen: RemoteState) -> None:
    decision = poll(phase, Observation(seen, exit_code=143 if seen is RemoteState.DONE else None))
    assert decision.move == Move(Phase.CANCELLED, "stopped on the compute resource")
    assert not decision.cancel_remote


def test_a_cancelled_job_is_asked_to_stop_again_now_and_then() -> None:
    first = poll(Phase.WAITING_CR, Observation(RemoteState.WAITING), now=100.0)
    assert first.cancel_remote and first.memory.cancel_sent == 100.0
    soon = poll(Phase.WAITING_CR, Observation(RemoteState.WAITING), first.memory, now=101.0)
    assert not soon.cancel_remote
    later = poll(Phase.WAITING_CR, Observation(RemoteState.WAITING), first.memory,
                 now=100.0 + CANCEL_RESEND)
    assert later.cancel_remote


def test_a_cancelled_job_that_started_running_is_recorded_so() -> None:
    decision = poll(Phase.WAITING_CR, Observation(RemoteState.RUNNING), Memory(cancel_sent=99.0))
    assert decision.move == Move(Phase.RUNNING_CR, "running; cancelling")
    assert not decision.cancel_remote


@pytest.mark.parametrize("phase", sorted(states.REMOTE))
@pytest.mark.parametrize("seen", list(RemoteState))
def test_every_move_after_a_poll_is_legal(phase: Phase, seen: RemoteState) -> None:
    for sighting in (Observation(seen, 0), Observation(seen, never_runs="never")):
        decision = poll(phase, sighting, Memory(vanished_since=0.0), now=1000.0)
        if decision.move is not None:
            assert states.is_legal(phase, decision.move.target)


def test_a_submitted_job_waits_with_its_id() -> None:
    move = decisions.after_submit(SubmitOutcome.SUBMITTED, "", "42", "/jobs/a", "T", 60, 512)
    assert move == Move(Phase.WAITING, "submitted as 42",
                        {"remoteJobId": "42", "workDir": "/jobs/a", "submittedAt": "T",
                         "timeLimit": 60, "memory": 512})


def test_a_refused_submit_is_a_permanent_failure_in_the_schedulers_words() -> None:
    move = decisions.after_submit(SubmitOutcome.REFUSED, "Requested node configuration is not "
                                  "available", "", "/jobs/a", "T")
    assert move is not None and move.target is Phase.PERMANENT_FAILURE
    assert "Requested node configuration is not available" in move.message


def test_a_passing_submit_failure_is_tried_again() -> None:
    assert decisions.after_submit(SubmitOutcome.FAILED, "Unable to contact slurm controller", "",
                                  "/jobs/a", "T") is None


def test_an_unknown_submit_outcome_is_a_system_error() -> None:
    move = decisions.after_submit(SubmitOutcome.UNKNOWN, "lock held", "", "/jobs/a", "T")
    assert move is not None and move.target is Phase.SYSTEM_ERROR


@pytest.mark.parametrize(("outcome", "target"), [
    (SubmitOutcome.SUBMITTED, Phase.WAITING_CR), (SubmitOutcome.NOT_SUBMITTED, Phase.CANCELLED),
    (SubmitOutcome.UNKNOWN, Phase.SYSTEM_ERROR), (SubmitOutcome.REFUSED, Phase.CANCELLED),
    (SubmitOutcome.FAILED, None),
])
def test_a_cancel_during_staging_is_settled_by_what_the_submit_did(
        outcome: SubmitOutcome, target: Phase | None) -> None:
    move = decisions.after_cancelled_staging(outcome, "detail", "7", "/jobs/a")
    assert (move.target if move else None) is target
    if move is not None:
        assert states.is_legal(Phase.STAGING_IN_CR, move.target)


def test_a_submit_that_lost_to_a_cancel_goes_on_the_cancel_path() -> None:
    intended = Move(Phase.WAITING, "submitted as 7", {"remoteJobId": "7"})
    follow = decisions.after_lost_race(intended, Phase.STAGING_IN, Phase.STAGING_IN_CR)
    assert follow == Move(Phase.WAITING_CR, "submitted as 7", {"remoteJobId": "7"})


def test_outputs_collected_while_a_cancel_won_are_kept() -> None:
    intended = Move(Phase.SUCCESS, "done", {"output": {"a": 1}})
    follow = decisions.after_lost_race(intended, Phase.STAGING_OUT, Phase.STAGING_OUT_CR)
    assert follow == Move(Phase.CANCELLED, "cancelled; partial outputs kept",
                          {"output": {"a": 1}})


@pytest.mark.parametrize("latest", [None, Phase.SYSTEM_ERROR, Phase.WAITING, Phase.CANCELLED])
def test_a_race_lost_to_anything_but_a_cancel_is_left_to_the_next_tick(
        latest: Phase | None) -> None:
    intended = Move(Phase.WAITING, "submitted as 7")
    assert decisions.after_lost_race(intended, Phase.STAGING_IN, latest) is None


def test_a_failed_step_names_itself_in_the_final_message() -> None:
    assert decisions.finish_message(Phase.PERMANENT_FAILURE, "the workflow failed", end_reason=None,
                                    failed_step="step wc failed") == (
        Phase.PERMANENT_FAILURE, "the workflow failed: step wc failed")
    assert decisions.finish_message(Phase.SUCCESS, "ok", end_reason=None,
                                    failed_step=None) == (Phase.SUCCESS, "ok")


# --- after an error in a job's work ------------------------------------------------------

Failure, Retry = decisions.Failure, decisions.Retry


@pytest.mark.parametrize("failures", [1, 2, 10, 100])
def test_a_passing_failure_is_retried_after_a_growing_delay_never_ended(failures: int) -> None:
    answer = decisions.after_error(Failure.PASSING, "reading the installed steps: lost",
                                   failures, Phase.SUBMITTED, refresh=1.0)
    assert isinstance(answer, Retry)
    assert "reading the installed steps: lost" in answer.message
    assert 1.0 <= answer.delay <= decisions.MAX_RETRY_DELAY
    longer = decisions.after_error(Failure.PASSING, "x", failures + 1, Phase.SUBMITTED,
                                   refresh=1.0)
    assert isinstance(longer, Retry) and longer.delay >= answer.delay


def test_an_io_error_is_tried_a_few_times_then_is_a_system_error() -> None:
    for failures in range(1, decisions.ATTEMPTS):
        assert isinstance(decisions.after_error(Failure.IO, "disk full", failures,
                                                Phase.STAGING_IN, refresh=1.0), Retry)
    assert decisions.after_error(Failure.IO, "disk full", decisions.ATTEMPTS, Phase.STAGING_IN,
                                 refresh=1.0) == Move(
        Phase.SYSTEM_ERROR, f"disk full (after {decisions.ATTEMPTS} attempts)")


@pytest.mark.parametrize(("failure", "target", "message"), [
    (Failure.INPUT_REJECTED, Phase.PERMANENT_FAILURE, "no such input"),
    (Failure.INVALID_WORKFLOW, Phase.PERMANENT_FAILURE, "no such input"),
    (Failure.OUTPUT_REJECTED, Phase.SYSTEM_ERROR, "no such input"),
    (Failure.INTERNAL, Phase.SYSTEM_ERROR, "internal error: no such input"),
])
def test_a_failure_that_cannot_pass_ends_the_job_at_once(
        failure: decisions.Failure, target: Phase, message: str) -> None:
    assert decisions.after_error(failure, "no such input", 1, Phase.STAGING_IN,
                                 refresh=1.0) == Move(target, message)


def test_a_failure_while_staging_out_ends_the_job_without_outputs() -> None:
    assert decisions.after_error(Failure.OUTPUT_REJECTED, "bad", 1, Phase.STAGING_OUT,
                                 refresh=1.0) == Move(Phase.SYSTEM_ERROR, "bad", {"output": {}})


@pytest.mark.parametrize("phase", [*sorted(states.FINAL), None])
def test_a_failure_of_a_job_that_ended_meanwhile_changes_nothing(phase: Phase | None) -> None:
    assert decisions.after_error(Failure.INTERNAL, "x", 1, phase, refresh=1.0) is None


# --- deleting a job ----------------------------------------------------------------------

@pytest.mark.parametrize(("phase", "remote_id", "unsettled"), [
    (Phase.STAGING_IN, "", True), (Phase.STAGING_IN_CR, "", True),
    (Phase.STAGING_IN, "12", False), (Phase.SUBMITTED, "", False), (None, "", False),
    (Phase.WAITING, "12", False),
])
def test_a_deleted_job_is_asked_for_a_submit_its_status_may_not_know(
        phase: Phase | None, remote_id: str, unsettled: bool) -> None:
    assert decisions.submit_unsettled(phase, remote_id) is unsettled


def test_a_deletion_waits_for_a_submit_in_flight_but_not_for_ever() -> None:
    for outcome in (SubmitOutcome.UNKNOWN, SubmitOutcome.LOOK_UP):
        assert decisions.after_submission_lookup(outcome, 0) == decisions.STOP_WAIT
        assert decisions.after_submission_lookup(outcome, decisions.SUBMIT_LOOKS) is None
    for outcome in (SubmitOutcome.SUBMITTED, SubmitOutcome.NOT_SUBMITTED):
        assert decisions.after_submission_lookup(outcome, 0) is None


def test_a_deletion_removes_the_directory_once_the_remote_job_is_gone() -> None:
    for state in (RemoteState.WAITING, RemoteState.RUNNING):
        assert decisions.after_stop_check(state, 0) == decisions.STOP_WAIT
        assert decisions.after_stop_check(state, decisions.STOP_LOOKS) is None
    for state in (RemoteState.DONE, RemoteState.VANISHED):
        assert decisions.after_stop_check(state, 0) is None
