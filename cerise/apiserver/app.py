"""The apiserver application: its routers, its shared services and its error answers."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import AsyncIterator

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from lightkube import AsyncClient
from lightkube.config.kubeconfig import KubeConfig
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from cerise.apiserver import errors, metrics, origin_guard
from cerise.apiserver.routers import cerise_jobs, dashboard, files, wes
from cerise.apiserver.settings import AuthMode, Settings
from cerise.apiserver.tenancy import TENANT_PREFIX, Services, namespace_path
from cerise.kube import access
from cerise.kube.cache import ObjectCache
from cerise.kube.jobs import ComputeResource, WorkflowJob

WES_PATH = "/ga4gh/wes/v1"
log = logging.getLogger(__name__)


def create_app(settings: Settings) -> FastAPI:
    """The ASGI application for `settings`; it connects to Kubernetes when it starts."""

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        config = KubeConfig.from_env().get()
        if config is None:
            raise RuntimeError("the Kubernetes configuration names no current context")
        kube = AsyncClient(config=config, field_manager="cerise-apiserver")
        watched = None if settings.auth is AuthMode.KUBERNETES else settings.namespace
        shared = Services(
            settings=settings, kube=kube,
            jobs=ObjectCache(kube, WorkflowJob, namespace=watched),
            resources=ObjectCache(kube, ComputeResource, namespace=watched),
            callers=access.Callers(config) if settings.auth is AuthMode.KUBERNETES else None,
        )
        app.state.services = shared
        tasks = [asyncio.create_task(cache.run()) for cache in (shared.jobs, shared.resources)]
        try:
            await asyncio.wait_for(asyncio.gather(shared.jobs.synced.wait(),
                                                  shared.resources.synced.wait()), 60)
            yield
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            if shared.callers is not None:
                await shared.callers.close()
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
    async def healthz() -> dict[str, str]:
        """Alive, and the caches are filled (the server answers only after they are)."""
        return {"status": "ok"}

    if settings.metrics_port is None:  # else on a port of its own (`metrics.serve`)
        app.add_api_route("/metrics", metrics.exposition, include_in_schema=False)

    for prefix, declared in (("", []), (TENANT_PREFIX, [Depends(namespace_path)])):
        app.include_router(cerise_jobs.router, prefix=prefix, dependencies=declared)
        app.include_router(wes.router, prefix=prefix + WES_PATH, dependencies=declared)
        app.include_router(files.router, prefix=prefix, dependencies=declared)
        app.include_router(dashboard.router, prefix=prefix, dependencies=declared)
    return app


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
