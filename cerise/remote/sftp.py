"""Pipelined file transfers over SFTP, from or to any offset, with progress.

Local I/O runs in threads, a chunk at a time, while SFTP keeps many blocks of the server's
maximum size in flight. Transfers can start at an offset, so that an interrupted one can
carry on (`cerise.remote.resume` says from where). Progress is reported as the position
reached, each byte once.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, BinaryIO

import asyncssh

from cerise.remote.protocol import Progress, temporary_name

TRANSFER_CHUNK = 8 << 20
"""Bytes read or written locally at a time."""
CHUNKS_IN_FLIGHT = 2
"""Chunks of one file on the wire at once, so the pipeline never drains between chunks."""
ABANDON_WAIT = 5.0
"""Seconds that transfers still in flight get to end after another one failed."""



class Meter:
    """Turns positions reached in a file into `Progress` calls, counting each byte once.

    Several writers may reach positions out of order, and a resumed transfer starts at
    the part already in place (reported when found): the calls add up to the file's size
    when the transfer succeeds.
    """

    def __init__(self, progress: Progress | None) -> None:
        self._progress = progress
        self.reached = 0

    def reach(self, position: int) -> None:
        if position > self.reached:
            if self._progress is not None:
                self._progress(position - self.reached)
            self.reached = position


class LocalReader:
    """A local file read a chunk at a time in threads, or content already in memory.

    Opening a file reads its first chunk (so construct it in a thread): a small file then
    costs one thread hop in all (open, read and close). `start` and `end` read a part.
    """

    def __init__(self, source: Path | bytes, start: int = 0, end: int | None = None) -> None:
        self._file: BinaryIO | None = None
        self.start = start
        if isinstance(source, bytes):
            self.first = source[start:end]
            return
        self._left = -1 if end is None else end - start
        self._file = open(source, "rb")  # noqa: SIM115 (closed in close())
        self._file.seek(start)
        self.first = self._read()

    def _read(self) -> bytes:
        assert self._file is not None
        size = TRANSFER_CHUNK if self._left < 0 else min(TRANSFER_CHUNK, self._left)
        data = self._file.read(size)
        if self._left >= 0:
            self._left -= len(data)
        if len(data) < TRANSFER_CHUNK or self._left == 0:
            self._file.close()
            self._file = None
        return data

    async def next(self) -> bytes:
        """The next chunk; empty at the end."""
        return b"" if self._file is None else await asyncio.to_thread(self._read)

    async def close(self) -> None:
        if self._file is not None:
            await asyncio.to_thread(self._file.close)
            self._file = None


async def send(source: LocalReader, handle: asyncssh.SFTPClientFile, meter: Meter) -> int:
    """Write `source` to `handle` at the same offsets, `CHUNKS_IN_FLIGHT` chunks on the wire.

    The bytes sent.
    """
    offset = source.start
    pending: set[asyncio.Future[None]] = set()
    chunk = source.first

    async def write(data: bytes, at: int) -> None:
        await handle.write(data, at)
        meter.reach(at + len(data))

    try:
        while chunk:
            pending.add(asyncio.ensure_future(write(chunk, offset)))
            offset += len(chunk)
            if len(pending) >= CHUNKS_IN_FLIGHT:
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                _check(done)
            chunk = await source.next()
        await asyncio.gather(*pending)
    finally:
        await abandon(pending)
    return offset - source.start


class LocalWriter:
    """A local file written with positioned writes in threads, renamed into place at the end.

    Blocks may arrive out of order. `commit` writes the last ones and renames in a single
    thread hop, so a small file costs one hop in all. Written to a unique temporary name
    that a failure removes, or to `partial`, kept after a failure to be resumed.
    """

    def __init__(self, path: Path, partial: Path | None = None) -> None:
        self._path = path
        self._temporary = partial or Path(temporary_name(str(path)))
        self._keep = partial is not None
        self._fd: int | None = None
        self._opening = asyncio.Lock()
        self._started = False  # the temporary file may exist
        self._committed = False

    def _open(self) -> int:
        self._started = True
        # A partial file keeps what it has: only blocks from the resume point are written.
        truncate = 0 if self._keep else os.O_TRUNC
        return os.open(self._temporary, os.O_WRONLY | os.O_CREAT | truncate, 0o666)

    async def write(self, blocks: Sequence[tuple[int, bytes]]) -> None:
        """Write blocks (offset, data); calls may run concurrently."""
        async with self._opening:
            if self._fd is None:
                self._fd = await asyncio.to_thread(self._open)
        await asyncio.to_thread(_write_blocks, self._fd, blocks)

    async def commit(self, blocks: Sequence[tuple[int, bytes]]) -> None:
        def commit() -> None:
            fd = self._open() if self._fd is None else self._fd
            self._fd = None
            try:
                _write_blocks(fd, blocks)
            finally:
                os.close(fd)
            os.replace(self._temporary, self._path)
            self._committed = True

        await asyncio.to_thread(commit)

    async def discard(self) -> None:
        """Close the temporary file and remove it (a partial one stays), unless committed."""

        def discard() -> None:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None
            if not self._keep:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self._temporary)

        if self._started and not self._committed:
            await asyncio.to_thread(discard)


def _write_blocks(fd: int, blocks: Sequence[tuple[int, bytes]]) -> None:
    for offset, data in blocks:
        view = memoryview(data)
        while view:
            written = os.pwrite(fd, view, offset)
            view, offset = view[written:], offset + written


async def receive(handle: asyncssh.SFTPClientFile, start: int, size: int, target: LocalWriter,
                  meter: Meter) -> int:
    """Copy bytes `start` to `size` of `handle` into `target` at the same offsets, committing it.

    Blocks are written as they arrive, a chunk at a time, while reads stay in flight;
    reassembling whole chunks first would copy every byte twice more. The bytes received.
    """
    received = 0
    batch: list[tuple[int, bytes]] = []
    batched = 0
    writes: set[asyncio.Future[None]] = set()
    try:
        async for offset, data in await handle.read_parallel(size - start, start):
            batch.append((offset, data))
            batched += len(data)
            received += len(data)
            if batched >= TRANSFER_CHUNK:
                writes.add(asyncio.ensure_future(target.write(batch)))
                meter.reach(start + received)
                batch, batched = [], 0
                if len(writes) >= CHUNKS_IN_FLIGHT:
                    done, writes = await asyncio.wait(writes, return_when=asyncio.FIRST_COMPLETED)
                    _check(done)
        await asyncio.gather(*writes)
        await target.commit(batch)
        meter.reach(start + received)
    finally:
        await abandon(writes)
    return received


def _check(done: set[asyncio.Future[None]]) -> None:
    """Raise the first failure among `done`, having looked at each (none goes unretrieved)."""
    failures = [error for error in (future.exception() for future in done) if error]
    if failures:
        raise failures[0]


async def abandon(futures: set[asyncio.Future[None]]) -> None:
    """After a failure, let what is in flight finish (briefly), then cancel the rest.

    Cancelling an asyncssh read or write leaves its own block requests running, whose
    errors would then be logged as never retrieved; in flight after a failure they
    usually end at once, with the same error.
    """
    late: set[asyncio.Future[Any]] = set(futures)
    for future in late:
        future.add_done_callback(_consume)
    try:
        if late:
            _, late = await asyncio.wait(late, timeout=ABANDON_WAIT)
    finally:  # also when cancelled while waiting
        for future in late:
            future.cancel()


def _consume(future: asyncio.Future[Any]) -> None:
    """Mark an abandoned future's outcome as seen (it was reported by another)."""
    if not future.cancelled():
        future.exception()

