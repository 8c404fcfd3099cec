"""Fetching from the web, behind the fence of `cerise.model.webfence`: input files for
staging, workflows and Specialisation archives for the operator. The one http client.

Redirects are followed here, at most `MAX_REDIRECTS`, and only to http(s). For each URL
the host is resolved once, every address is put to the fence, and the connection goes to
an address that passed (TLS still checks the certificate against the host name, which is
also sent as SNI): a DNS answer that changes between the check and the connection
(rebinding) cannot lead anywhere else. No HTTP proxy is used, since the fence must judge
the address actually reached. A body larger than `limit` bytes, or a fetch taking more
than `timeout` seconds in all, is abandoned.

`post` sends one request (a job's callback) and follows no redirect.

Errors say what went wrong with the URL: `Refused` (a rule refuses it: fetching again
will not help), `HttpStatus` (the server's answer), `TimedOut`, or plain `FetchFailed`
(the network or the server failed).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import ipaddress
import socket
import ssl
from collections.abc import AsyncGenerator, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import httpx

from cerise.model.webfence import Address, Fence

MAX_REDIRECTS = 10
READ_TIMEOUT = 60.0
"""Seconds without a byte before a fetch fails (besides the caller's time-out in all)."""
CONNECT_TIMEOUT = 20.0
CHUNK = 1 << 20
_REDIRECTS = {301, 302, 303, 307, 308}


class FetchFailed(Exception):
    """The URL could not be fetched; the message says why. Trying again may help."""


class Refused(FetchFailed):
    """A rule refuses the fetch (the fence, a redirect elsewhere): trying again will not help."""


class TooLarge(Refused):
    """The document is larger than allowed."""


class HttpStatus(FetchFailed):
    """The server answered with an error `status`."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


class TimedOut(FetchFailed):
    """The fetch took longer than allowed."""


@dataclass(frozen=True)
class Downloaded:
    """A file fetched: its size and sha256 (hex)."""

    size: int
    sha256: str


async def download(url: str, target: Path, *, fence: Fence, limit: int,
                   timeout: float) -> Downloaded:
    """Fetch `url` into the file `target` (created or truncated), hashing it on the way."""
    digest = hashlib.sha256()
    size = 0
    handle = await asyncio.to_thread(target.open, "wb")
    try:
        async with contextlib.aclosing(_body(url, fence, limit, timeout)) as chunks:
            async for chunk in chunks:
                await asyncio.to_thread(_write, handle, digest, chunk)
                size += len(chunk)
    finally:
        await asyncio.to_thread(handle.close)
    return Downloaded(size, digest.hexdigest())


async def fetch_bytes(url: str, *, fence: Fence, limit: int, timeout: float) -> bytes:
    """The body of `url`, whole."""
    data = bytearray()
    async with contextlib.aclosing(_body(url, fence, limit, timeout)) as chunks:
        async for chunk in chunks:
            data += chunk
    return bytes(data)


def _write(handle: BinaryIO, digest: hashlib._Hash, chunk: bytes) -> None:
    handle.write(chunk)
    digest.update(chunk)


async def _body(url: str, fence: Fence, limit: int, timeout: float) -> AsyncGenerator[bytes]:
    """The body of `url` after redirects, chunk by chunk (close it: `contextlib.aclosing`).

    Every wait is bounded by one deadline rather than a timeout around the whole loop,
    which would fire while the caller, not this generator, is running.
    """
    deadline = asyncio.get_running_loop().time() + timeout
    tls = await asyncio.to_thread(httpx.create_ssl_context)  # loading CAs blocks: a thread
    current = url
    with _failures(url, timeout):
        for _ in range(MAX_REDIRECTS + 1):
            shown = url if current == url else f"{url} (redirected to {current})"
            async with contextlib.AsyncExitStack() as stack:
                response = await _open(stack, current, shown, fence, tls, deadline)
                if response.status_code in _REDIRECTS and "location" in response.headers:
                    # against the URL as named, not the address it was fetched from
                    current = str(httpx.URL(current).join(response.headers["location"]))
                    continue
                if response.status_code != 200:
                    raise HttpStatus(f"{shown}: HTTP {response.status_code}",
                                     response.status_code)
                declared = response.headers.get("content-length", "")
                if declared.isdigit() and int(declared) > limit:
                    raise TooLarge(f"{shown} is larger than {_size(limit)}")
                size = 0
                chunks = response.aiter_bytes(CHUNK)
                while True:
                    async with asyncio.timeout_at(deadline):
                        chunk = await anext(chunks, b"")
                    if not chunk:
                        return
                    size += len(chunk)
                    if size > limit:
                        raise TooLarge(f"{shown} is larger than {_size(limit)}")
                    yield chunk
        raise Refused(f"{url}: more than {MAX_REDIRECTS} redirects")


async def post(url: str, body: bytes, headers: Mapping[str, str], *, fence: Fence,
               timeout: float) -> int:
    """POST `body` to `url` once, behind the fence, following no redirect; the answer's
    HTTP status (its body is not read)."""
    deadline = asyncio.get_running_loop().time() + timeout
    tls = await asyncio.to_thread(httpx.create_ssl_context)
    with _failures(url, timeout):
        async with contextlib.AsyncExitStack() as stack:
            response = await _open(stack, url, url, fence, tls, deadline, method="POST",
                                   content=body, headers=headers)
            status = response.status_code
    return status


@contextlib.contextmanager
def _failures(url: str, timeout: float) -> Iterator[None]:
    """httpx's and the deadline's errors as those of this module."""
    try:
        yield
    except TimeoutError:
        raise TimedOut(f"{url}: took longer than {timeout:g} s") from None
    except httpx.InvalidURL as error:
        raise Refused(f"{url}: not a valid URL ({error})") from None
    except httpx.HTTPError as error:
        raise FetchFailed(f"{url}: {type(error).__name__}: {error or 'failed'}") from None


async def _open(stack: contextlib.AsyncExitStack, location: str, shown: str, fence: Fence,
                tls: ssl.SSLContext, deadline: float, *, method: str = "GET",
                content: bytes | None = None, headers: Mapping[str, str] | None = None,
                ) -> httpx.Response:
    """The response to `method` `location`, from an address the fence allows (tried in
    turn)."""
    url = httpx.URL(location)
    if url.scheme not in ("http", "https") or not url.host:
        raise Refused(f"{shown}: only http(s) URLs with a host can be fetched")
    host = url.raw_host.decode("ascii")
    addresses = await _resolve(host, url.port or (443 if url.scheme == "https" else 80),
                               shown, deadline)
    refusals = [fence.refusal(host, address) for address in addresses]
    allowed = [a for a, refusal in zip(addresses, refusals, strict=True) if refusal is None]
    if not allowed:
        first = next(refusal for refusal in refusals if refusal is not None)
        raise Refused(f"{shown}: {first.explain(host)}")
    failure: httpx.HTTPError | None = None
    for address in allowed:
        client = await stack.enter_async_context(httpx.AsyncClient(
            verify=tls,
            timeout=httpx.Timeout(READ_TIMEOUT, connect=CONNECT_TIMEOUT),
            follow_redirects=False, trust_env=False))
        request = client.build_request(
            method, url.copy_with(host=str(address)), content=content,
            headers={**(headers or {}), "Host": url.netloc.decode("ascii")},
            extensions={"sni_hostname": host} if url.scheme == "https" else {})
        try:
            async with asyncio.timeout_at(deadline):
                response = await client.send(request, stream=True)
        except httpx.ConnectError as error:
            failure = error  # another address of the host may answer
            continue
        stack.push_async_callback(response.aclose)
        return response
    assert failure is not None
    raise failure


async def _resolve(host: str, port: int, shown: str, deadline: float) -> list[Address]:
    """Every address `host` resolves to, once, in the resolver's order of preference."""
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout_at(deadline):
            found = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as error:
        raise FetchFailed(f"{shown}: the host name {host} cannot be resolved "
                          f"({error.strerror})") from None
    except UnicodeError:
        raise Refused(f"{shown}: {host[:100]!r} is not a valid host name") from None
    addresses: list[Address] = []
    for _family, _type, _proto, _name, sockaddr in found:
        address = ipaddress.ip_address(sockaddr[0])
        if address not in addresses:
            addresses.append(address)
    if not addresses:
        raise FetchFailed(f"{shown}: the host name {host} has no address")
    return addresses


def _size(limit: int) -> str:
    if limit >= 1 << 30 and limit % (1 << 30) == 0:
        return f"{limit >> 30} GiB"
    if limit >= 64 << 20 and limit % (1 << 20) == 0:
        return f"{limit >> 20} MiB"
    if limit % 1024 == 0:
        return f"{limit >> 10} KiB"
    return f"{limit} bytes"
