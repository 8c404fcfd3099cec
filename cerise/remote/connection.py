"""One connection per compute resource: remote commands and file access, SSH or local.

`SshRemote` keeps a single SSH connection, shared by every job of its compute resource,
and opens at most `max_sessions` channels on it at once (sshd's MaxSessions caps them).
It connects lazily, pins the server's host keys (any other key is refused), reconnects
after a failure with exponential back-off, and never lets a secret into an error message.
`LocalRemote` does the same on the operator's own machine.

Commands are bash scripts sent on standard input to `bash -s`, so the login shell of the
remote account (which may be csh) never parses them; the script body is wrapped in a
function that runs with stdin from /dev/null, so no command inside it can eat the rest
of the script.

Bulk transfers (`upload`, `download`) are pipelined: local I/O runs in threads, a chunk
at a time, while SFTP keeps many blocks of the server's maximum size in flight.
`download` renames the local file into place once complete; `upload` creates the remote
file with its mode.
AES-GCM is preferred to asyncssh's default ChaCha20-Poly1305, which asyncssh computes
with several Python-level calls per packet: on the loopback benchmark
(benchmarks/staging.py) AES-GCM moved about 1.5 times as much data per CPU second,
large files and small. Servers without it negotiate the rest of asyncssh's default list.
"""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import os
import secrets
import shutil
import subprocess
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Protocol

import asyncssh

DEFAULT_TIMEOUT = 120.0
BACKOFF_START = 1.0
BACKOFF_MAX = 60.0
TRANSFER_CHUNK = 8 << 20
"""Bytes read or written locally at a time in `upload`/`download`."""
CHUNKS_IN_FLIGHT = 2
"""Chunks of one file on the wire at once, so the pipeline never drains between chunks."""
ABANDON_WAIT = 5.0
"""Seconds that transfers still in flight get to end after another one failed."""
PREFERRED_CIPHERS = "^aes128-gcm@openssh.com,aes256-gcm@openssh.com"
"""Put first in asyncssh's default list (see the module docstring)."""


class CommandTimedOut(TimeoutError):
    """One remote command did not finish in time; the connection itself is fine."""


class RemoteUnavailable(ConnectionError):
    """The compute resource cannot be reached now; try again later."""


@dataclass(frozen=True)
class CommandResult:
    """What a remote script did."""

    exit_status: int
    stdout: str
    stderr: str


@dataclass(frozen=True)
class BytesResult:
    """What a remote script did, with its standard output as bytes (e.g. file contents)."""

    exit_status: int
    stdout: bytes
    stderr: str


@dataclass(frozen=True)
class SshCredentials:
    """A login: a private key (optionally encrypted) or a password. Never printed."""

    username: str
    private_key: str | None = field(default=None, repr=False)
    passphrase: str | None = field(default=None, repr=False)
    password: str | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if not self.username:
            raise ValueError("the credentials have no username")
        if not (self.private_key or self.password):
            raise ValueError("the credentials need a privateKey or a password")


@dataclass(frozen=True)
class SshTarget:
    """Where and how to connect."""

    host: str
    port: int
    credentials: SshCredentials
    host_keys: tuple[str, ...]
    max_sessions: int = 8
    connect_timeout: float = 20.0


class Remote(Protocol):
    """Commands and files on a compute resource."""

    @property
    def username(self) -> str:
        """The login name on the compute resource (for $CERISE_USERNAME)."""
        ...

    async def run(self, script: str, *, timeout: float = DEFAULT_TIMEOUT) -> CommandResult:
        """Run a bash script; its exit status and output."""
        ...

    async def run_bytes(self, script: str, *, timeout: float = DEFAULT_TIMEOUT) -> BytesResult:
        """Run a bash script; its exit status and output, standard output as bytes."""
        ...

    async def read(self, remote: str, offset: int = 0, limit: int = 1 << 20) -> bytes:
        """Up to `limit` bytes of a remote file from `offset` (empty if it is missing)."""
        ...

    async def upload(self, local: Path | bytes, remote: str, *, mode: int = 0o600) -> int:
        """Copy a local file (or content already read) to the compute resource; bytes sent.

        The remote file is created with `mode`. Pipelined: several blocks are in flight at
        once. Remote failures raise OSError (FileNotFoundError, PermissionError…) or
        RemoteUnavailable.
        """
        ...

    async def download(self, remote: str, local: Path) -> int:
        """Copy a remote file to `local`, atomically replaced; the bytes received.

        Copies the size the file had when opened (it is not expected to change).
        """
        ...

    async def write(self, remote: str, data: bytes, mode: int = 0o600) -> None:
        """Create or atomically replace a remote file (readers see the old or the new)."""
        ...

    async def close(self) -> None:
        """Release the connection."""
        ...


def wrap_script(script: str) -> str:
    """The text sent to `bash -s`: `script` as a function body run with stdin from /dev/null."""
    return f"__cerise_main() {{\n{script}\n}}\n__cerise_main < /dev/null\n"


class SshRemote:
    """A shared SSH connection to one compute resource."""

    def __init__(self, target: SshTarget) -> None:
        self._target = target
        self._connection: asyncssh.SSHClientConnection | None = None
        self._sftp: asyncssh.SFTPClient | None = None
        self._lock = asyncio.Lock()
        self._sftp_lock = asyncio.Lock()
        # One channel stays with the shared SFTP session.
        self._channels = asyncio.Semaphore(max(1, target.max_sessions - 1))
        self._backoff = 0.0
        self._next_attempt = 0.0
        self._last_error = ""

    @property
    def username(self) -> str:
        return self._target.credentials.username

    @property
    def connected(self) -> bool:
        """Whether a connection is open now."""
        return self._connection is not None

    async def _connect(self) -> asyncssh.SSHClientConnection:
        async with self._lock:
            if self._connection is not None:
                return self._connection
            now = time.monotonic()
            if now < self._next_attempt:
                raise RemoteUnavailable(
                    f"{self._where()}: retrying in {self._next_attempt - now:.0f} s "
                    f"after: {self._last_error}"
                )
            options = self._options()  # a bad key is a configuration error, not a retry
            try:
                self._connection = await asyncio.wait_for(
                    asyncssh.connect(**options), self._target.connect_timeout
                )
            except (OSError, asyncssh.Error, TimeoutError) as error:
                self._backoff = min(BACKOFF_MAX, max(BACKOFF_START, 2 * self._backoff))
                self._next_attempt = time.monotonic() + self._backoff
                self._last_error = _describe(error)
                raise RemoteUnavailable(f"{self._where()}: {self._last_error}") from None
            self._backoff = 0.0
            return self._connection

    def _options(self) -> dict[str, object]:
        target, credentials = self._target, self._target.credentials
        try:
            host_keys = [asyncssh.import_public_key(key) for key in target.host_keys]
        except (asyncssh.KeyImportError, ValueError):
            raise ValueError("a pinned host key is not a valid SSH public key") from None
        client_keys = []
        if credentials.private_key:
            try:
                client_keys.append(asyncssh.import_private_key(
                    credentials.private_key, credentials.passphrase))
            except (asyncssh.KeyImportError, ValueError):
                raise ValueError(
                    "the private key cannot be read (wrong format or passphrase)") from None
        return {
            "host": target.host,
            "port": target.port,
            "username": credentials.username,
            "known_hosts": (host_keys, [], []),
            "client_keys": client_keys,
            "password": credentials.password,
            "agent_path": None,
            "config": None,
            "keepalive_interval": 15,
            "keepalive_count_max": 3,
            "encryption_algs": PREFERRED_CIPHERS,
        }

    def _where(self) -> str:
        return f"{self.username}@{self._target.host}:{self._target.port}"

    async def _lost(self, error: BaseException) -> RemoteUnavailable:
        """Drop a broken connection so that the next call reconnects."""
        await self.close()
        self._last_error = _describe(error)
        return RemoteUnavailable(f"{self._where()}: connection lost: {self._last_error}")

    async def run(self, script: str, *, timeout: float = DEFAULT_TIMEOUT) -> CommandResult:
        result = await self.run_bytes(script, timeout=timeout)
        return CommandResult(exit_status=result.exit_status,
                             stdout=result.stdout.decode(errors="replace"), stderr=result.stderr)

    async def run_bytes(self, script: str, *, timeout: float = DEFAULT_TIMEOUT) -> BytesResult:
        connection = await self._connect()
        async with self._channels:
            try:
                result = await connection.run(
                    "bash -s", input=wrap_script(script).encode(), encoding=None,
                    timeout=timeout, check=False)
            except asyncssh.TimeoutError:
                # One slow command: its channel is closed, the shared connection stays.
                raise CommandTimedOut(
                    f"{self._where()}: the command did not finish within {timeout:g} s"
                ) from None
            except (OSError, asyncssh.Error) as error:
                raise await self._lost(error) from None
        stdout = result.stdout if isinstance(result.stdout, bytes) else b""
        return BytesResult(
            exit_status=result.exit_status if result.exit_status is not None else 255,
            stdout=stdout,
            stderr=_text(result.stderr),
        )

    @contextlib.asynccontextmanager
    async def _sftp_client(self) -> AsyncIterator[asyncssh.SFTPClient]:
        connection = await self._connect()
        try:
            async with self._sftp_lock:  # concurrent first uses must share one session
                if self._sftp is None:
                    self._sftp = await connection.start_sftp_client()
            yield self._sftp
        except (OSError, asyncssh.Error) as error:
            lost = asyncssh.SFTPConnectionLost | asyncssh.SFTPNoConnection
            if isinstance(error, asyncssh.SFTPError) and not isinstance(error, lost):
                raise
            raise await self._lost(error) from None

    async def read(self, remote: str, offset: int = 0, limit: int = 1 << 20) -> bytes:
        async with self._sftp_client() as sftp:
            try:
                async with sftp.open(remote, "rb") as handle:
                    await handle.seek(offset)
                    data: bytes = await handle.read(limit)
                    return data
            except asyncssh.SFTPNoSuchFile:
                return b""

    async def upload(self, local: Path | bytes, remote: str, *, mode: int = 0o600) -> int:
        if isinstance(local, bytes):
            source = _LocalReader(local)
        else:
            source = await asyncio.to_thread(_LocalReader, local)
        try:
            sftp = await self._sftp_session()
            try:
                attrs = asyncssh.SFTPAttrs(permissions=mode)
                async with sftp.open(remote, "wb", attrs) as handle:
                    return await _send(source, handle)
            except asyncssh.Error as error:
                raise await self._sftp_failure(error, remote) from None
        finally:
            await source.close()

    async def download(self, remote: str, local: Path) -> int:
        sftp = await self._sftp_session()
        target = _LocalWriter(local)
        try:
            async with sftp.open(remote, "rb") as handle:
                size = (await handle.stat()).size or 0
                return await _receive(handle, size, target)
        except asyncssh.Error as error:
            raise await self._sftp_failure(error, remote) from None
        finally:
            await target.discard()

    async def _sftp_session(self) -> asyncssh.SFTPClient:
        async with self._sftp_client() as sftp:
            return sftp

    async def _sftp_failure(self, error: asyncssh.Error, remote: str) -> OSError:
        """The OSError for a failed SFTP operation; a lost connection is dropped."""
        if not isinstance(error, asyncssh.SFTPError) or isinstance(
            error, asyncssh.SFTPConnectionLost | asyncssh.SFTPNoConnection
        ):
            return await self._lost(error)
        kind: type[OSError] = OSError
        if isinstance(error, asyncssh.SFTPNoSuchFile | asyncssh.SFTPNoSuchPath):
            kind = FileNotFoundError
        elif isinstance(error, asyncssh.SFTPPermissionDenied):
            kind = PermissionError
        return kind(f"{remote}: {error.reason}")

    async def write(self, remote: str, data: bytes, mode: int = 0o600) -> None:
        temporary = _temporary_name(remote)
        await self.upload(data, temporary, mode=mode)
        sftp = await self._sftp_session()
        try:
            await sftp.posix_rename(temporary, remote)
        except asyncssh.Error as error:
            raise await self._sftp_failure(error, remote) from None

    async def close(self) -> None:
        connection, self._connection, self._sftp = self._connection, None, None
        if connection is not None:
            connection.close()
            with contextlib.suppress(Exception):
                await connection.wait_closed()


class LocalRemote:
    """The operator's own machine as a compute resource."""

    def __init__(self, max_sessions: int = 8) -> None:
        self._channels = asyncio.Semaphore(max_sessions)

    @property
    def username(self) -> str:
        return getpass.getuser()

    async def run(self, script: str, *, timeout: float = DEFAULT_TIMEOUT) -> CommandResult:
        result = await self.run_bytes(script, timeout=timeout)
        return CommandResult(
            exit_status=result.exit_status,
            stdout=result.stdout.decode(errors="replace"),
            stderr=result.stderr,
        )

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

    async def upload(self, local: Path | bytes, remote: str, *, mode: int = 0o600) -> int:
        def upload() -> int:
            fd = os.open(remote, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
            with os.fdopen(fd, "wb") as target:
                if isinstance(local, bytes):
                    return target.write(local)
                with open(local, "rb") as source:
                    shutil.copyfileobj(source, target, TRANSFER_CHUNK)
                return target.tell()

        return await asyncio.to_thread(upload)

    async def download(self, remote: str, local: Path) -> int:
        def download() -> int:
            temporary = _temporary_name(str(local))
            try:
                with open(remote, "rb") as source, open(temporary, "wb") as target:
                    shutil.copyfileobj(source, target, TRANSFER_CHUNK)
                    size = target.tell()
                os.replace(temporary, local)
                return size
            finally:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(temporary)

        return await asyncio.to_thread(download)

    async def write(self, remote: str, data: bytes, mode: int = 0o600) -> None:
        temporary = _temporary_name(remote)
        await self.upload(data, temporary, mode=mode)
        await asyncio.to_thread(os.replace, temporary, remote)

    async def close(self) -> None:
        return None


class _LocalReader:
    """A local file read a chunk at a time in threads, or content already in memory.

    Opening a file reads its first chunk (so construct it in a thread): a small file then
    costs one thread hop in all (open, read and close).
    """

    def __init__(self, source: Path | bytes) -> None:
        self._file: BinaryIO | None = None
        if isinstance(source, bytes):
            self.first = source
            return
        self._file = open(source, "rb")  # noqa: SIM115 (closed in close())
        self.first = self._read()

    def _read(self) -> bytes:
        assert self._file is not None
        data = self._file.read(TRANSFER_CHUNK)
        if len(data) < TRANSFER_CHUNK:
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


async def _send(source: _LocalReader, handle: asyncssh.SFTPClientFile) -> int:
    """Write `source` to `handle`, with `CHUNKS_IN_FLIGHT` chunks on the wire."""
    offset = 0
    pending: set[asyncio.Future[int]] = set()
    chunk = source.first
    try:
        while chunk:
            pending.add(asyncio.ensure_future(handle.write(chunk, offset)))
            offset += len(chunk)
            if len(pending) >= CHUNKS_IN_FLIGHT:
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                for future in done:
                    future.result()
            chunk = await source.next()
        await asyncio.gather(*pending)
    finally:
        await _abandon(pending)
    return offset


class _LocalWriter:
    """A local file written with positioned writes in threads, renamed into place at the end.

    Blocks may arrive out of order. `commit` writes the last ones and renames in a single
    thread hop, so a small file costs one hop in all.
    """

    def __init__(self, path: Path) -> None:
        self._path = path
        self._temporary = _temporary_name(str(path))
        self._fd: int | None = None
        self._opening = asyncio.Lock()
        self._started = False  # the temporary file may exist
        self._committed = False

    def _open(self) -> int:
        self._started = True
        return os.open(self._temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666)

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
        """Remove the temporary file, unless `commit` has renamed it."""

        def discard() -> None:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None
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


async def _receive(handle: asyncssh.SFTPClientFile, size: int, target: _LocalWriter) -> int:
    """Copy the first `size` bytes of `handle` into `target`, committing it.

    Blocks are written as they arrive, a chunk at a time, while reads stay in flight;
    reassembling whole chunks first would copy every byte twice more.
    """
    received = 0
    batch: list[tuple[int, bytes]] = []
    batched = 0
    writes: set[asyncio.Future[None]] = set()
    try:
        async for offset, data in await handle.read_parallel(size, 0):
            batch.append((offset, data))
            batched += len(data)
            received += len(data)
            if batched >= TRANSFER_CHUNK:
                writes.add(asyncio.ensure_future(target.write(batch)))
                batch, batched = [], 0
                if len(writes) >= CHUNKS_IN_FLIGHT:
                    done, writes = await asyncio.wait(writes, return_when=asyncio.FIRST_COMPLETED)
                    for future in done:
                        future.result()
        await asyncio.gather(*writes)
        await target.commit(batch)
    finally:
        await _abandon(writes)
    return received


async def _abandon(futures: set[asyncio.Future[int]] | set[asyncio.Future[None]]) -> None:
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


def _temporary_name(path: str) -> str:
    """A unique sibling of `path` to write before renaming over it."""
    return f"{path}.{secrets.token_hex(6)}.tmp"


def _text(value: str | bytes | None) -> str:
    if value is None:
        return ""
    return value.decode(errors="replace") if isinstance(value, bytes) else value


def _describe(error: BaseException) -> str:
    """A short, secret-free description of a connection error."""
    if isinstance(error, asyncssh.HostKeyNotVerifiable):
        return "the server's host key does not match the pinned key (refused)"
    if isinstance(error, asyncssh.PermissionDenied):
        return "authentication failed (permission denied)"
    if isinstance(error, TimeoutError):
        return "timed out"
    if isinstance(error, asyncssh.DisconnectError):
        return f"disconnected: {error.reason}"
    if isinstance(error, OSError):
        return error.strerror or type(error).__name__
    return str(error) or type(error).__name__
