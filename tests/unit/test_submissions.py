"""The caps on submissions per minute and batch jobs in the queue."""

from __future__ import annotations

from cerise.model.submissions import SubmitBudget, SubmitLimits


def test_without_caps_everything_may_be_submitted() -> None:
    budget = SubmitBudget(SubmitLimits())
    for second in range(1000):
        assert budget.refusal(second / 100, queued=second) is None
        budget.record(second / 100)
    assert budget.next_room(10.0) == 0.0


def test_at_most_the_cap_is_submitted_in_any_minute() -> None:
    budget = SubmitBudget(SubmitLimits(per_minute=3))
    for at in (0.0, 1.0, 2.0):
        assert budget.refusal(at, queued=0) is None
        budget.record(at)
    refusal = budget.refusal(30.0, queued=0)
    assert refusal is not None and "3 submissions a minute" in refusal
    assert budget.next_room(30.0) == 30.0
    assert budget.refusal(59.9, queued=0) is not None
    assert budget.refusal(60.0, queued=0) is None  # the first one left the window
    budget.record(60.0)
    assert budget.refusal(60.5, queued=0) is not None
    assert budget.next_room(60.5) == 0.5


def test_a_full_queue_holds_submissions_until_a_job_leaves_it() -> None:
    budget = SubmitBudget(SubmitLimits(max_queued=2))
    refusal = budget.refusal(0.0, queued=2)
    assert refusal is not None and "(2)" in refusal and "2 batch jobs" in refusal
    assert budget.refusal(0.0, queued=1) is None
