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

Bulk transfers (`upload`, `download`) are pipelined SFTP (`cerise.remote.transfer`).
`download` renames the local file into place once complete; `upload` creates the remote
file with its mode. Files of `LARGE_FILE` bytes or more go through partial files that an
interrupted transfer resumes (`cerise.remote.resume`), and are renamed into place once
complete, both ways. Uploads above the `ACCELERATION_THRESHOLD` travel through an
OpenSSH `ssh` child (`cerise.remote.openssh`, `SshTarget.accelerate`), at most `MOVERS`
at once, since asyncssh is CPU-bound below OpenSSH's speed; if the child fails, asyncssh
carries on from where it got to.
AES-GCM is preferred to asyncssh's default ChaCha20-Poly1305, which asyncssh computes
with several Python-level calls per packet: on the loopback benchmark
(benchmarks/staging.py) AES-GCM moved about 1.5 times as much data per CPU second,
large files and small. Servers without it negotiate the rest of asyncssh's default list.
"""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import logging
import os
import subprocess
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Protocol

import asyncssh

from cerise.remote import openssh, resume, transfer
from cerise.remote.transfer import TRANSFER_CHUNK, Meter, temporary_name
from cerise.remote.transfer import Progress as Progress  # part of the Remote protocol

DEFAULT_TIMEOUT = 120.0
BACKOFF_START = 1.0
BACKOFF_MAX = 60.0
PREFERRED_CIPHERS = "^aes128-gcm@openssh.com,aes256-gcm@openssh.com"
"""Put first in asyncssh's default list (see the module docstring)."""
LARGE_FILE = 64 << 20
"""Files of this size or more are resumable (a partial file renamed into place)."""
ACCELERATION_THRESHOLD = 128 << 20
"""Uploads with at least this much left to send go through an `ssh` child if allowed.
The child's own connection costs about 0.2 to 0.4 s, so on loopback asyncssh is as fast
up to 128 to 180 MiB (depending on the machine's load); but the child spares the
operator's CPU (0.04 s instead of about 1.5 s per 512 MiB), which every job shares."""
MOVERS = 4
"""`ssh` children uploading at once per compute resource (each is a connection of its
own, and sshd's MaxStartups refuses many new ones at once)."""
MOVER_PAUSE = 600.0
"""Seconds for which large uploads stay with asyncssh after an `ssh` child failed to log in."""
HASH_RATE = 50 << 20
"""Bytes per second that the remote side is given to checksum a partial file."""

_log = logging.getLogger(__name__)


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
    accelerate: bool = True
    """Upload large files with the OpenSSH client (`ssh`) when the login allows it."""


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

    async def upload(self, local: Path | bytes, remote: str, *, mode: int = 0o600,
                     progress: Progress | None = None) -> int:
        """Copy a local file (or content already read) to the compute resource; bytes sent.

        The remote file is created with `mode`. Pipelined: several blocks are in flight at
        once. A large file goes to a hidden partial file beside `remote`, renamed over it
        when complete; one cut off is resumed by the next upload of the same file (the
        bytes sent then are the rest). `progress`, if given, is called with the bytes
        moved since its last call, at least once per chunk; a part found already in place
        counts once, when found, so the calls add up to the file's size. Remote failures
        raise OSError (FileNotFoundError, PermissionError…) or RemoteUnavailable.
        """
        ...

    async def download(self, remote: str, local: Path, *,
                       progress: Progress | None = None) -> int:
        """Copy a remote file to `local`, atomically replaced; the bytes received.

        Copies the size the file had when opened (it is not expected to change). A large
        file cut off is resumed as in `upload`, from a hidden partial file beside `local`.
        `progress` is called as for `upload`.
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


@dataclass
class SshCounters:
    """What an `SshRemote` has done so far, as plain numbers (the operator's metrics read
    them)."""

    connects: int = 0
    """Connections opened."""
    reconnects: int = 0
    """Connections opened after the first, each replacing a lost one."""
    channel_waits: int = 0
    """Commands that waited for a free channel (all of `max_sessions` were in use)."""
    channel_wait_seconds: float = 0.0


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
        self.counters = SshCounters()
        self._movers = asyncio.Semaphore(MOVERS)
        self._movers_paused_until = 0.0
        self._ssh_usable: bool | None = None
        self._account: openssh.Account | None = None

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
            if self.counters.connects:
                self.counters.reconnects += 1
            self.counters.connects += 1
            return self._connection

    def _host_keys(self) -> list[asyncssh.SSHKey]:
        try:
            return [asyncssh.import_public_key(key) for key in self._target.host_keys]
        except (asyncssh.KeyImportError, ValueError):
            raise ValueError("a pinned host key is not a valid SSH public key") from None

    def _client_keys(self) -> list[asyncssh.SSHKey]:
        credentials = self._target.credentials
        if not credentials.private_key:
            return []
        try:
            return [asyncssh.import_private_key(credentials.private_key, credentials.passphrase)]
        except (asyncssh.KeyImportError, ValueError):
            raise ValueError(
                "the private key cannot be read (wrong format or passphrase)") from None

    def _options(self) -> dict[str, object]:
        target, credentials = self._target, self._target.credentials
        host_keys, client_keys = self._host_keys(), self._client_keys()
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
        async with self._channel():
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
    async def _channel(self) -> AsyncIterator[None]:
        """Hold one of the channels; a wait for one is counted."""
        if not self._channels.locked():
            async with self._channels:
                yield
            return
        started = time.monotonic()
        async with self._channels:
            self.counters.channel_waits += 1
            self.counters.channel_wait_seconds += time.monotonic() - started
            yield

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

    async def upload(self, local: Path | bytes, remote: str, *, mode: int = 0o600,
                     progress: Progress | None = None) -> int:
        meter = Meter(progress)
        if isinstance(local, Path):
            status = await asyncio.to_thread(os.stat, local)
            if status.st_size >= LARGE_FILE:
                return await self._upload_large(local, status, remote, mode, meter)
        return await self._sftp_send(local, remote, pflags="wb", mode=mode, meter=meter)

    async def _upload_large(self, local: Path, status: os.stat_result, remote: str, mode: int,
                            meter: Meter) -> int:
        """Upload into a partial file (resumed if one is there), then rename it into place."""
        size = status.st_size
        partial = resume.partial_name(remote, resume.version(size, status.st_mtime_ns))
        start = await self._resume_upload(local, partial, size, remote)
        meter.reach(start)
        sent = 0
        if size - start >= ACCELERATION_THRESHOLD and self._may_accelerate():
            try:
                account = await self._mover_account()
                async with self._movers:
                    sent += await openssh.send(account, local, partial, start, size, meter.reach)
                start = size
            except openssh.MoverFailed as failure:
                _log.warning("%s: uploading %s with ssh failed (%s); asyncssh carries on",
                             self._where(), remote, failure)
                if not failure.logged_in:
                    self._movers_paused_until = time.monotonic() + MOVER_PAUSE
                if failure.sent:
                    sent += failure.sent
                    start = await self._resume_upload(local, partial, size, remote)
        if start < size:
            sent += await self._sftp_send(
                local, partial, shown=remote, pflags=asyncssh.FXF_WRITE | asyncssh.FXF_CREAT,
                mode=0o600, start=start, end=size, meter=meter)
        await self._put_in_place(partial, remote, size, mode)
        return sent

    async def _sftp_send(self, local: Path | bytes, path: str, *, pflags: int | str, mode: int,
                         meter: Meter, start: int = 0, end: int | None = None,
                         shown: str | None = None) -> int:
        """Send `local` (bytes `start` to `end`) into `path` at the same offsets; errors
        name `shown` (the target, for a partial file)."""
        if isinstance(local, bytes):
            source = transfer.LocalReader(local)
        else:
            source = await asyncio.to_thread(transfer.LocalReader, local, start, end)
        try:
            sftp = await self._sftp_session()
            try:
                attrs = asyncssh.SFTPAttrs(permissions=mode)
                async with sftp.open(path, pflags, attrs, encoding=None) as handle:
                    return await transfer.send(source, handle, meter)
            except (asyncssh.Error, ConnectionError) as error:
                raise await self._sftp_failure(error, shown or path) from None
        finally:
            await source.close()

    async def _resume_upload(self, local: Path, partial: str, size: int, shown: str) -> int:
        """Where an upload into `partial` can carry on: the bytes there that are right."""
        sftp = await self._sftp_session()
        try:
            have = (await sftp.lstat(partial)).size or 0
            if have > size:
                await sftp.remove(partial)
                return 0
        except asyncssh.SFTPNoSuchFile:
            return 0
        except (asyncssh.Error, ConnectionError) as error:
            raise await self._sftp_failure(error, shown) from None
        return await self._matching(partial, local, have)

    async def _put_in_place(self, partial: str, remote: str, size: int, mode: int) -> None:
        """Rename a complete partial file to `remote` with `mode`."""
        sftp = await self._sftp_session()
        try:
            have = (await sftp.lstat(partial)).size
            if have == size:
                await sftp.chmod(partial, mode)
                await sftp.posix_rename(partial, remote)
                return
            await sftp.remove(partial)
        except (asyncssh.Error, ConnectionError) as error:
            raise await self._sftp_failure(error, remote) from None
        raise OSError(f"{remote}: {have} bytes arrived instead of {size}")

    async def _matching(self, remote: str, local: Path, length: int) -> int:
        """How many of the first `length` bytes of `remote` and `local` are the same."""
        blocks = length // resume.BLOCK
        if not blocks:
            return 0
        theirs, ours = await asyncio.gather(
            self.run(resume.sums_script(remote, blocks),
                     timeout=DEFAULT_TIMEOUT + length / HASH_RATE),
            asyncio.to_thread(resume.local_sums, local, blocks))
        if theirs.exit_status != 0:
            return 0
        return resume.matching_prefix(ours, resume.parse_sums(theirs.stdout, blocks))

    def _may_accelerate(self) -> bool:
        target = self._target
        if self._ssh_usable is None:
            self._ssh_usable = target.accelerate and openssh.usable(
                bool(target.credentials.private_key), target.host, self.username)
        return self._ssh_usable and time.monotonic() >= self._movers_paused_until

    async def _mover_account(self) -> openssh.Account:
        if self._account is None:  # made once, in a thread: decrypting a key takes a while
            target = self._target
            [key] = await asyncio.to_thread(self._client_keys)
            self._account = openssh.Account(
                host=target.host, port=target.port, username=self.username, key=key,
                host_keys=tuple(self._host_keys()), connect_timeout=target.connect_timeout)
        return self._account

    async def download(self, remote: str, local: Path, *,
                       progress: Progress | None = None) -> int:
        meter = Meter(progress)
        sftp = await self._sftp_session()
        try:
            async with sftp.open(remote, "rb") as handle:
                attrs = await handle.stat()
                size, start, partial = attrs.size or 0, 0, None
                if size >= LARGE_FILE:
                    version = resume.version(size, attrs.mtime)
                    partial = Path(resume.partial_name(str(local), version))
                    start = await self._resume_download(remote, partial, size)
                    meter.reach(start)
                target = transfer.LocalWriter(local, partial)
                try:
                    return await transfer.receive(handle, start, size, target, meter)
                finally:
                    await target.discard()
        except (asyncssh.Error, ConnectionError) as error:
            raise await self._sftp_failure(error, remote) from None

    async def _resume_download(self, remote: str, partial: Path, size: int) -> int:
        """Where a download into `partial` can carry on: the bytes there that are right."""
        try:
            have = (await asyncio.to_thread(os.stat, partial)).st_size
        except FileNotFoundError:
            return 0
        return await self._matching(remote, partial, min(have, size))

    async def _sftp_session(self) -> asyncssh.SFTPClient:
        async with self._sftp_client() as sftp:
            return sftp

    async def _sftp_failure(self, error: asyncssh.Error | ConnectionError,
                            remote: str) -> OSError:
        """The OSError for a failed SFTP operation; a lost connection is dropped.

        A connection reset while writing arrives as a plain ConnectionError."""
        if isinstance(error, RemoteUnavailable):
            return error
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
        temporary = temporary_name(remote)
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
    while chunk := source.read(TRANSFER_CHUNK):
        target.write(chunk)
        size += len(chunk)
        _report(loop, progress, len(chunk))
    return size


def _report(loop: asyncio.AbstractEventLoop, progress: Progress | None, moved: int) -> None:
    """Call `progress` on the event loop's thread (the caller runs in another)."""
    if progress is not None:
        loop.call_soon_threadsafe(progress, moved)


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
