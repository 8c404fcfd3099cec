"""How gently a compute resource's scheduler is used: a cap on submissions per minute and
on batch jobs in its queue at once.

Sites ask users not to submit more than a few jobs a minute and cap the jobs a user may
have queued (often 1,000, each array task counted); a service submitting for many users
must keep to that by itself. A job that may not be submitted yet waits, staged, and says
why; it goes as soon as the window or the queue has room.
"""

from __future__ import annotations

import datetime
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field

WINDOW = 60.0
"""Seconds over which submissions are counted."""


@dataclass(frozen=True)
class SubmitLimits:
    """A resource's caps; 0 means no cap."""

    per_minute: int = 0
    max_queued: int = 0


@dataclass
class SubmitBudget:
    """The submissions of the last minute, against the caps (one per compute resource)."""

    limits: SubmitLimits
    _recent: deque[float] = field(default_factory=deque)

    def refusal(self, now: float, queued: int) -> str | None:
        """Why a job may not be submitted at `now` with `queued` batch jobs of this resource
        in the scheduler; None if it may."""
        while self._recent and now - self._recent[0] >= WINDOW:
            self._recent.popleft()
        if self.limits.max_queued and queued >= self.limits.max_queued:
            return (f"waiting to be submitted: {queued} batch jobs are in the scheduler, the "
                    f"most this resource allows at once ({self.limits.max_queued})")
        if self.limits.per_minute and len(self._recent) >= self.limits.per_minute:
            return (f"waiting to be submitted: this resource allows "
                    f"{self.limits.per_minute} submissions a minute")
        return None

    def recall(self, now: float, ages: Iterable[float]) -> None:
        """Count the submissions made `ages` seconds before `now` (a new worker's budget
        starts from the jobs' own record, so a restart or a handover opens no new minute)."""
        for age in sorted(ages, reverse=True):
            if 0 <= age < WINDOW:
                self._recent.append(now - age)

    def record(self, now: float) -> None:
        """Count a submission made at `now`."""
        self._recent.append(now)

    def next_room(self, now: float) -> float:
        """Seconds from `now` until the per-minute window has room again (0 if it has)."""
        if not self.limits.per_minute or len(self._recent) < self.limits.per_minute:
            return 0.0
        return max(0.0, self._recent[-self.limits.per_minute] + WINDOW - now)


def ages(stamps: Iterable[object], now: datetime.datetime) -> list[float]:
    """Seconds from each `submittedAt` (RFC 3339) in `stamps` to `now`; others are skipped."""
    found = []
    for stamp in stamps:
        try:
            when = datetime.datetime.fromisoformat(str(stamp))
        except ValueError:
            continue
        if when.tzinfo is not None:
            found.append((now - when).total_seconds())
    return found
