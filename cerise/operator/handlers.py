"""The kopf handlers: thin adapters from Kubernetes events to the registry and workers.

Run with `kopf run -m cerise.operator.handlers --all-namespaces` (or `cerise operator`).
Configuration from the environment: CERISE_EXCHANGE_DIR (the file exchange directory),
CERISE_EXCHANGE_URL (the URL clients see it under; with ``{namespace}`` in it, each
namespace has its own exchange in a subdirectory of its name; `cerise.operator.settings`
refuses one exchange for several namespaces), the CERISE_* credential
overrides of `cerise.model.compute`, the metrics endpoint (CERISE_METRICS_PORT and
CERISE_METRICS_ADDRESS, `cerise.operator.metrics`) and the retention of finished jobs
(CERISE_JOB_RETENTION, CERISE_RETENTION_SWEEP_SECONDS, CERISE_RETENTION_BATCH,
`cerise.operator.retention`) and the archive (CERISE_ARCHIVE_*, `cerise.operator.archiving`).
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

import kopf
from aiohttp import web
from lightkube import AsyncClient
from lightkube.config.kubeconfig import KubeConfig

from cerise.kube.jobs import GROUP, VERSION
from cerise.operator import archiving, metrics, retention
from cerise.operator import settings as operator_settings
from cerise.operator.registry import Registry

FINALIZER = f"{GROUP}/cleanup"
_state: dict[str, Registry] = {}
_endpoints: list[web.AppRunner] = []
_tasks: list[asyncio.Task[None]] = []


def registry() -> Registry:
    """The operator's registry (made at start-up)."""
    return _state["registry"]


@kopf.on.startup()
async def start(settings: kopf.OperatorSettings, **_: Any) -> None:
    """Configure kopf, create the shared state, serve the metrics, start the retention
    sweep."""
    try:
        endpoint = metrics.endpoint(os.environ)
        sweeping = retention.settings(os.environ)
        exchange = operator_settings.exchange(os.environ, operator_settings.watched_namespaces())
    except ValueError as error:
        raise kopf.PermanentError(str(error)) from None
    settings.persistence.finalizer = FINALIZER
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(prefix=GROUP)
    settings.posting.loggers = False  # Events come only from explicit transitions
    settings.watching.server_timeout = 60
    kube = AsyncClient(config=KubeConfig.from_env(), field_manager="cerise-operator")
    _state["registry"] = Registry(kube=kube, exchange=exchange)
    metrics.COLLECTOR.source = lambda: _state.get("registry")
    if endpoint is not None and (runner := await metrics.serve(endpoint)) is not None:
        _endpoints.append(runner)
    sweeper = retention.Sweeper(registry, sweeping)
    _tasks.append(asyncio.create_task(sweeper.run(), name="retention-sweep"))
    if (archiver := archiving.start(registry, os.environ)) is not None:
        _tasks.append(archiver)


@kopf.on.cleanup()
async def stop(**_: Any) -> None:
    """Stop the sweep and the metrics endpoint; close the API client."""
    for task in _tasks:
        task.cancel()
    await asyncio.gather(*_tasks, return_exceptions=True)
    for runner in _endpoints:
        await runner.cleanup()
    _tasks.clear()
    _endpoints.clear()
    state = _state.pop("registry", None)
    if state is not None:
        await state.kube.close()


@kopf.on.event(GROUP, VERSION, "workflowjobs")
async def job_event(type: str | None, body: kopf.Body, **_: Any) -> None:
    """Every change of every job goes to the registry."""
    await registry().job_event(type, dict(body))


@kopf.on.event(GROUP, VERSION, "specialisations")
async def specialisation_event(type: str | None, body: kopf.Body, **_: Any) -> None:
    """Every change of a Specialisation (created, changed, deleted): the workers of its
    namespace decide again what to install."""
    await registry().specialisation_event(type, dict(body))


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
    await registry().run_worker(namespace, name, dict(spec), stopped,
                                generation=lambda: meta.get("generation"), uid=meta["uid"])
