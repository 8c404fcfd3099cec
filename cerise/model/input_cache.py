"""The input cache of a compute resource, ``<base>/cache/<sha256>``: what to evict, and
what its status says (pure).

Staging links a cached file into a job's work directory (a hard link; a copy where the
job directory is on another file system) instead of sending it again. Entries are
read-only and touched at every use, so their mtime orders them for LRU eviction. A file
that some job directory links to has a link count above 1: evicting it would free no
space and is never done. Job directories stay until their WorkflowJob is deleted, so
finished jobs keep their inputs in the cache too: the cache may exceed its limit while
they do, and shrinks as they are deleted.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

DEFAULT_LIMIT = 10 << 30
"""The cache's size limit in bytes, unless the ComputeResource says."""
MIN_BYTES = 1 << 20
"""Smaller files are sent, not cached: linking one saves too little to be worth an entry."""
PARTIAL_AGE = 24 * 3600.0
"""Seconds after which a partial upload (``.part-…``) is taken for abandoned."""
_ENTRY = re.compile(r"[0-9a-f]{64}")
_PARTIAL = re.compile(r"\.part-[0-9a-f]{64}|\..*\.partial")
"""An upload to the cache under way, or what the transfer left of it to resume from."""


def is_digest(name: str) -> bool:
    """Whether `name` is a sha256 in hex, as entries are named."""
    return _ENTRY.fullmatch(name) is not None


@dataclass(frozen=True)
class CacheFile:
    """A regular file in the cache directory."""

    name: str
    size: int
    links: int
    used: float
    """Its mtime (seconds since the epoch): when it was last staged."""


@dataclass(frozen=True)
class CacheListing:
    """The cache directory as one remote command saw it, at `now` (the remote clock)."""

    now: float
    files: tuple[CacheFile, ...]

    @property
    def entries(self) -> list[CacheFile]:
        return [file for file in self.files if is_digest(file.name)]

    @property
    def size(self) -> int:
        """The bytes its entries hold."""
        return sum(entry.size for entry in self.entries)


def evictions(listing: CacheListing, limit: int) -> list[str]:
    """What to remove: abandoned partial uploads, then the least recently used entries
    that no job links to, until the entries hold at most `limit` bytes."""
    doomed = [file.name for file in listing.files
              if _PARTIAL.fullmatch(file.name) and listing.now - file.used > PARTIAL_AGE]
    excess = listing.size - limit
    for entry in sorted(listing.entries, key=lambda entry: (entry.used, entry.name)):
        if excess <= 0:
            break
        if entry.links == 1:
            doomed.append(entry.name)
            excess -= entry.size
    return doomed


@dataclass
class CacheCounters:
    """What the cache did since the operator began to drive its resource (plain numbers,
    for metrics): files linked from it (hits) and sent into it (misses), their bytes, and
    the entries it evicted."""

    hits: int = 0
    misses: int = 0
    bytes_linked: int = 0
    bytes_sent: int = 0
    evicted: int = 0


def status_fields(listing: CacheListing | None, counters: CacheCounters,
                  limit: int) -> dict[str, Any]:
    """The ComputeResource's ``status.inputCache``: size, limit, hits, misses, hit ratio."""
    fields: dict[str, Any] = {"limitBytes": limit, "hits": counters.hits,
                              "misses": counters.misses}
    if listing is not None:
        fields |= {"bytes": listing.size, "files": len(listing.entries),
                   "pinnedBytes": sum(e.size for e in listing.entries if e.links > 1)}
    looked = counters.hits + counters.misses
    if looked:
        fields["hitRatio"] = round(counters.hits / looked, 3)
    return fields


def without(listing: CacheListing, names: Sequence[str]) -> CacheListing:
    """The listing once `names` are removed."""
    gone = set(names)
    return CacheListing(listing.now, tuple(f for f in listing.files if f.name not in gone))
