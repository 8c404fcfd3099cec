"""The errors the apiserver's services raise, each with the HTTP status it answers with."""

from __future__ import annotations


class ServiceError(Exception):
    """A request that cannot be served; the message is for the person who made it."""

    status_code = 400
    headers: dict[str, str] = {}  # noqa: RUF012 — read only: response headers for the answer


class BadRequest(ServiceError):
    """Malformed or unacceptable input; retrying it unchanged will not help."""


class NotAuthenticated(ServiceError):
    """No credentials, or credentials the Kubernetes API did not accept."""

    status_code = 401


class Forbidden(ServiceError):
    """The caller may not do this (Kubernetes RBAC said no)."""

    status_code = 403


class NotFound(ServiceError):
    """No such job, run or file (or none the caller may see)."""

    status_code = 404


class MethodNotAllowed(ServiceError):
    """The method does not apply to this resource (e.g. WebDAV MKCOL where one exists)."""

    status_code = 405
    headers = {"Allow": "OPTIONS, GET, HEAD, PUT, DELETE, MKCOL, PROPFIND"}  # noqa: RUF012


class UnsupportedMediaType(ServiceError):
    """A body where none is understood (WebDAV MKCOL)."""

    status_code = 415


class InsufficientStorage(ServiceError):
    """The file exchange's file system is full."""

    status_code = 507


class Conflict(ServiceError):
    """The request conflicts with what exists."""

    status_code = 409


class TooLarge(ServiceError):
    """The request body is larger than the service accepts."""

    status_code = 413


class TooManyRequests(ServiceError):
    """The service is asked too much at once; retrying after a second may help."""

    status_code = 429
    headers = {"Retry-After": "1"}  # noqa: RUF012


class Unavailable(ServiceError):
    """The service cannot do this now (e.g. no compute resource is configured)."""

    status_code = 503


def from_status(code: int, message: str) -> ServiceError:
    """The error for an HTTP status the Kubernetes API answered a caller's request with."""
    kinds: dict[int, type[ServiceError]] = {
        401: NotAuthenticated, 403: Forbidden, 404: NotFound, 409: Conflict, 413: TooLarge,
    }
    kind = kinds.get(code)
    if kind is None:
        kind = BadRequest if 400 <= code < 500 else Unavailable
    return kind(message)
