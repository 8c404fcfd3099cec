"""The shared SSH connection to one compute resource, and the commands run on it.

`SshConnection` keeps a single connection, shared by every job of its compute resource,
and opens at most `max_sessions` channels on it at once (sshd's MaxSessions caps them; a
server that allows fewer makes it use fewer). It connects lazily, through the resource's
jump hosts if it has any (each hop tunnelled through the one before, as OpenSSH's
ProxyJump), pins every server's host keys (any other key is refused), reconnects after a
failure with exponential back-off, and never lets a secret into an error message. Private
keys are decrypted once, in a thread, not at every connect.

A failure drops the connection it happened on, never a newer one; a channel the server
refuses (or one command's time-out) leaves the connection to the other jobs.

AES-GCM is preferred to asyncssh's default ChaCha20-Poly1305, which asyncssh computes
with several Python-level calls per packet: on the loopback benchmark
(benchmarks/staging.py) AES-GCM moved about 1.5 times as much data per CPU second,
large files and small. Servers without it negotiate the rest of asyncssh's default list.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field

import asyncssh

from cerise.remote.failures import CommandTimedOut, RemoteUnavailable
from cerise.remote.protocol import DEFAULT_TIMEOUT, BytesResult, wrap_script

BACKOFF_START = 1.0
BACKOFF_MAX = 60.0
PREFERRED_CIPHERS = "^aes128-gcm@openssh.com,aes256-gcm@openssh.com"
"""Put first in asyncssh's default list (see the module docstring)."""
KEEPALIVE_INTERVAL, KEEPALIVE_COUNT = 15, 3
REFUSAL_PAUSE, MAX_REFUSALS = 0.05, 8
"""A command whose channel the server refused tries again after a pause that doubles, up
to a second, and gives up after so many refusals."""

_log = logging.getLogger(__name__)


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
class SshHop:
    """One SSH server on the way to a compute resource: a jump host, or the resource itself."""

    host: str
    port: int
    credentials: SshCredentials
    host_keys: tuple[str, ...]

    def where(self) -> str:
        return f"{self.credentials.username}@{self.host}:{self.port}"


@dataclass(frozen=True)
class SshTarget:
    """Where and how to connect."""

    host: str
    port: int
    credentials: SshCredentials
    host_keys: tuple[str, ...]
    max_sessions: int = 8
    connect_timeout: float = 20.0
    sftp_timeout: float = 60.0
    """Seconds within which the SFTP server must answer a small request (a read of a log,
    a rename) or the start of its session; one that does not is stuck (it may be blocked
    on a FIFO, or hung): its session is dropped, and the caller may try again."""
    accelerate: bool = True
    """Move large files with the OpenSSH client (`ssh`) when the logins allow it."""
    shared_idle: float = 60.0
    """Seconds that the `ssh` children's shared connection stays after the last transfer."""
    jumps: tuple[SshHop, ...] = ()
    """Jump hosts, first to last, through which the resource is reached (as ProxyJump)."""

    @property
    def route(self) -> tuple[SshHop, ...]:
        """Every server logged in to, first to last: the jump hosts, then the resource."""
        return (*self.jumps, SshHop(self.host, self.port, self.credentials, self.host_keys))


@dataclass(frozen=True)
class Login:
    """A hop's keys, imported (and decrypted) once: its pinned host keys, its client key."""

    hop: SshHop
    host_keys: tuple[asyncssh.SSHKey, ...]
    client_key: asyncssh.SSHKey | None = field(repr=False)


def import_login(hop: SshHop) -> Login:
    """A hop's keys as asyncssh keys (blocking: decrypting a key takes a while, so a thread).

    ValueError if a key cannot be read: a configuration error, not a reason to retry."""
    try:
        host_keys = tuple(asyncssh.import_public_key(key) for key in hop.host_keys)
    except (asyncssh.KeyImportError, ValueError):
        raise ValueError(f"{hop.where()}: a pinned host key is not a valid SSH public key") \
            from None
    client_key = None
    credentials = hop.credentials
    if credentials.private_key:
        try:
            client_key = asyncssh.import_private_key(credentials.private_key,
                                                     credentials.passphrase)
        except (asyncssh.KeyImportError, ValueError):
            raise ValueError(f"{hop.where()}: the private key cannot be read "
                             "(wrong format or passphrase)") from None
    return Login(hop, host_keys, client_key)


@dataclass
class SshCounters:
    """What an `SshConnection` has done so far, as plain numbers (the operator's metrics read
    them)."""

    connects: int = 0
    """Connections opened."""
    reconnects: int = 0
    """Connections opened after the first, each replacing a lost one."""
    channel_waits: int = 0
    """Commands that waited for a free channel (all of `max_sessions` were in use)."""
    channel_wait_seconds: float = 0.0


class SshConnection:
    """The shared SSH connection to one compute resource, through its jump hosts."""

    def __init__(self, target: SshTarget) -> None:
        self.target = target
        self._connection: asyncssh.SSHClientConnection | None = None
        self._jumps: list[asyncssh.SSHClientConnection] = []
        self._sftp: tuple[asyncssh.SSHClientConnection, asyncssh.SFTPClient] | None = None
        self._lock = asyncio.Lock()
        self._sftp_lock = asyncio.Lock()
        # One channel stays with the shared SFTP session.
        self._capacity = max(1, target.max_sessions - 1)
        self._channels = asyncio.Semaphore(self._capacity)
        self._busy = 0
        self._backoff = 0.0
        self._next_attempt = 0.0
        self._last_error = ""
        self._logins: tuple[Login, ...] | None = None
        self.counters = SshCounters()

    @property
    def username(self) -> str:
        return self.target.credentials.username

    @property
    def connected(self) -> bool:
        """Whether a connection is open now."""
        return self._connection is not None

    def where(self) -> str:
        return self.target.route[-1].where()

    async def logins(self) -> tuple[Login, ...]:
        """Every hop's keys, imported once in a thread (ValueError: a key cannot be read)."""
        if self._logins is None:
            self._logins = await asyncio.to_thread(
                lambda: tuple(import_login(hop) for hop in self.target.route))
        return self._logins

    async def connect(self) -> asyncssh.SSHClientConnection:
        """The open connection, or a new one (RemoteUnavailable while the server is not there)."""
        async with self._lock:
            if self._connection is not None:
                return self._connection
            now = time.monotonic()
            if now < self._next_attempt:
                raise RemoteUnavailable(
                    f"{self.where()}: retrying in {self._next_attempt - now:.0f} s "
                    f"after: {self._last_error}"
                )
            logins = await self.logins()  # a bad key is a configuration error, not a retry
            try:
                async with asyncio.timeout(self.target.connect_timeout):
                    self._connection = await self._open(logins)
            except (OSError, asyncssh.Error, TimeoutError) as error:
                self._backoff = min(BACKOFF_MAX, max(BACKOFF_START, 2 * self._backoff))
                self._next_attempt = time.monotonic() + self._backoff
                self._last_error = describe(error)
                raise RemoteUnavailable(f"{self.where()}: {self._last_error}") from None
            self._backoff = 0.0
            if self.counters.connects:
                self.counters.reconnects += 1
            self.counters.connects += 1
            return self._connection

    async def _open(self, logins: Sequence[Login]) -> asyncssh.SSHClientConnection:
        """Log in to each hop through the one before; the last hop's connection."""
        opened: list[asyncssh.SSHClientConnection] = []
        try:
            for login in logins:
                try:
                    opened.append(await asyncssh.connect(
                        tunnel=opened[-1] if opened else None, **_options(login)))
                except (OSError, asyncssh.Error) as error:
                    if login is logins[-1]:
                        raise
                    raise _HopFailed(f"jump host {login.hop.where()}: {describe(error)}") \
                        from None
        except BaseException:
            for connection in reversed(opened):
                connection.close()
            raise
        self._jumps = opened[:-1]
        return opened[-1]

    async def drop(self, connection: asyncssh.SSHClientConnection | None,
                   error: BaseException) -> RemoteUnavailable:
        """Close `connection` after it failed, unless it was already replaced; the error to
        raise."""
        self._last_error = describe(error)
        if connection is not None and connection is self._connection:
            await self.close()
        return RemoteUnavailable(f"{self.where()}: connection lost: {self._last_error}")

    async def run_bytes(self, script: str, *, timeout: float = DEFAULT_TIMEOUT) -> BytesResult:
        """Run a bash script on one channel; its exit status and output."""
        refusals = 0
        while True:
            if refusals:  # the server's sessions were all taken: let some end first
                await asyncio.sleep(min(REFUSAL_PAUSE * 2 ** refusals, 1.0))
            async with self._channel():
                # Connected after the wait for a channel: the connection current then.
                connection = await self.connect()
                try:
                    result = await connection.run(
                        "bash -s", input=wrap_script(script).encode(), encoding=None,
                        timeout=timeout, check=False)
                    if result.exit_status is None and result.exit_signal is None:
                        # The channel ended without a status: the connection went with it.
                        raise ConnectionResetError(
                            errno.ECONNRESET, "the connection closed while the command ran")
                    break
                except asyncssh.TimeoutError:
                    # One slow command: its channel is closed, the shared connection stays.
                    raise CommandTimedOut(
                        f"{self.where()}: the command did not finish within {timeout:g} s"
                    ) from None
                except asyncssh.ChannelOpenError as error:
                    if connection.is_closed():
                        raise await self.drop(connection, error) from None
                    refusals += 1
                    self._refused(error, refusals)
                except (OSError, asyncssh.Error) as error:
                    raise await self.drop(connection, error) from None
        stdout = result.stdout if isinstance(result.stdout, bytes) else b""
        return BytesResult(
            exit_status=result.exit_status if result.exit_status is not None else 255,  # a signal
            stdout=stdout,
            stderr=_text(result.stderr),
        )

    def _refused(self, error: asyncssh.ChannelOpenError, refusals: int) -> None:
        """The server refused one more channel (its MaxSessions is lower than ours). While
        others are open, keep this one held for good, so that fewer are used; either way
        the caller tries again shortly, and gives up after `MAX_REFUSALS`."""
        if refusals > MAX_REFUSALS:
            raise RemoteUnavailable(
                f"{self.where()}: the server refused a channel {refusals} times: "
                f"{error.reason}") from None
        if self._busy > 1 and self._capacity > 1:
            _log.warning("%s refused a channel (%s): using one fewer than maxSessions",
                         self.where(), error.reason)
            self._capacity -= 1
            self._busy -= 1  # held for good: _channel() does not release it
            raise _Retired

    @contextlib.asynccontextmanager
    async def _channel(self) -> AsyncIterator[None]:
        """Hold one of the channels; a wait for one is counted."""
        started = time.monotonic()
        waited = self._channels.locked()
        await self._channels.acquire()
        if waited:
            self.counters.channel_waits += 1
            self.counters.channel_wait_seconds += time.monotonic() - started
        self._busy += 1
        retired = False
        try:
            yield
        except _Retired:
            retired = True  # the channel stays taken; the caller tries again on another
        finally:
            if not retired:
                self._busy -= 1
                self._channels.release()

    async def sftp_session(self) -> tuple[asyncssh.SSHClientConnection, asyncssh.SFTPClient]:
        """The shared SFTP session, started on first use, and the connection it runs on."""
        connection = await self.connect()
        try:
            async with self._sftp_lock:  # concurrent first uses must share one session
                if self._sftp is None or self._sftp[0] is not connection:
                    async with asyncio.timeout(self.target.sftp_timeout):
                        self._sftp = (connection, await connection.start_sftp_client())
                return self._sftp
        except TimeoutError:
            raise RemoteUnavailable(f"{self.where()}: the SFTP session did not start within "
                                    f"{self.target.sftp_timeout:g} s") from None
        except asyncssh.ChannelOpenError as error:
            if connection.is_closed():
                raise await self.drop(connection, error) from None
            raise RemoteUnavailable(  # the server's sessions are all taken: not a lost link
                f"{self.where()}: the server refused the file session: {error.reason}") from None
        except (OSError, asyncssh.Error) as error:
            raise await self.drop(connection, error) from None

    def sftp_stuck(self, client: asyncssh.SFTPClient, remote: str) -> RemoteUnavailable:
        """Drop the SFTP session `client`, which did not answer a request about `remote` in
        time (the next use starts a new one, on the same connection); the error to raise."""
        if self._sftp is not None and self._sftp[1] is client:
            self._sftp = None
        client.exit()
        return RemoteUnavailable(f"{self.where()}: {remote}: the SFTP server did not answer "
                                 f"within {self.target.sftp_timeout:g} s")

    async def sftp_failure(self, connection: asyncssh.SSHClientConnection,
                           error: asyncssh.Error | ConnectionError, remote: str) -> OSError:
        """The OSError for a failed SFTP operation on `connection`; a lost connection is
        dropped. A connection reset while writing arrives as a plain ConnectionError."""
        if isinstance(error, RemoteUnavailable):
            return error
        if not isinstance(error, asyncssh.SFTPError) or isinstance(
            error, asyncssh.SFTPConnectionLost | asyncssh.SFTPNoConnection
        ):
            return await self.drop(connection, error)
        kind: type[OSError] = OSError
        if isinstance(error, asyncssh.SFTPNoSuchFile | asyncssh.SFTPNoSuchPath):
            kind = FileNotFoundError
        elif isinstance(error, asyncssh.SFTPPermissionDenied):
            kind = PermissionError
        return kind(f"{remote}: {error.reason}")

    async def close(self) -> None:
        connection, self._connection, self._sftp = self._connection, None, None
        jumps, self._jumps = self._jumps, []
        for each in [connection, *reversed(jumps)]:
            if each is not None:
                each.close()
                with contextlib.suppress(Exception):
                    await each.wait_closed()


class _Retired(Exception):
    """A channel the server refused: it is kept taken, and the command tried again."""


class _HopFailed(OSError):
    """Logging in to a jump host failed; the message names it."""


def _options(login: Login) -> dict[str, object]:
    """asyncssh's connect options for one hop: pinned keys only, no agent or config file."""
    hop = login.hop
    return {
        "host": hop.host,
        "port": hop.port,
        "username": hop.credentials.username,
        "known_hosts": (list(login.host_keys), [], []),
        "client_keys": [login.client_key] if login.client_key is not None else [],
        "password": hop.credentials.password,
        "agent_path": None,
        "config": None,
        "keepalive_interval": KEEPALIVE_INTERVAL,
        "keepalive_count_max": KEEPALIVE_COUNT,
        "encryption_algs": PREFERRED_CIPHERS,
    }


def _text(value: str | bytes | None) -> str:
    if value is None:
        return ""
    return value.decode(errors="replace") if isinstance(value, bytes) else value


def describe(error: BaseException) -> str:
    """A short, secret-free description of a connection error."""
    if isinstance(error, _HopFailed):
        return str(error)
    if isinstance(error, asyncssh.HostKeyNotVerifiable):
        return "the server's host key does not match the pinned key (refused)"
    if isinstance(error, asyncssh.PermissionDenied):
        return "authentication failed (permission denied)"
    if isinstance(error, TimeoutError):
        return "timed out"
    if isinstance(error, asyncssh.DisconnectError):
        return f"disconnected: {error.reason}"
    if isinstance(error, asyncssh.ChannelOpenError):
        return f"channel refused: {error.reason}"
    if isinstance(error, OSError):
        return error.strerror or type(error).__name__
    return str(error) or type(error).__name__
