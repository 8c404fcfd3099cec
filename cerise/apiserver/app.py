"""The apiserver application: its routers, its shared services and its error answers."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import AsyncIterator

import httpx2
from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from lightkube import AsyncClient
from lightkube.config.kubeconfig import KubeConfig
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from cerise.apiserver import errors, metrics, origin_guard, workflowjobs
from cerise.apiserver.routers import cerise_jobs, dashboard, files, wes
from cerise.apiserver.settings import AuthMode, Settings
from cerise.apiserver.tenancy import TENANT_PREFIX, Services, namespace_path
from cerise.archive.store import Archive
from cerise.kube import access, cache
from cerise.kube.jobs import GROUP, VERSION

WES_PATH = "/ga4gh/wes/v1"
JOBS = cache.Kind(GROUP, VERSION, "workflowjobs", "WorkflowJob")
RESOURCES = cache.Kind(GROUP, VERSION, "computeresources", "ComputeResource")
log = logging.getLogger(__name__)


def create_app(settings: Settings) -> FastAPI:
    """The ASGI application for `settings`; it connects to Kubernetes when it starts."""

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        config = KubeConfig.from_env().get()
        if config is None:
            raise RuntimeError("the Kubernetes configuration names no current context")
        kube = AsyncClient(config=config, field_manager="cerise-apiserver")
        http = cache.http_client(config)
        watched = None if settings.auth is AuthMode.KUBERNETES else settings.namespace
        shared = Services(
            settings=settings, kube=kube,
            jobs=cache.ObjectCache(http, JOBS, namespace=watched, order=workflowjobs.order,
                                   tally=workflowjobs.tally),
            resources=cache.ObjectCache(http, RESOURCES, namespace=watched),
            callers=access.Callers(config) if settings.auth is AuthMode.KUBERNETES else None,
            archive=Archive(settings.archive_url) if settings.archive_url else None,
        )
        app.state.services = shared
        if shared.archive is not None:
            await shared.archive.open()
        app.state.followers = [
            asyncio.create_task(followed.run(), name=f"{followed.kind.name} cache")
            for followed in (shared.jobs, shared.resources)]
        for task in app.state.followers:
            task.add_done_callback(_stopped)
        try:
            async with asyncio.timeout(60):
                await asyncio.gather(shared.jobs.synced.wait(), shared.resources.synced.wait())
            yield
        finally:
            for task in app.state.followers:
                task.cancel()
            await asyncio.gather(*app.state.followers, return_exceptions=True)
            if shared.callers is not None:
                await shared.callers.close()
            await http.aclose()
            if shared.archive is not None:
                await shared.archive.close()
            await kube.close()

    app = FastAPI(
        title="Cerise",
        summary="Run CWL workflows on HPC compute resources.",
        description=(
            "The Cerise jobs API (as the original Cerise and its Python client speak it), "
            "GA4GH WES 1.1 and a WebDAV file exchange. Every API is also served under "
            "`/ns/{namespace}` for a namespace other than the default."
        ),
        version="0.1.0",
        lifespan=lifespan,
    )
    install_error_handlers(app)
    app.add_middleware(BodyLimit, limit=settings.max_request_bytes)
    app.add_middleware(origin_guard.OriginGuard, settings=settings)
    app.add_middleware(metrics.RequestMetrics)

    @app.get("/healthz", include_in_schema=False)
    async def healthz(request: Request) -> JSONResponse:
        """Ready: the caches follow the Kubernetes API (503 with the reason if one has not
        for `Settings.cache_stale_seconds`). The server answers only once they are filled."""
        return _health(_unready(request.app, settings.cache_stale_seconds))

    @app.get("/livez", include_in_schema=False)
    async def livez(request: Request) -> JSONResponse:
        """Alive: the event loop answers and no cache has stopped following the API
        (an API server that is down makes the service unready, not dead)."""
        return _health(_stopped_follower(request.app))

    if settings.metrics_port is None:  # else on a port of its own (`metrics.serve`)
        app.add_api_route("/metrics", metrics.exposition, include_in_schema=False)

    for prefix, declared in (("", []), (TENANT_PREFIX, [Depends(namespace_path)])):
        app.include_router(cerise_jobs.router, prefix=prefix, dependencies=declared)
        app.include_router(wes.router, prefix=prefix + WES_PATH, dependencies=declared)
        app.include_router(files.router, prefix=prefix, dependencies=declared)
        app.include_router(dashboard.router, prefix=prefix, dependencies=declared)
    return app


def _stopped(task: asyncio.Task[None]) -> None:
    """Log a cache that stopped following the API (only shutdown should stop one)."""
    if not task.cancelled():
        log.error("the %s stopped: %r; /livez now answers 503", task.get_name(),
                  task.exception())


def _stopped_follower(app: FastAPI) -> str | None:
    for task in app.state.followers:
        if task.done():
            return f"the {task.get_name()} stopped following the Kubernetes API"
    return None


def _unready(app: FastAPI, bound: float) -> str | None:
    """Why the service's view may be stale, or None."""
    services: Services = app.state.services
    for followed in (services.jobs, services.resources):
        lag = followed.lag()
        if lag > bound:
            return (f"the {followed.kind.name} cache has not followed the Kubernetes API for "
                    f"{lag:.0f} s ({followed.last_error})")
    return _stopped_follower(app)


def _health(problem: str | None) -> JSONResponse:
    if problem is None:
        return JSONResponse({"status": "ok"})
    return JSONResponse({"status": "unhealthy", "reason": problem}, status_code=503)


_FILES = re.compile(r"^(/ns/[^/]+)?/files(/|$)")


class BodyLimit:
    """Refuse (413) request bodies over `limit` bytes, except WebDAV uploads, which stream."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or _FILES.match(scope["path"]):
            await self.app(scope, receive, send)
            return
        length = dict(scope["headers"]).get(b"content-length", b"0")
        if not length.isdigit() or int(length) > self.limit:
            await self._refuse(scope, receive, send)
            return
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.limit:
                raise errors.TooLarge(self._message())
            return message

        await self.app(scope, counted, send)

    def _message(self) -> str:
        return (f"the request body is larger than {self.limit} bytes; upload large files "
                "to the file exchange (/files) and give their URLs")

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive)
        await _answer(request, 413, self._message())(scope, receive, send)


def _is_wes(request: Request) -> bool:
    return WES_PATH in request.url.path


def _answer(request: Request, status_code: int, message: str,
            headers: dict[str, str] | None = None) -> JSONResponse:
    if _is_wes(request):
        return JSONResponse({"msg": message, "status_code": status_code},
                            status_code=status_code, headers=headers)
    return JSONResponse({"detail": message}, status_code=status_code, headers=headers)


def install_error_handlers(app: FastAPI) -> None:
    """Answer service errors and invalid requests with a message, never a traceback."""

    @app.exception_handler(errors.ServiceError)
    async def service_error(request: Request, error: errors.ServiceError) -> JSONResponse:
        return _answer(request, error.status_code, str(error), error.headers or None)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, error: RequestValidationError) -> JSONResponse:
        if not _is_wes(request):
            return JSONResponse({"detail": _readable(error)}, status_code=422)
        return _answer(request, 400, "; ".join(_readable(error)))

    @app.exception_handler(httpx2.TransportError)
    async def unreachable(request: Request, error: httpx2.TransportError) -> JSONResponse:
        log.warning("the Kubernetes API did not answer %s %s: %r", request.method,
                    request.url.path, error)
        return _answer(request, 503, "the Kubernetes API cannot be reached right now; "
                       "try again in a moment", {"Retry-After": "5"})

    @app.exception_handler(Exception)
    async def unexpected(request: Request, error: Exception) -> JSONResponse:
        log.exception("unexpected error serving %s %s", request.method, request.url.path)
        return _answer(request, 500, "internal error; the service's log has the details")


def _readable(error: RequestValidationError) -> list[str]:
    """FastAPI's validation errors as sentences: where, and what is wrong."""
    found = []
    for item in error.errors():
        where = ".".join(str(part) for part in item.get("loc", ()) if part != "body")
        found.append(f"{where or 'body'}: {item.get('msg', 'invalid')}")
    return found
