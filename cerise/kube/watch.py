"""Reading a Kubernetes watch stream: one JSON event per line, lines ended by LF alone.

HTTP clients' text line readers (httpx's ``aiter_lines``, which lightkube's ``watch`` uses)
split like `str.splitlines`, at NEL (U+0085), U+2028, U+2029 and other characters too. The
API server writes those characters raw inside JSON strings, so a job name holding one cut
an event in two, the halves failed to parse and the watch died. JSON text never holds a raw
LF (it must be escaped inside strings), so splitting the bytes at LF alone is exact.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterable, AsyncIterator
from dataclasses import dataclass
from typing import Any

Body = dict[str, Any]


class Expired(Exception):
    """The API server no longer has the resourceVersion asked for (410 Gone): list again."""


class WatchFailed(Exception):
    """The API server ended the watch with an error event other than 410."""


@dataclass(frozen=True)
class Event:
    """One change: ADDED, MODIFIED, DELETED or BOOKMARK (which carries only a version)."""

    type: str
    body: Body


async def lines(chunks: AsyncIterable[bytes]) -> AsyncIterator[bytes]:
    """The LF-terminated lines of a byte stream, without their LF (a last unterminated
    line included)."""
    pending = bytearray()
    async for chunk in chunks:
        pending += chunk
        if b"\n" not in chunk:
            continue
        *complete, rest = pending.split(b"\n")
        pending = bytearray(rest)
        for line in complete:
            if line.strip():
                yield bytes(line)
    if pending.strip():
        yield bytes(pending)


def parse_event(line: bytes) -> Event:
    """The event of one line; raises Expired or WatchFailed for an error event."""
    raw = json.loads(line)
    kind, body = raw.get("type"), raw.get("object") or {}
    if kind == "ERROR":
        if body.get("code") == 410:
            raise Expired(body.get("message") or "resourceVersion too old")
        raise WatchFailed(f"{body.get('code')} {body.get('reason')}: {body.get('message')}")
    if kind not in ("ADDED", "MODIFIED", "DELETED", "BOOKMARK"):
        raise WatchFailed(f"unknown watch event type {kind!r}")
    return Event(kind, body)


async def events(chunks: AsyncIterable[bytes]) -> AsyncIterator[Event]:
    """The events of a watch response's body."""
    async for line in lines(chunks):
        yield parse_event(line)
