"""The sha256 of local files, remembered so that a file staged by many jobs is read once.

A file's digest is kept under its path, size, mtime_ns and ctime_ns: a changed file
changes its mtime (or, if that was set back, its ctime, which no user can set), so its old
digest is never found again. A file that changes while it is read is hashed but not
remembered. The memo is a small LRU shared by the whole process: the exchange is one
directory, whichever compute resource a job goes to.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections import OrderedDict
from pathlib import Path

MEMO_SIZE = 4096
"""Digests remembered; the least recently used is forgotten first."""

_Key = tuple[str, int, int, int]


class HashMemo:
    """Digests of local files by (path, size, mtime_ns, ctime_ns); safe across threads."""

    def __init__(self, size: int = MEMO_SIZE) -> None:
        self._size = size
        self._digests: OrderedDict[_Key, str] = OrderedDict()
        self._lock = threading.Lock()
        self._reading: dict[_Key, threading.Lock] = {}
        self.hits = 0
        self.misses = 0

    def sha256(self, path: Path) -> str:
        """The file's sha256 (hex), read only if not remembered (blocking: use a thread).

        Threads that want the same file at once read it once: the others wait for it.
        """
        key = _key(path, os.stat(path))
        with self._lock:
            reading = self._reading.setdefault(key, threading.Lock())
        try:
            with reading:
                with self._lock:
                    digest = self._digests.get(key)
                    if digest is not None:
                        self._digests.move_to_end(key)
                        self.hits += 1
                        return digest
                    self.misses += 1
                with path.open("rb") as handle:
                    digest = hashlib.file_digest(handle, "sha256").hexdigest()
                    after = _key(path, os.fstat(handle.fileno()))
                if after == key:
                    with self._lock:
                        self._digests[key] = digest
                        while len(self._digests) > self._size:
                            self._digests.popitem(last=False)
                return digest
        finally:
            with self._lock:
                self._reading.pop(key, None)

    def known(self, path: Path) -> str | None:
        """The remembered digest of the file as it is now, without reading it; None if it
        has not been read since it last changed, or is gone (blocking: use a thread)."""
        try:
            key = _key(path, os.stat(path))
        except FileNotFoundError:
            return None
        with self._lock:
            return self._digests.get(key)


def _key(path: Path, status: os.stat_result) -> _Key:
    return str(path), status.st_size, status.st_mtime_ns, status.st_ctime_ns


MEMO = HashMemo()
"""The process's memo, used by staging unless it is given another."""
