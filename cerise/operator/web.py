"""Fetching a document from the web for the operator (a workflow, a project archive):
one client set-up, a size cap and a time-out, and errors that say what went wrong."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx


class FetchFailed(Exception):
    """The URL could not be fetched within the limits; the message says why."""


class TooLarge(FetchFailed):
    """The document is larger than allowed: fetching it again will not help."""


async def fetch(url: str, *, limit: int, timeout: float) -> AsyncIterator[bytes]:
    """The body of `url`, chunk by chunk; FetchFailed past `limit` bytes or `timeout` s."""
    tls = await asyncio.to_thread(httpx.create_ssl_context)  # loading CAs blocks: a thread
    size = 0
    try:
        async with asyncio.timeout(timeout), \
                httpx.AsyncClient(verify=tls, timeout=30, follow_redirects=True) as client, \
                client.stream("GET", url) as response:
            if response.status_code != 200:
                raise FetchFailed(f"{url}: HTTP {response.status_code}")
            async for chunk in response.aiter_bytes():
                size += len(chunk)
                if size > limit:
                    raise TooLarge(f"{url} is larger than {limit // 1024} KiB")
                yield chunk
    except TimeoutError:
        raise FetchFailed(f"{url}: not fetched within {timeout:g} s") from None
    except httpx.HTTPError as error:
        raise FetchFailed(f"{url}: {type(error).__name__}: {error}") from None
