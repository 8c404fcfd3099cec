"""The archiving loop: finished jobs move to the archive, then out of the Kubernetes API.

With an archive (CERISE_ARCHIVE_URL, a PostgreSQL URL), every
CERISE_ARCHIVE_SWEEP_SECONDS (default 60) the loop picks, from the registry's in-memory jobs,
at most CERISE_ARCHIVE_BATCH (default 100) jobs final for longer than their resource's
`archiveAfter` (else CERISE_ARCHIVE_AFTER; with neither, jobs stay live), oldest first, by
the retention sweep's own selection (`cerise.model.retention.expired`). For each, in this
order, every step idempotent by UID:

1. its record goes into the archive (ON CONFLICT DO NOTHING: a second write is a no-op);
2. the WorkflowJob is marked as archived, so its finalizer leaves outputs and log in the
   exchange (the remote directory is still removed: nothing else could remove it later);
3. it is deleted with a UID precondition.

A kill at any point leaves the job final and live (picked again: step 1 does nothing) or
being deleted (its finalizer finishes): one row, no live object. The loop also ends the
retention of archived jobs (`jobRetention`, else CERISE_JOB_RETENTION): their files go,
then their rows. While the archive cannot be reached, live work goes on, archiving waits
and tries again every CERISE_ARCHIVE_RETRY_SECONDS (default 10), the operator's health
(`/healthz`, condition `ArchiveAvailable`) and an Event on each waiting resource say so.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import kopf

from cerise.archive import published, records
from cerise.archive.store import Archive, Unavailable
from cerise.kube import events, pruning
from cerise.kube import jobs as kube_jobs
from cerise.model import retention
from cerise.model.exchange import Layout
from cerise.operator import retention as sweeping
from cerise.operator.retention import RETENTION, Duration, ResourceKey, durations

logger = logging.getLogger(__name__)

Body = Mapping[str, Any]
ARCHIVE_AFTER = Duration("archiveAfter", lambda spec: spec.archive_after)
CONDITION = "ArchiveAvailable"
PRUNING_LANES = 8
"""Jobs marked and deleted at once (two API calls each, so a batch is not a queue of them)."""


@dataclass(frozen=True)
class Settings:
    """How the loop runs."""

    url: str
    default: float | None
    """Seconds jobs stay live after they end where their resource says nothing; None: ever."""
    retention: float | None
    """The operator's CERISE_JOB_RETENTION, for archived jobs whose resource says nothing."""
    interval: float = 60.0
    batch: int = 100
    retry: float = 10.0


def settings(environ: Mapping[str, str]) -> Settings | None:
    """The loop's settings from the operator's environment, None without an archive;
    ValueError says what is wrong."""
    url = environ.get("CERISE_ARCHIVE_URL", "").strip()
    if not url:
        return None
    found = []
    for name in ("CERISE_ARCHIVE_AFTER", "CERISE_JOB_RETENTION"):
        text = environ.get(name, "").strip()
        try:
            found.append(retention.parse_retention(text) if text else None)
        except ValueError as error:
            raise ValueError(f"{name}: {error}") from None
    batch = sweeping.positive_number(environ, "CERISE_ARCHIVE_BATCH", Settings.batch)
    if batch != int(batch):
        raise ValueError(f"CERISE_ARCHIVE_BATCH must be a whole number, not {batch:g}")
    return Settings(url=url, default=found[0], retention=found[1],
                    interval=sweeping.positive_number(environ, "CERISE_ARCHIVE_SWEEP_SECONDS",
                                             Settings.interval),
                    batch=int(batch),
                    retry=sweeping.positive_number(environ, "CERISE_ARCHIVE_RETRY_SECONDS",
                                          Settings.retry))


class _Source(sweeping.Source, Protocol):
    """What the loop reads: the registry."""

    @property
    def exchange(self) -> Layout: ...


class Archiver:
    """Archives the finished jobs of `source` (the registry, read anew each time)."""

    def __init__(self, source: Callable[[], _Source], archive: Archive,
                 config: Settings) -> None:
        self._source, self.archive, self.config = source, archive, config
        self.condition: dict[str, str] = {
            "type": CONDITION, "status": "Unknown", "reason": "Starting",
            "message": "the archive has not been reached yet", "lastTransitionTime": _now()}
        self._waiting: set[ResourceKey] = set()
        """Resources told (by an Event) that their jobs wait for the archive."""

    async def run(self) -> None:
        """Archive until cancelled; then close the archive's connections."""
        await self.archive.open()
        try:
            while True:
                delay = self.config.interval
                try:
                    moved = await self.sweep(datetime.datetime.now(datetime.UTC))
                    await self._available(True, "Reached", "the archive answers")
                    if moved >= self.config.batch:
                        delay = 0.1
                except Unavailable as error:
                    await self._available(False, "Unreachable", str(error))
                    delay = min(delay, self.config.retry)
                except Exception:  # a fault in one sweep must not end them all
                    logger.exception("archiving failed; trying again in %g s", delay)
                await asyncio.sleep(delay)
        finally:
            await self.archive.close()

    async def sweep(self, now: datetime.datetime) -> int:
        """Archive and prune up to a batch of due jobs, end the retention of archived ones;
        how many jobs were archived."""
        source = self._source()
        finished = [job for job in source.own_jobs.values()
                    if retention.finished_at(job) is not None]
        after = await durations(source, {_resource(job) for job in finished},
                                self.config.default, ARCHIVE_AFTER)
        due = retention.expired(finished, now, lambda *key: after[key], self.config.batch)
        await self._tell_waiting(due)
        if not due:
            await self.archive.ready()
        else:
            await self.archive.add([records.record(job, self._log_url(source, job))
                                    for job in due])
        lanes = asyncio.Semaphore(PRUNING_LANES)

        async def prune(job: Body) -> None:
            meta = job["metadata"]
            async with lanes:
                if await pruning.mark(source.kube, meta["namespace"], meta["name"],
                                      meta["uid"], records.ARCHIVED):
                    await pruning.delete(source.kube, meta["namespace"], meta["name"],
                                         meta["uid"])
        for outcome in await asyncio.gather(*(prune(job) for job in due),
                                            return_exceptions=True):
            if isinstance(outcome, BaseException):
                raise outcome  # the others are done; the next sweep tries this one again
        if due:
            logger.info("archived %d jobs", len(due))
        await self._end_retention(source, now)
        return len(due)

    async def _end_retention(self, source: _Source, now: datetime.datetime) -> None:
        """Remove the files, then the rows, of archived jobs past their retention."""
        keys = await self.archive.resources()
        kept = await durations(source, keys, self.config.retention, RETENTION)
        for key in keys:
            keep = kept[key]
            if keep is None:
                continue
            cutoff = now - datetime.timedelta(seconds=keep)
            for uid, namespace in await self.archive.ended_before(*key, cutoff,
                                                                  self.config.batch):
                await asyncio.to_thread(published.remove,
                                        source.exchange.for_namespace(namespace), uid)
                await self.archive.remove(namespace, uid)
                logger.info("archived job %s of %s/%s removed: its retention of %g s ended",
                            uid, *key, keep)

    def _log_url(self, source: _Source, job: Body) -> str:
        meta = job["metadata"]
        exchange = source.exchange.for_namespace(meta["namespace"])
        return f"{exchange.url.rstrip('/')}/logs/{meta['uid']}.log"

    async def _available(self, available: bool, reason: str, message: str) -> None:
        """Record whether the archive answers; say so when that changes."""
        status = "True" if available else "False"
        if self.condition["status"] == status:
            return
        if available:
            logger.info("the archive answers")
            await self._tell(self._waiting, "Normal", "ArchiveAvailable",
                             "the archive answers again; finished jobs are being archived")
            self._waiting.clear()
        else:
            logger.warning("the archive cannot be reached: %s; archiving waits", message)
        self.condition = {"type": CONDITION, "status": status, "reason": reason,
                          "message": message, "lastTransitionTime": _now()}

    async def _tell_waiting(self, due: list[Body]) -> None:
        """While the archive is down, tell each resource with due jobs, once."""
        if self.condition["status"] != "False":
            return
        new = {_resource(job) for job in due} - self._waiting
        await self._tell(new, "Warning", "ArchiveUnavailable",
                         f"finished jobs wait to be archived: {self.condition['message']}")
        self._waiting |= new

    async def _tell(self, keys: set[ResourceKey], kind: str, reason: str,
                    message: str) -> None:
        for namespace, name in keys:
            await events.about_resource(self._source().kube, namespace, name, kind=kind,
                                        reason=reason, message=message)


_archivers: list[Archiver] = []


def archiver(source: Callable[[], _Source], environ: Mapping[str, str]) -> Archiver | None:
    """The archiver when the environment names an archive (its `run` is the loop)."""
    try:
        config = settings(environ)
    except ValueError as error:
        raise kopf.PermanentError(str(error)) from None
    if config is None:
        return None
    made = Archiver(source, Archive(config.url), config)
    _archivers[:] = [made]
    return made


@kopf.on.probe(id="archive")
def archive_condition(**_: Any) -> dict[str, str] | None:
    """The operator's health (`--liveness` endpoint) says whether the archive answers."""
    return _archivers[0].condition if _archivers else None


def _resource(job: Body) -> ResourceKey:
    return job["metadata"]["namespace"], job["spec"]["computeResource"]


def _now() -> str:
    return kube_jobs.now()
