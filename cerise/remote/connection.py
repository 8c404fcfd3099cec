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
"""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import os
import secrets
import shutil
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import asyncssh

DEFAULT_TIMEOUT = 120.0
BACKOFF_START = 1.0
BACKOFF_MAX = 60.0


class RemoteUnavailable(ConnectionError):
    """The compute resource cannot be reached now; try again later."""


@dataclass(frozen=True)
class CommandResult:
    """What a remote script did."""

    exit_status: int
    stdout: str
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

    async def put(self, local: Path, remote: str) -> None:
        """Copy a local file to the compute resource."""
        ...

    async def get(self, remote: str, local: Path) -> None:
        """Copy a file from the compute resource."""
        ...

    async def read(self, remote: str, offset: int = 0, limit: int = 1 << 20) -> bytes:
        """Up to `limit` bytes of a remote file from `offset` (empty if it is missing)."""
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
        }

    def _where(self) -> str:
        return f"{self.username}@{self._target.host}:{self._target.port}"

    async def _lost(self, error: BaseException) -> RemoteUnavailable:
        """Drop a broken connection so that the next call reconnects."""
        await self.close()
        self._last_error = _describe(error)
        return RemoteUnavailable(f"{self._where()}: connection lost: {self._last_error}")

    async def run(self, script: str, *, timeout: float = DEFAULT_TIMEOUT) -> CommandResult:
        connection = await self._connect()
        async with self._channels:
            try:
                result = await connection.run(
                    "bash -s", input=wrap_script(script), timeout=timeout, check=False)
            except (OSError, asyncssh.Error) as error:
                raise await self._lost(error) from None
        return CommandResult(
            exit_status=result.exit_status if result.exit_status is not None else 255,
            stdout=_text(result.stdout),
            stderr=_text(result.stderr),
        )

    @contextlib.asynccontextmanager
    async def _sftp_client(self) -> AsyncIterator[asyncssh.SFTPClient]:
        connection = await self._connect()
        try:
            if self._sftp is None:
                self._sftp = await connection.start_sftp_client()
            yield self._sftp
        except (OSError, asyncssh.Error) as error:
            if isinstance(error, asyncssh.SFTPError):
                raise
            raise await self._lost(error) from None

    async def put(self, local: Path, remote: str) -> None:
        async with self._sftp_client() as sftp:
            await sftp.put(str(local), remote, preserve=False)

    async def get(self, remote: str, local: Path) -> None:
        async with self._sftp_client() as sftp:
            await sftp.get(remote, str(local))

    async def read(self, remote: str, offset: int = 0, limit: int = 1 << 20) -> bytes:
        async with self._sftp_client() as sftp:
            try:
                async with sftp.open(remote, "rb") as handle:
                    await handle.seek(offset)
                    data: bytes = await handle.read(limit)
                    return data
            except asyncssh.SFTPNoSuchFile:
                return b""

    async def write(self, remote: str, data: bytes, mode: int = 0o600) -> None:
        temporary = _temporary_name(remote)
        async with self._sftp_client() as sftp:
            attrs = asyncssh.SFTPAttrs(permissions=mode)
            async with sftp.open(temporary, "wb", attrs) as handle:
                await handle.write(data)
            await sftp.posix_rename(temporary, remote)

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
        async with self._channels:
            process = await asyncio.create_subprocess_exec(
                "bash", "-s", stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
                start_new_session=True,
            )
            try:
                stdout, stderr = await asyncio.wait_for(
                    process.communicate(wrap_script(script).encode()), timeout)
            except TimeoutError:
                process.kill()
                await process.wait()
                raise
        return CommandResult(
            exit_status=process.returncode if process.returncode is not None else 255,
            stdout=stdout.decode(errors="replace"),
            stderr=stderr.decode(errors="replace"),
        )

    async def put(self, local: Path, remote: str) -> None:
        await asyncio.to_thread(shutil.copyfile, local, remote)

    async def get(self, remote: str, local: Path) -> None:
        await asyncio.to_thread(shutil.copyfile, remote, local)

    async def read(self, remote: str, offset: int = 0, limit: int = 1 << 20) -> bytes:
        def read() -> bytes:
            try:
                with open(remote, "rb") as handle:
                    handle.seek(offset)
                    return handle.read(limit)
            except FileNotFoundError:
                return b""

        return await asyncio.to_thread(read)

    async def write(self, remote: str, data: bytes, mode: int = 0o600) -> None:
        def write() -> None:
            temporary = _temporary_name(remote)
            fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
            os.replace(temporary, remote)

        await asyncio.to_thread(write)

    async def close(self) -> None:
        return None


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
