"""A compute resource's own status: its Ready condition, when it is written, its Events."""

from __future__ import annotations

from cerise.model import resource_health
from cerise.model.resource_health import Health, Notice

UP = resource_health.judge(connected=True)
DOWN = resource_health.judge(connected=False, error="connection refused")
NO_SCHEDULER = resource_health.judge(connected=True, error="squeue: timed out",
                                     reason="SchedulerUnavailable")


def test_ready_only_when_it_answers_without_an_error() -> None:
    assert UP.ready and not DOWN.ready and not NO_SCHEDULER.ready
    assert resource_health.ready_condition(UP, "t0") == {
        "type": "Ready", "status": "True", "reason": "Connected",
        "message": "the compute resource answers", "lastTransitionTime": "t0"}
    condition = resource_health.ready_condition(NO_SCHEDULER, "t1")
    assert (condition["status"], condition["reason"], condition["message"]) == (
        "False", "SchedulerUnavailable", "squeue: timed out")


def test_refused_allocations_make_a_resource_that_answers_not_ready() -> None:
    health = resource_health.judge(connected=True, allocation_problem="sbatch: invalid qos")
    assert health == Health(True, "sbatch: invalid qos", "AllocationRefused")
    assert resource_health.judge(connected=False, error="down",
                                 allocation_problem="x") == Health(False, "down", "Unreachable")


def test_the_condition_flips_and_an_event_is_sent_only_on_a_change() -> None:
    assert resource_health.flipped(None, UP) and resource_health.notice(None, UP) is None
    assert resource_health.notice(None, DOWN) == Notice("Warning", "Unreachable",
                                                        "connection refused")
    assert resource_health.notice(UP, UP) is None and not resource_health.flipped(UP, UP)
    assert resource_health.notice(DOWN, UP) == Notice("Normal", "Ready",
                                                      "the compute resource answers again")
    # Another reason to be not Ready: an Event, but the condition's time stays.
    assert resource_health.notice(DOWN, NO_SCHEDULER) is not None
    assert not resource_health.flipped(DOWN, NO_SCHEDULER)


def test_an_unchanged_status_is_written_again_only_after_a_while() -> None:
    write_due = resource_health.write_due
    assert write_due(None, UP, extra_changed=False, since_written=0)
    assert not write_due(UP, UP, extra_changed=False, since_written=1)
    assert write_due(UP, UP, extra_changed=True, since_written=1)
    assert write_due(UP, UP, extra_changed=False, since_written=resource_health.STATUS_INTERVAL)
    assert write_due(UP, DOWN, extra_changed=False, since_written=1)
