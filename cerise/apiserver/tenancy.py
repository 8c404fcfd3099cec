"""Who is calling, and which namespace they reach: the `Tenant` every route works for.

Every API is served twice: at the root for the configured namespace, and under
``/ns/<namespace>`` for any namespace. In single-user mode (``CERISE_AUTH=none``) only the
configured namespace exists and nobody authenticates. In cluster mode a bearer token is
required; writes are made with the caller's own token, and reads from the shared cache
are allowed only when Kubernetes RBAC says the caller may read that namespace's jobs.
"""

from __future__ import annotations

from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Path, Request
from lightkube import AsyncClient

from cerise.apiserver import errors
from cerise.apiserver.settings import AuthMode, Settings
from cerise.archive.store import Archive
from cerise.kube import access
from cerise.kube.cache import ObjectCache
from cerise.model.exchange import Exchange

TENANT_PREFIX = "/ns/{namespace}"


@dataclass
class Services:
    """What the routes share: settings, the API client, the caches."""

    settings: Settings
    kube: AsyncClient
    jobs: ObjectCache
    resources: ObjectCache
    callers: access.Callers | None
    archive: Archive | None = None
    """The archive of finished jobs, if the service has one."""


@dataclass(frozen=True)
class Tenant:
    """A caller acting in one namespace."""

    namespace: str
    exchange: Exchange
    base_url: str
    """The URL under which the caller reaches this namespace's APIs (no trailing slash)."""
    prefix: str
    """The path of `base_url`: what comes before ``/jobs`` or ``/files``."""
    kube: AsyncClient
    """An API client acting for the caller."""
    services: Services
    token: str | None = None

    async def require(self, verb: str) -> None:
        """Raise Forbidden unless the caller may `verb` WorkflowJobs in this namespace."""
        callers = self.services.callers
        if callers is None or self.token is None:
            return
        if not await _checked(callers.allowed(self.token, self.namespace, verb)):
            raise errors.Forbidden(
                f"you may not {verb} Cerise jobs in namespace {self.namespace!r}")


async def _checked(check: Awaitable[bool]) -> bool:
    """The answer of an access check, its failures as the errors a caller reads."""
    try:
        return await check
    except access.NotAuthenticated as error:
        raise errors.NotAuthenticated(str(error)) from None
    except access.Busy as error:
        raise errors.TooManyRequests(str(error)) from None


def namespace_path(
    namespace: Annotated[str, Path(description="The Kubernetes namespace to work in.",
                                   max_length=63)],
) -> None:
    """Declares the ``/ns/{namespace}`` path parameter (read by `tenant`) for OpenAPI."""


def services(request: Request) -> Services:
    """The shared services, made at start-up."""
    found: Services = request.app.state.services
    return found


async def tenant(request: Request) -> Tenant:
    """The caller and the namespace the request's path reaches."""
    shared = services(request)
    settings = shared.settings
    namespace = request.path_params.get("namespace")
    prefix = ""
    if namespace is None:
        namespace = settings.namespace
    else:
        prefix = f"/ns/{namespace}"
        if settings.auth is AuthMode.NONE and namespace != settings.namespace:
            raise errors.NotFound(
                f"this service serves only namespace {settings.namespace!r}")
    try:
        exchange = settings.exchange.for_namespace(namespace)
    except ValueError:
        raise errors.NotFound(f"{namespace[:100]!r} is not a namespace name") from None
    base_url = str(request.base_url).rstrip("/") + prefix
    path_prefix = request.scope.get("root_path", "").rstrip("/") + prefix
    if shared.callers is None:
        return Tenant(namespace, exchange, base_url, path_prefix, shared.kube, shared)
    token = _bearer_token(request)
    # A client of its own is made only for a token the API server accepts.
    await _checked(shared.callers.allowed(token, namespace, "list"))
    return Tenant(namespace, exchange, base_url, path_prefix, shared.callers.client(token),
                  shared, token)


def _bearer_token(request: Request) -> str:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise errors.NotAuthenticated(
            "this service needs a Kubernetes bearer token: send 'Authorization: Bearer <token>'")
    return token.strip()


async def reader(request: Request) -> Tenant:
    """A tenant that may read the namespace's jobs and files."""
    found = await tenant(request)
    await found.require("list")
    return found


async def writer(request: Request) -> Tenant:
    """A tenant that may create jobs and files in the namespace."""
    found = await tenant(request)
    await found.require("create")
    return found


ReadTenant = Annotated[Tenant, Depends(reader)]
"""A caller allowed to read the namespace's jobs and files."""
WriteTenant = Annotated[Tenant, Depends(writer)]
"""A caller allowed to create jobs and files in the namespace."""
