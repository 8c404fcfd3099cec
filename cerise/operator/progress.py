"""A job's staging progress in its status, throttled: etcd is not a progress bar.

Staging tells a `ProgressWriter` the bytes done and the total of one direction as they
move (`cerise.remote.staging.StagingProgress`). The writer merges them into the job's
status, ``progress.<in|out>: {done, total}`` and ``progressText`` ("in 45% of 1.0 GB",
a printer column of ``kubectl get wfj``), at most once every `INTERVAL` seconds, the first
time when the staging has taken that long, and the last value always when it is closed
(unless cancelled): a short staging writes its progress once, one with nothing to move (a
job without inputs) not at all; or its last value is handed over (`hand_over`) to ride on
the caller's next write, a transition. Writes go one at a time and in order, so the status
never goes back. A failed write is logged and left unwritten: the next progress or the close
writes the latest value again; progress is a hint, never a reason to fail a job.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import Any, Literal

from lightkube import AsyncClient

from cerise.kube import jobs as kube_jobs

logger = logging.getLogger(__name__)

INTERVAL = 0.5
"""Least seconds between two writes of one job's progress."""

Direction = Literal["in", "out"]


class ProgressWriter:
    """Writes one job's staging progress in one direction; use it as `async with`."""

    def __init__(self, kube: AsyncClient, *, namespace: str, name: str, direction: Direction,
                 interval: float = INTERVAL,
                 written: Callable[[dict[str, Any]], None] | None = None) -> None:
        """`written`, if given, receives the job as each write left it."""
        self._kube, self._namespace, self._name = kube, namespace, name
        self._direction, self._interval, self._written_cb = direction, interval, written
        self._latest: tuple[int, int] | None = None
        self._written: tuple[int, int] | None = None
        self._last_write = asyncio.get_running_loop().time()
        """When the last write was made; the first waits as if one was made at the start."""
        self._wake = asyncio.Event()
        self._closing = False
        self._handing_over = False
        self._task: asyncio.Task[None] | None = None

    def __call__(self, done: int, total: int) -> None:
        """Take the latest progress; it is written now, or when the interval has passed.
        A staging with nothing to move has none to show: it writes nothing."""
        if total <= 0 and self._latest is None:
            return
        self._latest = (done, total)
        if not self._closing and (self._task is None or self._task.done()):
            self._task = asyncio.create_task(self._flush(), name=f"progress-{self._name}")

    @property
    def done(self) -> int:
        """The bytes done, as last reported."""
        return self._latest[0] if self._latest else 0

    async def __aenter__(self) -> ProgressWriter:
        return self

    async def __aexit__(self, kind: type[BaseException] | None, error: BaseException | None,
                        traceback: TracebackType | None) -> None:
        if isinstance(error, asyncio.CancelledError):  # e.g. the job is being deleted
            self._closing = True
            if self._task is not None:
                self._task.cancel()
                await asyncio.gather(self._task, return_exceptions=True)
            return
        await self.close()

    async def close(self) -> None:
        """Write the last progress taken, at once, and stop."""
        self._closing = True
        self._wake.set()
        if self._task is not None:
            await self._task
        if self._latest != self._written:
            await self._write()

    async def hand_over(self, status: Mapping[str, Any]) -> dict[str, Any]:
        """Stop, writing nothing more: the status fields of the latest progress not yet
        written ({} if none), for the caller's next write of the job, whose `status` now
        is given (a write of the fields replaces its progress of both directions)."""
        self._closing = self._handing_over = True
        self._wake.set()
        if self._task is not None:
            await self._task  # a write under way ends first: the status never goes back
        latest, written = self._latest, self._written
        self._written = latest  # nothing is left for the close to write
        if latest is None or latest == written:
            return {}
        handed = fields(self._direction, *latest)
        handed["progress"] = {**(status.get("progress") or {}), **handed["progress"]}
        return handed

    async def _flush(self) -> None:
        loop = asyncio.get_running_loop()
        while self._latest != self._written:
            wait = self._last_write + self._interval - loop.time()
            if wait > 0 and not self._closing:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(wait):
                        await self._wake.wait()
            if self._handing_over:
                return
            if not await self._write():
                return  # the next progress, or the close, tries again

    async def _write(self) -> bool:
        """Write the latest progress; whether it was written."""
        assert self._latest is not None
        done, total = latest = self._latest
        self._last_write = asyncio.get_running_loop().time()
        status = fields(self._direction, done, total)
        try:
            job = await kube_jobs.patch_status(self._kube, namespace=self._namespace,
                                               name=self._name, status=status)
        except Exception as error:  # e.g. the API server is away: the next write may pass
            logger.warning("job %s/%s: progress not written: %s", self._namespace, self._name,
                           error)
            return False
        self._written = latest
        if self._written_cb is not None:
            self._written_cb(job.to_dict())  # type: ignore[no-untyped-call]
        return True


def fields(direction: Direction, done: int, total: int) -> dict[str, Any]:
    """A job's status fields that say its progress."""
    return {"progress": {direction: {"done": done, "total": total}},
            "progressText": text(direction, done, total)}


def text(direction: Direction, done: int, total: int) -> str:
    """Progress for people: ``in 45% of 1.0 GB``."""
    percent = 100 if total <= 0 else min(100, done * 100 // total)
    return f"{direction} {percent}% of {size(total)}"


def size(count: int) -> str:
    """A byte count in decimal units, as people read them (``1.0 GB``)."""
    if count < 1000:
        return f"{count} B"
    value = count / 1000
    for unit in ("kB", "MB", "GB"):
        if value < 1000:
            return f"{value:.1f} {unit}"
        value /= 1000
    return f"{value:.1f} TB"
