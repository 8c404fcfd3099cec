"""Prometheus metrics of the apiserver, served at ``/metrics``.

Requests are counted by method (one of `METHODS`, else ``other``), route template
(``/jobs/{job_id}``, not each id) and status, with their latency, so the number of series
stays bounded whatever callers send; the file exchange counts the bytes it receives and
sends. In cluster mode they are served on a port of their own (`serve`), not to tenants.
"""

from __future__ import annotations

import logging
import time

from fastapi.responses import Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    start_http_server,
)
from starlette.types import ASGIApp, Message, Receive, Scope, Send

REGISTRY = CollectorRegistry(auto_describe=True)
REQUESTS = Counter("cerise_api_requests", "HTTP requests answered, by route and status.",
                   ["method", "route", "status"], registry=REGISTRY)
LATENCY = Histogram("cerise_api_request_seconds", "Time to answer an HTTP request, by route.",
                    ["method", "route"], registry=REGISTRY,
                    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5,
                             5, 10, 30, 60))
EXCHANGE_BYTES = Counter("cerise_exchange_bytes", "Bytes moved through the WebDAV exchange.",
                         ["direction"], registry=REGISTRY)
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH", "MKCOL",
                     "PROPFIND"})
"""Methods counted under their own name; any other counts as ``other``."""
log = logging.getLogger(__name__)


def exposition() -> Response:
    """Prometheus metrics (request counts and latency, exchange bytes)."""
    return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)


def serve(address: str, port: int) -> None:
    """Serve ``/metrics`` on a port of its own, from a thread; a port that cannot be had is
    logged and the apiserver goes on without it."""
    try:
        start_http_server(port, addr=address, registry=REGISTRY)
    except OSError as error:
        log.error("metrics endpoint not started: cannot listen on %s:%d: %s", address, port,
                  error.strerror or error)
        return
    log.info("metrics at http://%s:%d/metrics", address, port)


def _route(scope: Scope) -> str:
    """The matched route's template, rebuilt from the path and its parameters; 'unmatched'
    when no route matched (so that scanners' random paths add no series)."""
    if "endpoint" not in scope:
        return "unmatched"
    params = scope.get("path_params") or {}
    segments = scope["path"].split("/")
    if "path" in params:  # the exchange's catch-all `/files/{path:path}`
        cut = segments.index("files") + 1 if "files" in segments else len(segments)
        segments = [*segments[:cut], "{path}"]
    for name, value in params.items():
        if name != "path" and str(value) in segments:
            segments[segments.index(str(value))] = f"{{{name}}}"
    return "/".join(segments)


class RequestMetrics:
    """ASGI middleware that counts and times every HTTP request."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            route = _route(scope)
            method = scope["method"] if scope["method"] in METHODS else "other"
            REQUESTS.labels(method, route, str(status)).inc()
            LATENCY.labels(method, route).observe(time.perf_counter() - started)
