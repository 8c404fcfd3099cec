"""The service's doors: it answers only under its own names, and only its own pages (or
clients that are not browsers) change anything. Jupyter closes the same holes this way.

* **Host.** A request whose ``Host`` is not one of the service's names (``localhost``,
  ``127.0.0.1``, ``[::1]``, the exchange URL's host, ``CERISE_PUBLIC_HOSTS``) is answered
  400, so a page that DNS rebinding has pointed at 127.0.0.1 reaches nothing, and every
  URL the service builds from ``Host`` names it as its owner configured. Only
  ``/healthz`` and ``/livez`` (asked by pod address by kubelet's probes; they tell only
  whether the service is ready or alive) are exempt.
* **Origin.** A request that may change state (any method but GET, HEAD and OPTIONS)
  from a browser page of another origin is answered 403: an ``Origin`` (or, lacking one,
  a ``Referer``) that is neither the service's own nor in ``CERISE_ALLOWED_ORIGINS``, or
  ``Sec-Fetch-Site: cross-site``. Browsers send ``Origin`` with every such request, forms
  and no-cors fetches included; non-browser clients (cerise-client, wes-client, the CLI,
  curl) send none and pass.
* **Proxies.** ``X-Forwarded-Proto``, ``-Host`` and ``-For`` count only from a peer in
  ``CERISE_TRUSTED_PROXIES``; from anyone else they are removed. A forwarded host must be
  one of the service's names like any other.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from cerise.apiserver.settings import Settings

LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
EXEMPT_PATHS = frozenset({"/healthz", "/livez"})
"""Paths answered whatever the Host: they change nothing and tell nothing."""
FORWARDED = (b"x-forwarded-proto", b"x-forwarded-host", b"x-forwarded-for")
_DEFAULT_PORTS = {"http": 80, "https": 443}


@dataclass(frozen=True)
class Refusal:
    """Why a request is not served: the status to answer with, and a message for a person."""

    status: int
    message: str


def own_hosts(settings: Settings) -> frozenset[str]:
    """The host names (without port) the service answers under; ``*.domain`` for all below."""
    exchange_host = urlsplit(settings.exchange.url).hostname
    return LOOPBACK_NAMES | settings.public_hosts | (
        {exchange_host.lower()} if exchange_host else set())


def host_name(host: str) -> str | None:
    """The name in a ``Host`` header value (lower case, port and brackets removed), or None
    if the value is not a host with an optional port."""
    try:
        parts = urlsplit(f"//{host}")
        parts.port  # noqa: B018 (raises ValueError on a bad port)
    except ValueError:
        return None
    if parts.hostname is None or parts.username is not None or parts.path:
        return None
    return parts.hostname.rstrip(".")


def is_own_host(host: str, hosts: Collection[str]) -> bool:
    """Whether a ``Host`` header value names the service."""
    name = host_name(host)
    if name is None:
        return False
    labels = name.split(".")
    return name in hosts or any(
        f"*.{'.'.join(labels[i:])}" in hosts for i in range(1, len(labels)))


def origin_of(url: str) -> str | None:
    """``scheme://host[:port]`` of a URL (default port left out, lower case); None if it
    has none (e.g. ``null``)."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS or not parts.hostname:
        return None
    host = parts.hostname.rstrip(".")
    shown = f"[{host}]" if ":" in host else host
    return f"{scheme}://{shown}" + (f":{port}" if port and port != _DEFAULT_PORTS[scheme] else "")


def refusal(*, method: str, path: str, scheme: str, headers: Mapping[str, str],
            hosts: Collection[str], origins: Collection[str]) -> Refusal | None:
    """None if the request may be served; else why not (see the module docstring)."""
    if path in EXEMPT_PATHS:
        return None
    host = headers.get("host")
    if host is not None and not is_own_host(host, hosts):
        return Refusal(400, f"this service does not answer to the host name {host[:100]!r}; "
                       "its operator can add it to CERISE_PUBLIC_HOSTS")
    if method.upper() in SAFE_METHODS:
        return None
    if headers.get("sec-fetch-site", "").lower() == "cross-site":
        return Refusal(403, "a page of another site may not change anything here")
    claimed = headers.get("origin") or headers.get("referer")
    if claimed is None:
        return None
    own = origin_of(f"{scheme}://{host}") if host is not None else None
    origin = origin_of(claimed)
    if origin is None or (origin != own and origin not in origins):
        shown = origin or claimed.strip()[:100]
        return Refusal(403, f"a page of {shown!r} may not change anything here; the service's "
                       "operator can allow that origin with CERISE_ALLOWED_ORIGINS")
    return None


class OriginGuard:
    """ASGI middleware that refuses foreign hosts and cross-origin writes (module docstring)."""

    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.hosts = own_hosts(settings)
        self.origins = settings.allowed_origins
        self.proxies = settings.trusted_proxies

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        scope = self._forwarded(scope)
        headers = Headers(scope=scope)
        found = refusal(method=scope["method"], path=scope["path"], scheme=scope["scheme"],
                        headers=headers, hosts=self.hosts, origins=self.origins)
        if found is None:
            await self.app(scope, receive, send)
            return
        body: dict[str, str | int] = {"detail": found.message}
        if "/ga4gh/wes/v1" in scope["path"]:
            body = {"msg": found.message, "status_code": found.status}
        data = json.dumps(body).encode()
        await send({"type": "http.response.start", "status": found.status, "headers": [
            (b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]})
        await send({"type": "http.response.body", "body": data})

    def _forwarded(self, scope: Scope) -> Scope:
        """The scope with a trusted proxy's forwarded headers applied, others' removed."""
        raw: list[tuple[bytes, bytes]] = scope["headers"]
        if not any(name in FORWARDED for name, _ in raw):
            return scope
        kept = [(name, value) for name, value in raw if name not in FORWARDED]
        if not self._trusted(scope.get("client")):
            return {**scope, "headers": kept}
        forwarded = {name.decode(): value.decode("latin-1") for name, value in raw
                     if name in FORWARDED}
        scope = {**scope, "headers": kept}
        proto = _last(forwarded.get("x-forwarded-proto", ""))
        if proto in _DEFAULT_PORTS:
            scope["scheme"] = proto
        host = _last(forwarded.get("x-forwarded-host", ""))
        if host:
            scope["headers"] = [(n, v) for n, v in kept if n != b"host"] + [
                (b"host", host.encode("latin-1"))]
        client = _last(forwarded.get("x-forwarded-for", ""))
        if client:
            scope["client"] = (client, 0)
        return scope

    def _trusted(self, client: Iterable[object] | None) -> bool:
        if not self.proxies or not client:
            return False
        try:
            peer = ipaddress.ip_address(str(next(iter(client))))
        except ValueError:
            return False
        return any(peer.version == net.version and peer in net for net in self.proxies)


def _last(value: str) -> str:
    """The entry the nearest proxy added to a comma-separated forwarded header."""
    return value.rsplit(",", 1)[-1].strip()
