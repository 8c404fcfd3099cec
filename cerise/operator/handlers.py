"""The kopf handlers: thin adapters from Kubernetes events to the registry and workers.

Run with `kopf run -m cerise.operator.handlers --all-namespaces` (or `cerise operator`).
Configuration from the environment: CERISE_EXCHANGE_DIR (the file exchange directory),
CERISE_EXCHANGE_URL (the URL clients see it under; with ``{namespace}`` in it, each
namespace has its own exchange in a subdirectory of its name; `cerise.operator.settings`
refuses one exchange for several namespaces), the CERISE_* credential
overrides of `cerise.model.compute`, the metrics endpoint (CERISE_METRICS_PORT and
CERISE_METRICS_ADDRESS, `cerise.operator.metrics`) and the retention of finished jobs
(CERISE_JOB_RETENTION, CERISE_RETENTION_SWEEP_SECONDS, CERISE_RETENTION_BATCH,
`cerise.operator.retention`), the archive (CERISE_ARCHIVE_*, `cerise.operator.archiving`)
and the bound on silence of the Kubernetes API (CERISE_HEALTH_CONTACT_SECONDS,
`cerise.operator.health`), and the sharing of the compute resources among replicas
(CERISE_OPERATOR_IDENTITY, CERISE_LEASE_*, `cerise.operator.sharing`). The background
tasks are supervised, and `/healthz` (kopf's liveness endpoint) fails while one is dead or
the API has been silent too long. Callbacks are retried as CERISE_CALLBACK_* say
(`cerise.operator.callbacks`).
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Awaitable, Callable
from typing import Any

import httpx2 as httpx
import kopf
from aiohttp import web
from lightkube import AsyncClient
from lightkube.config.kubeconfig import KubeConfig

from cerise.kube import cache
from cerise.kube.jobs import GROUP, VERSION
from cerise.kube.leases import LeaseKeeper
from cerise.operator import archiving, callbacks, health, metrics, retention, sharing
from cerise.operator import settings as operator_settings
from cerise.operator.registry import Registry

FINALIZER = f"{GROUP}/cleanup"
_state: dict[str, Registry] = {}
_health = health.Health()
_endpoints: list[web.AppRunner] = []
_tasks: list[asyncio.Task[None]] = []
_clients: list[httpx.AsyncClient] = []


def registry() -> Registry:
    """The operator's registry (made at start-up)."""
    return _state["registry"]


def _background(name: str, run: Callable[[], Awaitable[None]]) -> None:
    _tasks.append(asyncio.create_task(health.supervise(name, run, _health), name=name))


@kopf.on.startup()
async def start(settings: kopf.OperatorSettings, **_: Any) -> None:
    """Configure kopf, create the shared state, serve the metrics, start the background
    tasks (retention sweep, archiver, API contact), each supervised."""
    try:
        endpoint = metrics.endpoint(os.environ)
        sweeping = retention.settings(os.environ)
        callbacks.schedule(os.environ)  # checked here; each worker reads it
        bound = health.contact_bound(os.environ)
        watched = operator_settings.watched_namespaces()
        exchange = operator_settings.exchange(os.environ, watched)
        shares = sharing.settings(os.environ, watched)
    except ValueError as error:
        raise kopf.PermanentError(str(error)) from None
    for name in ("httpx", "httpx2"):  # a line per API request (Leases every 2 s) is noise
        logging.getLogger(name).setLevel(logging.WARNING)
    settings.persistence.finalizer = FINALIZER
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(prefix=GROUP)
    settings.posting.loggers = False  # Events come only from explicit transitions
    settings.watching.server_timeout = 60
    kube = AsyncClient(config=KubeConfig.from_env(), field_manager="cerise-operator")
    http = cache.http_client(kube.config)
    _clients.append(http)
    _state["registry"] = state = Registry(kube=kube, exchange=exchange)
    state.sharing = sharing.Sharing(
        LeaseKeeper(kube, http, me=shares.identity, namespace=shares.namespace,
                    watched=shares.watched, timings=shares.timings),
        timings=shares.timings, resources=state.shared_resources,
        first=state.first_transitions)
    metrics.COLLECTOR.source = lambda: _state.get("registry")
    if endpoint is not None and (runner := await metrics.serve(endpoint)) is not None:
        _endpoints.append(runner)
    _health.bound = bound
    _health.contact()
    _background("leases", state.sharing.run)
    _background("retention-sweep", retention.Sweeper(registry, sweeping).run)
    if (archiver := archiving.archiver(registry, os.environ)) is not None:
        _background("archiving", archiver.run)
    _background("api-contact", lambda: health.keep_in_touch(http, _health))


@kopf.on.cleanup()
async def stop(**_: Any) -> None:
    """Stop the background tasks and the metrics endpoint; hand the Leases over (the
    workers have stopped: kopf stops its daemons first); close the API clients."""
    for task in _tasks:
        task.cancel()
    await asyncio.gather(*_tasks, return_exceptions=True)
    if (state := _state.get("registry")) is not None and state.sharing is not None:
        await state.sharing.stop()
    for runner in _endpoints:
        await runner.cleanup()
    for client in _clients:
        await client.aclose()
    _tasks.clear()
    _endpoints.clear()
    _clients.clear()
    state = _state.pop("registry", None)
    if state is not None:
        await state.kube.close()


@kopf.on.event(GROUP, VERSION, "workflowjobs")
async def job_event(type: str | None, body: kopf.Body, **_: Any) -> None:
    """Every change of every job goes to the registry."""
    _health.contact()
    await registry().job_event(type, dict(body))
    metrics.job_event()


@kopf.on.event(GROUP, VERSION, "specialisations")
async def specialisation_event(type: str | None, body: kopf.Body, **_: Any) -> None:
    """Every change of a Specialisation (created, changed, deleted): the workers of its
    namespace decide again what to install."""
    _health.contact()
    await registry().specialisation_event(type, dict(body))


@kopf.on.event(GROUP, VERSION, "computeresources")
async def resource_event(type: str | None, namespace: str | None, name: str, spec: kopf.Spec,
                         **_: Any) -> None:
    """Which ComputeResources exist, for sharing them out, and their specs, for the sweeps; a
    deleted one's worker, dead or not, is no longer missed."""
    _health.contact()
    assert namespace is not None, "ComputeResources are namespaced"
    state = registry()
    if state.resource_event(type, namespace, name, dict(spec)) and state.sharing is not None:
        state.sharing.poke()
    if type == "DELETED":
        _health.running(_worker_task(namespace, name))


@kopf.on.delete(GROUP, VERSION, "workflowjobs")
async def job_deleted(body: kopf.Body, retry: int, **_: Any) -> None:
    """Cancel the job, remove its remote directory and its published outputs."""
    await registry().delete_job(dict(body), retry)


@kopf.daemon(GROUP, VERSION, "computeresources", cancellation_timeout=30)
async def resource_worker(
    namespace: str | None, name: str, spec: kopf.Spec, meta: kopf.Meta,
    stopped: kopf.DaemonStopped, **_: Any
) -> None:
    """One worker per ComputeResource, for as long as it exists (started again, with the
    new spec, whenever the spec changes: `meta` is kopf's live view of the object)."""
    assert namespace is not None, "ComputeResources are namespaced"
    task = _worker_task(namespace, name)
    _health.running(task)  # kopf starts it again after a death, with back-off
    try:
        await registry().run_worker(namespace, name, dict(spec), stopped,
                                    generation=lambda: meta.get("generation"), uid=meta["uid"])
    except (kopf.TemporaryError, kopf.PermanentError):
        raise  # expected: a resource that cannot be used yet, or a changed spec
    except Exception as error:
        _health.died(task, error)
        raise


def _worker_task(namespace: str | None, name: str) -> str:
    return f"worker {namespace}/{name}"


@kopf.on.probe(id="operator")
def operator_health(**_: Any) -> dict[str, float]:
    """`/healthz` fails (500) while the API has been silent too long or a task is dead."""
    try:
        return _health.check()
    except health.Unhealthy as problem:
        raise kopf.PermanentError(str(problem)) from None
