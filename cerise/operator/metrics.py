"""Prometheus metrics of the operator, served over HTTP at ``/metrics``.

The worker moves the counters as it works (`transition`, `scheduler_command`, `staging`, …),
every series labelled with the ComputeResource's namespace and name. Jobs per phase and
the SSH connections' counters are read at scrape time (`OperatorCollector`), from the
registry's in-memory jobs and the workers' connections: nothing to keep up to date.

The endpoint runs on kopf's event loop (aiohttp), so a scrape reads the registry between
two steps of the loop, never while it changes. Settings: CERISE_METRICS_PORT (default
29594; 0 turns the endpoint off) and CERISE_METRICS_ADDRESS (default 127.0.0.1; the Helm
chart sets 0.0.0.0).
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import logging
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from aiohttp import web
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric

from cerise.model.states import Phase
from cerise.remote.ssh import SshCounters
from cerise.remote.ssh_remote import SshRemote

logger = logging.getLogger(__name__)

DEFAULT_PORT = 29594
DEFAULT_ADDRESS = "127.0.0.1"
NEW = "New"
"""The `phase` (and transition `source`) label of a job before its first transition."""

CommandKind = Literal["submit", "status", "cancel", "accounting"]
Direction = Literal["in", "out"]
ResourceKey = tuple[str, str]

REGISTRY = CollectorRegistry(auto_describe=True)
_RESOURCE = ["namespace", "resource"]
TRANSITIONS = Counter(
    "cerise_operator_transitions", "Job phase transitions written, by source and target phase.",
    [*_RESOURCE, "source", "target"], registry=REGISTRY)
SCHEDULER_COMMANDS = Counter(
    "cerise_operator_scheduler_commands",
    "Scheduler commands run (one status command polls all of a resource's jobs).",
    [*_RESOURCE, "kind"], registry=REGISTRY)
SCHEDULER_COMMAND_SECONDS = Histogram(
    "cerise_operator_scheduler_command_seconds", "Time a scheduler command took, with its SSH "
    "round trip.", [*_RESOURCE, "kind"], registry=REGISTRY,
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120))
STAGING_BYTES = Counter(
    "cerise_operator_staging_bytes", "Bytes staged to (in) and from (out) compute resources.",
    [*_RESOURCE, "direction"], registry=REGISTRY)
STAGING_SECONDS = Counter(
    "cerise_operator_staging_seconds", "Seconds spent staging jobs in and out.",
    [*_RESOURCE, "direction"], registry=REGISTRY)
INSTALL_FAILURES = Counter(
    "cerise_operator_install_failures", "Failed installs of Specialisation projects.",
    _RESOURCE, registry=REGISTRY)
VALIDATION_FAILURES = Counter(
    "cerise_operator_validation_failures", "Jobs refused before they reached the resource "
    "(invalid workflow or inputs).", _RESOURCE, registry=REGISTRY)
_ACCOUNTED = [*_RESOURCE, "source"]
RUN_CORE_HOURS = Counter(
    "cerise_run_core_hours", "Core-hours of ended runs (cores allocated times elapsed hours), by "
    "who measured them (sacct, jobscript, pilot).", _ACCOUNTED, registry=REGISTRY)
RUN_CPU_SECONDS = Counter(
    "cerise_run_cpu_seconds", "CPU seconds (user + system) of ended runs.", _ACCOUNTED,
    registry=REGISTRY)
RUN_ELAPSED_SECONDS = Counter(
    "cerise_run_elapsed_seconds", "Wall-clock seconds of ended runs.", _ACCOUNTED,
    registry=REGISTRY)
RUNS_ACCOUNTED = Counter(
    "cerise_runs_accounted", "Ended jobs whose runs' cost was recorded in their status.",
    _ACCOUNTED, registry=REGISTRY)
RETENTION_DELETED = Counter(
    "cerise_operator_retention_deleted", "Finished jobs deleted after their retention.",
    _RESOURCE, registry=REGISTRY)
JOB_EVENTS = Counter(
    "cerise_operator_job_events", "WorkflowJob watch events handled (after a start, first "
    "one for every job that exists).", registry=REGISTRY)


def transition(namespace: str, resource: str, source: Phase | None, target: Phase) -> None:
    """Count a phase transition that was written (source None: the job's first)."""
    TRANSITIONS.labels(namespace, resource, source.value if source else NEW, target.value).inc()


@contextlib.contextmanager
def scheduler_command(namespace: str, resource: str, kind: CommandKind) -> Iterator[None]:
    """Count and time the scheduler command run inside the block (failed ones too)."""
    started = time.perf_counter()
    try:
        yield
    finally:
        SCHEDULER_COMMANDS.labels(namespace, resource, kind).inc()
        SCHEDULER_COMMAND_SECONDS.labels(namespace, resource, kind).observe(
            time.perf_counter() - started)


def staging(namespace: str, resource: str, direction: Direction, size: int,
            seconds: float) -> None:
    """Count one job's staging in or out: `size` bytes moved in `seconds`."""
    STAGING_BYTES.labels(namespace, resource, direction).inc(size)
    STAGING_SECONDS.labels(namespace, resource, direction).inc(seconds)


def validation_failed(namespace: str, resource: str) -> None:
    """Count a job refused before it reached the resource."""
    VALIDATION_FAILURES.labels(namespace, resource).inc()


def install_failed(namespace: str, resource: str) -> None:
    """Count a failed project install."""
    INSTALL_FAILURES.labels(namespace, resource).inc()


def job_event() -> None:
    """Count a WorkflowJob watch event handled."""
    JOB_EVENTS.inc()


def run_accounted(namespace: str, resource: str, figures: Mapping[str, Any]) -> None:
    """Count what a job's runs cost (its `status.accounting`), once: when it was written."""
    labels = (namespace, resource, str(figures.get("source") or "unknown"))
    RUNS_ACCOUNTED.labels(*labels).inc()
    for counter, name in ((RUN_CORE_HOURS, "coreHours"), (RUN_CPU_SECONDS, "cpuSeconds"),
                          (RUN_ELAPSED_SECONDS, "elapsedSeconds")):
        value = figures.get(name)
        if isinstance(value, int | float) and value >= 0:
            counter.labels(*labels).inc(value)


def retention_deleted(namespace: str, resource: str) -> None:
    """Count a finished job deleted after its retention."""
    RETENTION_DELETED.labels(namespace, resource).inc()


# --- read at scrape time -------------------------------------------------------------------

class _Worker(Protocol):
    @property
    def remote(self) -> object: ...


class _Source(Protocol):
    """What the collector reads: the registry."""

    @property
    def phases(self) -> Mapping[tuple[str, str, str | None], int]: ...

    @property
    def workers(self) -> Mapping[ResourceKey, _Worker]: ...


@dataclass
class _Connection:
    """The SSH counters of one resource: its current connection, and what the ones before
    it (of earlier workers of the resource) had counted when they were replaced."""

    remote: SshRemote | None
    before: SshCounters = dataclasses.field(default_factory=SshCounters)

    def total(self) -> SshCounters:
        now = self.remote.counters if self.remote else SshCounters()
        return SshCounters(*(a + b for a, b in zip(dataclasses.astuple(self.before),
                                                   dataclasses.astuple(now), strict=True)))

    def replace(self, remote: SshRemote | None) -> None:
        if remote is not self.remote:
            self.before, self.remote = self.total(), remote


class OperatorCollector:
    """Jobs per namespace, resource and phase, and the SSH connections' counters, read
    from `source` (the operator's registry, once there is one)."""

    def __init__(self) -> None:
        self.source: Callable[[], _Source | None] = lambda: None
        self._connections: dict[ResourceKey, _Connection] = {}

    def collect(self) -> Iterator[Metric]:
        state = self.source()
        jobs = GaugeMetricFamily("cerise_operator_jobs", "Jobs the operator knows, by phase.",
                                 labels=[*_RESOURCE, "phase"])
        counts: collections.Counter[tuple[str, str, str]] = collections.Counter()
        resources: set[ResourceKey] = set()
        if state is not None:
            for (namespace, resource, phase), count in state.phases.items():
                resources.add((namespace, resource))
                counts[(namespace, resource, phase or NEW)] += count
            resources.update(state.workers)
        for namespace, resource in sorted(resources):
            for phase in (NEW, *Phase):
                jobs.add_metric([namespace, resource, phase],
                                counts[(namespace, resource, phase)])
        yield jobs
        yield from self._ssh({key: worker.remote for key, worker in
                              (state.workers.items() if state is not None else ())})

    def _ssh(self, remotes: Mapping[ResourceKey, object]) -> Iterator[Metric]:
        for key in set(remotes) | set(self._connections):
            remote = remotes.get(key)
            ssh = remote if isinstance(remote, SshRemote) else None
            if key not in self._connections:
                if ssh is None:
                    continue
                self._connections[key] = _Connection(ssh)
            self._connections[key].replace(ssh)
        families = {
            "connects": CounterMetricFamily(
                "cerise_operator_ssh_connects", "SSH connections opened (the first, and "
                "each after a lost one).", labels=_RESOURCE),
            "reconnects": CounterMetricFamily(
                "cerise_operator_ssh_reconnects", "SSH connections opened again after one "
                "was lost.", labels=_RESOURCE),
            "channel_waits": CounterMetricFamily(
                "cerise_operator_ssh_channel_waits", "Remote commands that waited for a free "
                "SSH channel (all of maxSessions busy).", labels=_RESOURCE),
            "channel_wait_seconds": CounterMetricFamily(
                "cerise_operator_ssh_channel_wait_seconds", "Seconds remote commands waited "
                "for a free SSH channel.", labels=_RESOURCE),
        }
        for key, connection in sorted(self._connections.items()):
            total = connection.total()
            families["connects"].add_metric(key, total.connects)
            families["reconnects"].add_metric(key, total.reconnects)
            families["channel_waits"].add_metric(key, total.channel_waits)
            families["channel_wait_seconds"].add_metric(key, total.channel_wait_seconds)
        yield from families.values()


COLLECTOR = OperatorCollector()
REGISTRY.register(COLLECTOR)


# --- the endpoint --------------------------------------------------------------------------

@dataclass(frozen=True)
class Endpoint:
    """Where the endpoint listens."""

    address: str
    port: int


def endpoint(environ: Mapping[str, str]) -> Endpoint | None:
    """The endpoint the environment asks for; None when it is turned off (port 0)."""
    text = environ.get("CERISE_METRICS_PORT", str(DEFAULT_PORT)).strip()
    if not text.isdigit() or int(text) > 65535:
        raise ValueError(f"CERISE_METRICS_PORT must be a port number (0 turns the metrics "
                         f"endpoint off), not {text!r}")
    if int(text) == 0:
        return None
    return Endpoint(environ.get("CERISE_METRICS_ADDRESS", DEFAULT_ADDRESS), int(text))


async def _metrics(_: web.Request) -> web.Response:
    body = generate_latest(REGISTRY)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def serve(where: Endpoint) -> web.AppRunner | None:
    """Start serving ``/metrics`` on the running loop; None if the port cannot be had (the
    operator goes on without metrics; the log says why)."""
    app = web.Application()
    app.router.add_get("/metrics", _metrics)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, where.address, where.port).start()
    except OSError as error:
        await runner.cleanup()
        logger.error("metrics endpoint not started: cannot listen on %s:%d: %s",
                     where.address, where.port, error.strerror or error)
        return None
    logger.info("metrics at http://%s:%d/metrics", where.address, where.port)
    return runner
