"""The retention sweep: deletes finished jobs that have outlived their retention.

Every CERISE_RETENTION_SWEEP_SECONDS (default 300) the sweep picks, from the registry's
in-memory jobs (no LIST), at most CERISE_RETENTION_BATCH (default 100) expired ones,
oldest first (`cerise.model.retention`), and deletes them through the API; the job
finalizer then removes each one's remote directory, published outputs and log. After a
full batch the next follows at once. The retention is the ComputeResource's `jobRetention`
(from its worker's spec; read from the API when it has no worker now), else
CERISE_JOB_RETENTION; with neither, jobs are kept.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from lightkube import ApiError, AsyncClient

from cerise.kube import objects
from cerise.model import retention
from cerise.model.compute import ResourceSpec
from cerise.operator import metrics

logger = logging.getLogger(__name__)

ResourceKey = tuple[str, str]
Body = Mapping[str, Any]


@dataclass(frozen=True)
class Settings:
    """How the sweep runs."""

    default: float | None
    """Seconds finished jobs are kept where their ComputeResource says nothing; None: forever."""
    interval: float = 300.0
    """Seconds between sweeps."""
    batch: int = 100
    """Most jobs deleted by one sweep."""


def settings(environ: Mapping[str, str]) -> Settings:
    """The sweep's settings from the operator's environment; ValueError says what is wrong."""
    text = environ.get("CERISE_JOB_RETENTION", "").strip()
    try:
        default = retention.parse_retention(text) if text else None
    except ValueError as error:
        raise ValueError(f"CERISE_JOB_RETENTION: {error}") from None
    interval = positive_number(environ, "CERISE_RETENTION_SWEEP_SECONDS", Settings.interval)
    batch = positive_number(environ, "CERISE_RETENTION_BATCH", Settings.batch)
    if batch != int(batch):
        raise ValueError(f"CERISE_RETENTION_BATCH must be a whole number, not {batch:g}")
    return Settings(default=default, interval=interval, batch=int(batch))


def positive_number(environ: Mapping[str, str], name: str, default: float) -> float:
    text = environ.get(name, "").strip()
    if not text:
        return default
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not value > 0:
        raise ValueError(f"{name} must be a positive number, not {text!r}")
    return value


class _Worker(Protocol):
    @property
    def spec(self) -> ResourceSpec: ...


class Source(Protocol):
    """What the sweep reads: the registry."""

    @property
    def kube(self) -> AsyncClient: ...

    @property
    def own_jobs(self) -> Mapping[str, Body]:
        """The jobs of this operator replica's resources, by UID."""

    @property
    def workers(self) -> Mapping[ResourceKey, _Worker]: ...

    @property
    def resources(self) -> Mapping[ResourceKey, Mapping[str, Any]]:
        """The specs of the ComputeResources that exist, from the watch."""

    @property
    def absent(self) -> set[ResourceKey]:
        """ComputeResources known to be gone (a read that finds one missing adds it)."""


class Sweeper:
    """Sweeps the jobs of `source` (the registry, read anew each time) by `config`."""

    def __init__(self, source: Callable[[], Source], config: Settings) -> None:
        self._source, self.config = source, config
        self._asked: set[str] = set()
        """Jobs whose deletion was asked for, until the watch says they are going."""

    async def run(self) -> None:
        """Sweep until cancelled."""
        while True:
            deleted = 0
            try:
                deleted = await self.sweep(datetime.datetime.now(datetime.UTC))
            except Exception:  # a fault in one sweep must not end them all
                logger.exception("the retention sweep failed; trying again in %g s",
                                 self.config.interval)
            await asyncio.sleep(1 if deleted >= self.config.batch else self.config.interval)

    async def sweep(self, now: datetime.datetime) -> int:
        """Delete up to a batch of expired jobs; how many were deleted."""
        source = self._source()
        self._asked.intersection_update(
            uid for uid, job in source.own_jobs.items()
            if not job["metadata"].get("deletionTimestamp"))
        finished = [job for uid, job in source.own_jobs.items()
                    if uid not in self._asked and retention.finished_at(job) is not None]
        kept = await durations(source, {_resource(job) for job in finished},
                               self.config.default, RETENTION)
        deleted = 0
        for job in retention.expired(finished, now, lambda *key: kept[key], self.config.batch):
            meta = job["metadata"]
            namespace, resource = _resource(job)
            try:
                gone = not await objects.delete_job(source.kube, namespace, meta["name"])
            except ApiError as error:
                logger.warning("job %s/%s not deleted after its retention: %s", namespace,
                               meta["name"], error.status.message or error.status.code)
                continue
            self._asked.add(meta["uid"])
            if gone:
                continue
            logger.info("job %s/%s deleted: it finished at %s and is kept for %g s",
                        namespace, meta["name"], job["status"].get("finishedAt"),
                        kept[(namespace, resource)])
            metrics.retention_deleted(namespace, resource)
            deleted += 1
        return deleted


def _resource(job: Body) -> ResourceKey:
    return job["metadata"]["namespace"], job["spec"]["computeResource"]


@dataclass(frozen=True)
class Duration:
    """A per-resource duration: its spec field, and its value in a worker's spec."""

    field: str
    of_spec: Callable[[ResourceSpec], float | None]


RETENTION = Duration("jobRetention", lambda spec: spec.job_retention)


async def durations(
    source: Source, keys: Iterable[ResourceKey], default: float | None, duration: Duration,
) -> dict[ResourceKey, float | None]:
    """The `duration` of each resource's jobs (their retention, or how long before they
    are archived). A resource without a worker here (being restarted, broken, or another
    replica's) has the spec the watch last showed, so that its own longer duration is never
    replaced by the default while its worker is away. One the watch has not shown is read
    from the API once; a gone one has the default (archived jobs outlive their resource,
    which each sweep would otherwise read again: 3,645 reads in one run of the tests)."""
    found: dict[ResourceKey, float | None] = {}
    for key in keys:
        worker = source.workers.get(key)
        if worker is not None:
            own = duration.of_spec(worker.spec)
        else:
            spec = source.resources.get(key)
            if spec is None and key not in source.absent:
                try:
                    body = await objects.get_resource(source.kube, *key)
                except ApiError as error:
                    logger.warning("ComputeResource %s/%s not read; its jobs are kept for now:"
                                   " %s", *key, error.status.message or error.status.code)
                    found[key] = None
                    continue
                if body is None:
                    source.absent.add(key)
                spec = (body or {}).get("spec")
            text = (spec or {}).get(duration.field)
            try:
                own = retention.parse_retention(str(text)) if text is not None else None
            except ValueError:
                found[key] = None  # the CRD forbids it; keep rather than guess
                continue
        found[key] = own if own is not None else default
    return found
