"""The caps on submissions per minute and batch jobs in the queue."""

from __future__ import annotations

import datetime

from cerise.model import submissions
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


def test_a_new_budget_remembers_the_submissions_its_jobs_record() -> None:
    now = datetime.datetime(2026, 12, 6, 20, 0, 0, tzinfo=datetime.UTC)
    stamps = ["2026-12-06T19:59:30+00:00", "2026-12-06T19:59:50Z", "2026-12-06T19:58:00Z",
              None, "yesterday", "2026-12-06T19:59:40"]  # no zone: not a time we wrote
    ages = submissions.ages(stamps, now)
    assert ages == [30.0, 10.0, 120.0]
    budget = SubmitBudget(SubmitLimits(per_minute=2))
    budget.recall(1000.0, ages)  # as after a restart: two in this minute already
    assert budget.refusal(1000.0, queued=0) is not None
    assert budget.next_room(1000.0) == 30.0  # when the one of 30 s ago leaves the window
    assert budget.refusal(1030.0, queued=0) is None
