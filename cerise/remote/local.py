"""The operator's own machine as a compute resource: the `Remote` protocol without SSH."""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import os
import subprocess
from pathlib import Path
from typing import BinaryIO

from cerise.remote.failures import CommandTimedOut
from cerise.remote.protocol import (
    DEFAULT_TIMEOUT,
    BytesResult,
    CommandResult,
    Progress,
    temporary_name,
    wrap_script,
)

COPY_CHUNK = 8 << 20
"""Bytes copied at a time, each reported to the transfer's progress."""


class LocalRemote:
    """The operator's own machine as a compute resource."""

    def __init__(self, max_sessions: int = 8) -> None:
        self._channels = asyncio.Semaphore(max_sessions)

    @property
    def username(self) -> str:
        return getpass.getuser()

    async def run(self, script: str, *, timeout: float = DEFAULT_TIMEOUT) -> CommandResult:
        return (await self.run_bytes(script, timeout=timeout)).as_text()

    async def run_bytes(self, script: str, *, timeout: float = DEFAULT_TIMEOUT) -> BytesResult:
        # The standard library's subprocess in a thread, not the event loop's: uvloop (which
        # kopf uses when it is installed) leaves copies of the child's stdio open in it, so
        # a job started in the background would hold our pipes and the command never ends.
        async with self._channels:
            try:
                process = await asyncio.to_thread(
                    subprocess.run, ["bash", "-s"], input=wrap_script(script).encode(),
                    capture_output=True, timeout=timeout, start_new_session=True)
            except subprocess.TimeoutExpired:
                raise CommandTimedOut(
                    f"the command did not finish within {timeout:g} s") from None
        return BytesResult(exit_status=process.returncode if process.returncode >= 0 else 255,
                           stdout=process.stdout,
                           stderr=process.stderr.decode(errors="replace"))

    async def read(self, remote: str, offset: int = 0, limit: int = 1 << 20) -> bytes:
        def read() -> bytes:
            try:
                with open(remote, "rb") as handle:
                    handle.seek(offset)
                    return handle.read(limit)
            except FileNotFoundError:
                return b""

        return await asyncio.to_thread(read)

    async def upload(self, local: Path | bytes, remote: str, *, mode: int = 0o600,
                     progress: Progress | None = None) -> int:
        loop = asyncio.get_running_loop()

        def upload() -> int:
            fd = os.open(remote, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
            with os.fdopen(fd, "wb") as target:
                if isinstance(local, bytes):
                    size = target.write(local)
                    _report(loop, progress, size)
                    return size
                with open(local, "rb") as source:
                    return _copy(source, target, loop, progress)

        return await asyncio.to_thread(upload)

    async def download(self, remote: str, local: Path, *,
                       progress: Progress | None = None) -> int:
        loop = asyncio.get_running_loop()

        def download() -> int:
            temporary = temporary_name(str(local))
            try:
                with open(remote, "rb") as source, open(temporary, "wb") as target:
                    size = _copy(source, target, loop, progress)
                os.replace(temporary, local)
                return size
            finally:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(temporary)

        return await asyncio.to_thread(download)

    async def write(self, remote: str, data: bytes, mode: int = 0o600) -> None:
        temporary = temporary_name(remote)
        await self.upload(data, temporary, mode=mode)
        await asyncio.to_thread(os.replace, temporary, remote)

    async def close(self) -> None:
        return None


def _copy(source: BinaryIO, target: BinaryIO, loop: asyncio.AbstractEventLoop,
          progress: Progress | None) -> int:
    """Copy a file a chunk at a time in a thread, reporting each chunk on `loop`."""
    size = 0
    while chunk := source.read(COPY_CHUNK):
        target.write(chunk)
        size += len(chunk)
        _report(loop, progress, len(chunk))
    return size


def _report(loop: asyncio.AbstractEventLoop, progress: Progress | None, moved: int) -> None:
    """Call `progress` on the event loop's thread (the caller runs in another)."""
    if progress is not None:
        loop.call_soon_threadsafe(progress, moved)
