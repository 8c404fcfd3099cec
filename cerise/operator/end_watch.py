"""Seeing a run's end at once, not at the next refresh.

After a poll, while the resource has jobs in `Waiting` or `Running`, one command waits on
the resource for the first of their `exit_code` markers (`cerise.remote.ends`), for a
refresh or `WAIT_AT_LEAST`, whichever is longer (with a short refresh, a command a second,
not one a refresh); then again, with the jobs the latest poll knows. When one appears, the
worker polls at once (`seen`); the watch then rests until the poll after that one, a
refresh later, so it adds at most one status command per refresh however many runs end.
A failure to wait is no failure of a job: the next refresh's poll sees the end all the
same.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from cerise.kube import jobs as kube_jobs
from cerise.model.states import Phase
from cerise.operator.context import ResourceContext
from cerise.remote import ends

logger = logging.getLogger(__name__)

WAIT_AT_LEAST = 1.0
"""Least seconds one wait lasts, unless a run ends."""
WATCHED = frozenset({Phase.WAITING, Phase.RUNNING})
"""The phases of jobs whose run may end any moment (not those being cancelled)."""


class EndWatch:
    """Waits for the runs of one resource's jobs to end, between its polls."""

    def __init__(self, context: ResourceContext, seen: Callable[[], None]) -> None:
        """`seen`: have the worker poll now."""
        self.context, self._seen = context, seen
        self._polled = asyncio.Event()

    def polled(self) -> None:
        """The worker polled: what it saw is known, watch the runs still going."""
        self._polled.set()

    def markers(self) -> list[str]:
        """The `exit_code` markers of the runs to watch."""
        return [self.context.files(body).exit_code for body in self.context.jobs()
                if kube_jobs.phase_of(body) in WATCHED]

    async def run(self) -> None:
        """Watch after every poll, until cancelled."""
        refresh = self.context.spec.refresh
        wait = max(refresh, WAIT_AT_LEAST)
        while True:
            await self._polled.wait()
            self._polled.clear()
            try:
                ended = await ends.first_end(self.context.remote, self.markers(), wait)
            except Exception as error:  # the poll at the refresh sees the end all the same
                logger.debug("resource %s/%s: no wait for runs to end: %s",
                             self.context.namespace, self.context.name, error)
                await asyncio.sleep(refresh)
                continue
            if ended is not None:
                self._polled.clear()
                self._seen()
                await self._polled.wait()  # the poll asked for; then rest until the next
                self._polled.clear()
