"""Staging's progress: the bytes moved in one direction, told as (done, total)."""

from __future__ import annotations

from collections.abc import Callable

StagingProgress = Callable[[int, int], None]
"""Told the bytes done and the total whenever staging moves some (often: throttle it)."""


class Tally:
    """Bytes done out of `total`, reported to `report` as they move.

    `add` fits `cerise.remote.protocol.Progress`, so transfers can report each chunk.
    """

    def __init__(self, report: StagingProgress | None, total: int, done: int = 0) -> None:
        self._report = report
        self.total = total
        self.done = min(done, total)
        if report is not None:
            report(self.done, self.total)

    def add(self, moved: int) -> None:
        """Count `moved` more bytes (a file that grew meanwhile never passes the total)."""
        self.done = min(self.total, self.done + moved)
        if self._report is not None:
            self._report(self.done, self.total)
