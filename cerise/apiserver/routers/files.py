"""The file exchange over WebDAV (class 1), under ``/files``: inputs in, outputs out.

Our own small handler rather than a WebDAV library such as wsgidav: each tenant has its own
root, callers pass the apiserver's auth dependencies, uploads stream to disk without
blocking the event loop, and PROPFIND answers XML even where cerise-client parses an error.

* Layout: ``input/`` belongs to clients (made on demand); ``output/<job uid>/`` and
  ``logs/`` are written by the operator and read-only here. Nothing else in the exchange
  directory is served.
* Names: any a POSIX file system allows (all but ``/`` and NUL: spaces, quotes,
  backslashes, ``$(…)``, newlines…), percent-encoded in URLs as usual.
* OPTIONS answers ``DAV: 1``. GET and HEAD serve a file, or a collection as a plain-text
  listing (one member a line as a relative URL, percent-encoded so that any name stays one
  line; collections end in ``/``). PUT streams to a temporary file that replaces the
  target (201 new, 204 replaced), making missing collections; a file over the per-file cap
  is a 413 and one that would take ``input/`` over its quota a 507, and neither leaves
  anything behind (see `cerise.apiserver.settings`). MKCOL
  answers 201, 405 if the resource exists, 415 with a body and 409 if the parent is
  missing (except ``input/`` itself, made on demand). DELETE answers 204, recursively.
* PROPFIND answers 207 for Depth 0 or 1 (no Depth header means 1; ``infinity`` is refused
  with 403 ``propfind-finite-depth``). The request body is not read: every PROPFIND is
  answered as ``allprop``. Hrefs are absolute paths; collections' end in ``/``. Errors are
  a ``multistatus`` too (no hrefs; a 404 for a missing resource), because cerise-client
  parses the body whatever the status.
* Refused: an encoded ``/`` or NUL in the raw path, ``.`` and ``..`` segments (400); a
  path that leads, symbolic links followed, outside the exchange (403), or outside
  ``input/`` for writes (403). No LOCK, COPY, MOVE or PROPPATCH.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import errno
import mimetypes
import os
import re
import secrets
import shutil
import stat
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from email.utils import formatdate
from pathlib import Path
from typing import Any, BinaryIO, TypeVar
from urllib.parse import quote

from fastapi import APIRouter, Request, Response
from fastapi.responses import FileResponse, PlainTextResponse
from starlette.convertors import PathConvertor, register_url_convertor
from starlette.requests import ClientDisconnect
from starlette.types import Receive, Scope, Send

from cerise.apiserver import errors, metrics
from cerise.apiserver.tenancy import ReadTenant, Tenant, WriteTenant
from cerise.model.exchange import contains

router = APIRouter(tags=["files"])

INPUT = "input"
SERVED = frozenset({INPUT, "output", "logs"})
"""The top-level collections of a tenant's exchange that are served."""
CHUNK = 1 << 20
"""How much of an upload is gathered before each write to disk."""
ALLOW = errors.MethodNotAllowed.headers["Allow"]
SAFE_HEADERS = {"X-Content-Type-Options": "nosniff", "Content-Security-Policy": "sandbox"}
"""Served files are data: a browser must not run an uploaded page in the API's origin."""

LISTING_SAFE = "!$&'()*+,;=:@~"
"""Characters a listing line leaves as they are (RFC 3986 path characters)."""

_ENCODED = re.compile(rb"%(2f|00)", re.IGNORECASE)
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")
"""Characters XML 1.0 cannot carry, not even escaped."""
_IN_FLIGHT: dict[Path, int] = {}
"""Bytes received so far by the uploads under way, by input/ directory."""
_Handler = TypeVar("_Handler", bound=Callable[..., Any])


class _AnyPath(PathConvertor):
    """Starlette's ``path``, but a name may hold a newline (``.`` does not match one)."""

    regex = r"[\s\S]*"


register_url_convertor("anypath", _AnyPath())


@dataclass(frozen=True)
class _Resource:
    """A file or collection: its segments below the exchange root and its status."""

    segments: tuple[str, ...]
    status: os.stat_result

    @property
    def collection(self) -> bool:
        return stat.S_ISDIR(self.status.st_mode)


def _route(*methods: str) -> Callable[[_Handler], _Handler]:
    """Register a handler for the exchange root and everything below it, not in OpenAPI."""

    def register(handler: _Handler) -> _Handler:
        for path in ("/files", "/files/{path:anypath}"):
            router.api_route(path, methods=list(methods), include_in_schema=False)(handler)
        return handler

    return register


@_route("OPTIONS")
async def options() -> Response:
    """What this WebDAV server offers."""
    return Response(headers={"DAV": "1", "Allow": ALLOW, "MS-Author-Via": "DAV"})


@_route("GET", "HEAD")
async def get_file(request: Request, tenant: ReadTenant) -> Response:
    """A file, or a collection's listing (one name a line, collections ending in ``/``)."""
    segments = _segments(request)
    with _os_errors():
        found = await asyncio.to_thread(_resources, tenant, segments, children=True)
    if found is None:
        raise errors.NotFound(f"{_show(segments)} does not exist")
    real, resources = found
    if not resources[0].collection:
        with _os_errors():
            opened = await asyncio.to_thread(_open, real)
        if opened is None:  # deleted (its job was) or replaced since it was looked up
            raise errors.NotFound(f"{_show(segments)} does not exist")
        response = _OpenFileResponse(*opened, media_type=mimetypes.guess_type(real.name)[0],
                                     headers=SAFE_HEADERS)
        if request.method == "GET":
            metrics.EXCHANGE_BYTES.labels("out").inc(opened[1].st_size)
        return response
    listing = "".join(f"{quote(_name(item), safe=LISTING_SAFE + '/')}\n"
                      for item in resources[1:])
    return PlainTextResponse(listing, headers=SAFE_HEADERS)


@_route("PUT")
async def put_file(request: Request, tenant: WriteTenant) -> Response:
    """Store the body as a file below ``input/``: 201 if it is new, 204 if it was replaced."""
    segments = _segments(request)
    if request.url.path.endswith("/"):
        raise errors.BadRequest("a file's path cannot end in '/'")
    settings = tenant.services.settings
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > settings.max_upload_bytes:
        raise _too_large(settings.max_upload_bytes)
    with _os_errors():
        target = await asyncio.to_thread(_upload_target, tenant, segments)
        inputs, used = await asyncio.to_thread(_input_usage, tenant)
        if declared.isdigit() and used + _IN_FLIGHT.get(inputs, 0) + int(
                declared) > settings.quota_bytes:
            raise _full(settings.quota_bytes)
        replaced = await _receive(request, target, _Bounds(
            inputs, used, settings.max_upload_bytes, settings.quota_bytes))
    return Response(status_code=204 if replaced else 201)


@_route("MKCOL")
async def make_collection(request: Request, tenant: WriteTenant) -> Response:
    """Make a collection below ``input/``: 201; 405 if something exists there."""
    segments = _segments(request)
    if "transfer-encoding" in request.headers or request.headers.get(
            "content-length", "0") != "0":
        raise errors.UnsupportedMediaType("MKCOL takes no body")
    with _os_errors():
        await asyncio.to_thread(_make_collection, tenant, segments)
    return Response(status_code=201)


@_route("DELETE")
async def delete(request: Request, tenant: WriteTenant) -> Response:
    """Delete a file or a whole collection below ``input/``: 204."""
    segments = _segments(request)
    with _os_errors():
        await asyncio.to_thread(_delete, tenant, segments)
    return Response(status_code=204)


@_route("PROPFIND")
async def propfind(request: Request, tenant: ReadTenant) -> Response:
    """The properties of a resource and, at Depth 1 (the default), of its members."""
    depth = request.headers.get("depth", "1").strip().lower()
    if depth == "infinity":
        error = ET.Element("D:error", {"xmlns:D": "DAV:"})
        ET.SubElement(error, "D:propfind-finite-depth")
        return _xml(error, 403)
    try:
        if depth not in ("0", "1"):
            raise errors.BadRequest("the Depth header must be 0, 1 or infinity")
        segments = _segments(request)
        with _os_errors():
            found = await asyncio.to_thread(_resources, tenant, segments, depth == "1")
        if found is None:
            raise errors.NotFound(f"{_show(segments)} does not exist")
    except errors.ServiceError as error:
        return _multistatus(tenant, [], error.status_code, str(error))
    return _multistatus(tenant, found[1], 207)


def _segments(request: Request) -> tuple[str, ...]:
    """The request's decoded path below ``/files``, refusing ways out of the exchange."""
    if _ENCODED.search(request.scope.get("raw_path") or b""):
        raise errors.BadRequest("the path contains an encoded '/' or NUL")
    path: str = request.path_params.get("path", "")
    segments = tuple(segment for segment in path.split("/") if segment)
    if not all(_acceptable(segment) for segment in segments):
        raise errors.BadRequest("the path contains a '.' or '..' segment")
    return segments


def _acceptable(name: str) -> bool:
    """Whether `name` is one path segment that the exchange serves."""
    if name in ("", ".", "..") or "\x00" in name or "/" in name:
        return False
    try:
        name.encode()
    except UnicodeEncodeError:  # not UTF-8 on disk
        return False
    return True


def _resources(
    tenant: Tenant, segments: tuple[str, ...], children: bool
) -> tuple[Path, list[_Resource]] | None:
    """The real path of a resource, it and (if `children`) its members; None if missing."""
    if segments and segments[0] not in SERVED:
        return None
    root = tenant.exchange.root
    real = _confined(root, segments, root)
    status = _status(real)
    if status is None:
        return None
    found = [_Resource(segments, status)]
    if children and found[0].collection:
        real_root = Path(os.path.realpath(root))
        for name in sorted(os.listdir(real)):
            if not _acceptable(name) or not (segments or name in SERVED):
                continue
            member = Path(os.path.realpath(real / name))
            with contextlib.suppress(OSError):  # an unreadable member is left out
                member_status = _status(member) if contains(real_root, member) else None
                if member_status is not None:
                    found.append(_Resource((*segments, name), member_status))
    return real, found


def _open(path: Path) -> tuple[int, os.stat_result] | None:
    """A descriptor of the regular file at `path` and its status; None if it is gone or is
    no longer a regular file (non-blocking: a pipe put in its place cannot hold the open)."""
    try:
        descriptor = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except (FileNotFoundError, NotADirectoryError):
        return None
    status = os.fstat(descriptor)
    if not stat.S_ISREG(status.st_mode):
        os.close(descriptor)
        return None
    return descriptor, status


class _OpenFileResponse(FileResponse):
    """A file sent from the descriptor opened while answering, not reopened by its name:
    a file deleted or replaced meanwhile (its job deleted, an input uploaded again) is sent
    whole as it was opened, never as headers followed by a cut-off body. Starlette reads it
    through the descriptor's /proc/self/fd link, which keeps its ranges and HEAD."""

    def __init__(self, descriptor: int, status: os.stat_result, media_type: str | None,
                 headers: Mapping[str, str]) -> None:
        super().__init__(f"/proc/self/fd/{descriptor}", stat_result=status,
                         media_type=media_type or "text/plain",
                         headers={"ETag": _etag(status), **headers})
        self.descriptor = descriptor
        self.chunk_size = CHUNK  # fewer thread hand-offs than starlette's 64 KiB

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            os.close(self.descriptor)


def _status(path: Path) -> os.stat_result | None:
    """The status of a file or directory at `path` (no device or pipe), None if absent."""
    try:
        status = path.stat()
    except (FileNotFoundError, NotADirectoryError):
        return None
    return status if stat.S_ISDIR(status.st_mode) or stat.S_ISREG(status.st_mode) else None


def _confined(root: Path, segments: Sequence[str], within: Path) -> Path:
    """The real path of `segments` below `root`, if it lies in `within` (links followed)."""
    real = Path(os.path.realpath(root.joinpath(*segments)))
    if not contains(Path(os.path.realpath(within)), real):
        where = "input/" if within != root else "the file exchange"
        raise errors.Forbidden(f"{_show(segments)} leads outside {where} (a symbolic link)")
    return real


def _require_input(segments: tuple[str, ...]) -> None:
    if not segments or segments[0] != INPUT:
        raise errors.Forbidden(
            f"{_show(segments)} is read-only: clients write below input/ only (output/ and "
            "logs/ are Cerise's)")


def _writable(tenant: Tenant, segments: tuple[str, ...]) -> Path:
    """The real path that a write to `segments` touches, refusing all but ``input/``."""
    _require_input(segments)
    root = tenant.exchange.root
    _confined(root, segments[:1], root)
    return _confined(root, segments, root / INPUT)


def _upload_target(tenant: Tenant, segments: tuple[str, ...]) -> Path:
    """Where an upload goes; its collection (and any missing above it) is made."""
    target = _writable(tenant, segments)
    if len(segments) < 2 or target.is_dir():
        raise errors.MethodNotAllowed(f"{_show(segments)} is a collection")
    target.parent.mkdir(parents=True, exist_ok=True)
    return target


@dataclass(frozen=True)
class _Bounds:
    """What one upload may take: `cap` bytes, and `inputs` (holding `used` bytes when it
    began, besides the uploads in flight) at most `quota`."""

    inputs: Path
    used: int
    cap: int
    quota: int


async def _receive(request: Request, target: Path, bounds: _Bounds) -> bool:
    """Stream the body into `target`, replacing it atomically; whether it existed."""
    temporary = target.with_name(f".{secrets.token_hex(8)}.upload")
    handle = await asyncio.to_thread(_create, temporary)
    done = False
    # Receive the next megabyte while a thread writes the last one.
    writing: asyncio.Future[int] | None = None
    received = 0
    try:
        buffer = bytearray()
        async for chunk in request.stream():
            received += len(chunk)
            _IN_FLIGHT[bounds.inputs] = _IN_FLIGHT.get(bounds.inputs, 0) + len(chunk)
            if received > bounds.cap:
                raise _too_large(bounds.cap)
            if bounds.used + _IN_FLIGHT[bounds.inputs] > bounds.quota:
                raise _full(bounds.quota)
            buffer += chunk
            if len(buffer) >= CHUNK:
                if writing is not None:
                    await writing
                writing = asyncio.ensure_future(asyncio.to_thread(handle.write, bytes(buffer)))
                buffer.clear()
        if writing is not None:
            await writing
        await asyncio.to_thread(handle.write, buffer)
        await asyncio.to_thread(handle.close)
        existed = await asyncio.to_thread(_replace, temporary, target)
        metrics.EXCHANGE_BYTES.labels("in").inc(received)
        done = True
        return existed
    except ClientDisconnect:
        raise errors.BadRequest("the upload was interrupted") from None
    finally:
        left = _IN_FLIGHT.get(bounds.inputs, 0) - received
        if left > 0:
            _IN_FLIGHT[bounds.inputs] = left
        else:
            _IN_FLIGHT.pop(bounds.inputs, None)
        if not done:
            if writing is not None:
                with contextlib.suppress(Exception):
                    await writing
            handle.close()
            with contextlib.suppress(FileNotFoundError):
                temporary.unlink()


def _input_usage(tenant: Tenant) -> tuple[Path, int]:
    """The real path of the tenant's ``input/`` and the bytes its regular files hold (links
    not followed)."""
    directory = Path(os.path.realpath(tenant.exchange.root / INPUT))
    total = 0
    pending = [directory]
    while pending:
        try:
            entries = list(os.scandir(pending.pop()))
        except (FileNotFoundError, NotADirectoryError):
            continue
        for entry in entries:
            with contextlib.suppress(FileNotFoundError):
                if entry.is_dir(follow_symlinks=False):
                    pending.append(Path(entry.path))
                elif entry.is_file(follow_symlinks=False):
                    total += entry.stat(follow_symlinks=False).st_size
    return directory, total


def _too_large(cap: int) -> errors.TooLarge:
    return errors.TooLarge(f"a file in the exchange may hold at most {_size(cap)}; nothing "
                           "was stored")


def _full(quota: int) -> errors.InsufficientStorage:
    return errors.InsufficientStorage(
        f"input/ of this namespace would hold more than its quota of {_size(quota)}; nothing "
        "was stored: delete inputs no longer needed (DELETE /files/input/<collection>/)")


def _size(count: int) -> str:
    for unit, shift in (("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if count >= 1 << shift:
            return f"{count / (1 << shift):g} {unit}"
    return f"{count} bytes"


def _create(path: Path) -> BinaryIO:
    """A new file to write, never opened through a symbolic link."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    return os.fdopen(os.open(path, flags, 0o666), "wb")


def _replace(temporary: Path, target: Path) -> bool:
    existed = os.path.lexists(target)
    os.replace(temporary, target)
    return existed


def _make_collection(tenant: Tenant, segments: tuple[str, ...]) -> None:
    target = _writable(tenant, segments)
    if len(segments) > 2 and not target.parent.is_dir():
        raise errors.Conflict(
            f"the collection above {_show(segments)} does not exist: make it first")
    target.parent.mkdir(parents=True, exist_ok=True)  # input/, on demand
    try:
        target.mkdir()
    except FileExistsError:
        raise errors.MethodNotAllowed(f"{_show(segments)} already exists") from None


def _delete(tenant: Tenant, segments: tuple[str, ...]) -> None:
    """Delete the file, link or collection (with its contents) named by `segments`."""
    _require_input(segments)
    if len(segments) < 2:
        raise errors.Forbidden("input/ itself cannot be deleted")
    victim = _writable(tenant, segments[:-1]) / segments[-1]
    if victim.is_symlink() or not victim.is_dir():
        try:
            victim.unlink()
        except FileNotFoundError:
            raise errors.NotFound(f"{_show(segments)} does not exist") from None
    else:
        shutil.rmtree(victim)


@contextlib.contextmanager
def _os_errors() -> Iterator[None]:
    """Turn a file system error into an answer (without the server's paths)."""
    try:
        yield
    except OSError as error:
        kind = _ERRNO_KINDS.get(error.errno or 0, errors.Unavailable)
        reason = error.strerror or type(error).__name__
        raise kind(f"the file exchange could not do this: {reason}") from None


_ERRNO_KINDS: dict[int, type[errors.ServiceError]] = {
    errno.ENOENT: errors.NotFound,
    errno.EACCES: errors.Forbidden,
    errno.EPERM: errors.Forbidden,
    errno.EROFS: errors.Forbidden,
    errno.ELOOP: errors.Forbidden,
    errno.ENAMETOOLONG: errors.BadRequest,
    errno.EEXIST: errors.Conflict,
    errno.ENOTDIR: errors.Conflict,
    errno.EISDIR: errors.Conflict,
    errno.ENOTEMPTY: errors.Conflict,
    errno.ENOSPC: errors.InsufficientStorage,
    errno.EDQUOT: errors.InsufficientStorage,
}


def _multistatus(
    tenant: Tenant, resources: Sequence[_Resource], status: int, description: str = ""
) -> Response:
    root = ET.Element("D:multistatus", {"xmlns:D": "DAV:"})
    for resource in resources:
        response = ET.SubElement(root, "D:response")
        ET.SubElement(response, "D:href").text = _href(tenant, resource)
        propstat = ET.SubElement(response, "D:propstat")
        prop = ET.SubElement(propstat, "D:prop")
        for name, value in _properties(resource):
            ET.SubElement(prop, f"D:{name}").text = value
        if resource.collection:
            ET.SubElement(prop, "D:resourcetype").append(ET.Element("D:collection"))
        else:
            ET.SubElement(prop, "D:resourcetype")
        ET.SubElement(propstat, "D:status").text = "HTTP/1.1 200 OK"
    if description:
        ET.SubElement(root, "D:responsedescription").text = description
    return _xml(root, status)


def _properties(resource: _Resource) -> list[tuple[str, str]]:
    status = resource.status
    modified = datetime.datetime.fromtimestamp(status.st_mtime, datetime.UTC)
    name = resource.segments[-1] if resource.segments else "files"
    found = [
        ("displayname", _NOT_XML.sub("\ufffd", name)),  # the href has it exactly
        ("creationdate", modified.strftime("%Y-%m-%dT%H:%M:%SZ")),
        ("getlastmodified", formatdate(status.st_mtime, usegmt=True)),
    ]
    if not resource.collection:
        kind = mimetypes.guess_type(resource.segments[-1])[0] or "application/octet-stream"
        found += [("getcontentlength", str(status.st_size)), ("getcontenttype", kind),
                  ("getetag", _etag(status))]
    return found


def _href(tenant: Tenant, resource: _Resource) -> str:
    """The absolute path of a resource as the caller reaches it."""
    path = quote("/".join(resource.segments))
    if resource.collection and path:
        path += "/"
    return f"{tenant.prefix}/files/{path}"


def _xml(element: ET.Element, status: int) -> Response:
    body = ET.tostring(element, encoding="utf-8", xml_declaration=True)
    return Response(body, status_code=status, media_type="application/xml; charset=utf-8")


def _etag(status: os.stat_result) -> str:
    return f'"{status.st_mtime_ns:x}-{status.st_size:x}"'


def _name(resource: _Resource) -> str:
    return resource.segments[-1] + ("/" if resource.collection else "")


def _show(segments: Sequence[str]) -> str:
    path = "/".join(segments)
    return repr(path[:200] + ("…" if len(path) > 200 else "")) if path else "the exchange root"
