"""The OpenSSH client as a data mover for large files, both ways.

asyncssh frames and encrypts every SSH packet with Python-level work, so on a small
machine a transfer through it is CPU-bound below OpenSSH's speed (benchmarks/staging.py).
A large file is therefore carried by an `ssh` child process instead, over a connection of
its own (the shared one stays for everything else). The child reads the local file itself
(its standard input) for an upload, or writes it itself (its standard output) for a
download, so no byte passes through Python; progress is the position in the file that the
child has got to, polled.

The child logs in as the shared connection does, through the same jump hosts: an OpenSSH
configuration file names each hop (`ProxyJump` chains them, and the `ssh` that OpenSSH
starts for each jump reads the same file), with its address, user, private key (decrypted,
if it has a passphrase) and the host keys pinned for it in a known_hosts file. All of
these are memory files (memfd, mode 0600) that no directory lists: the children open
them as /proc/<our pid>/fd/<n>, which only our user (and root) may, and they are closed as
soon as the child has logged in; they vanish with this process even if it is killed. No
agent or password prompt is used, and nothing secret is on a command line. A password
cannot be given to OpenSSH that way, so logins with one stay with asyncssh (`usable`), as
they do where there is no memfd or /proc.

The children of one compute resource share one connection (OpenSSH's ControlMaster,
`Master`): the first large transfer starts it, a child of ours that logs in like the
others and then waits; every transfer's child then opens a session over it, which takes
about 10 ms instead of the 0.2 to 0.5 s of a login (more on a busy machine), and hands it
its file: the master reads or writes the file itself. It is stopped a while after the
last transfer (`SshTarget.shared_idle`, and when the resource's remote closes); one that
died is started anew for the next transfer. Its control socket is in a directory of its own
(mode 0700), and OpenSSH serves only its own user on it.

The remote command is parsed by the account's login shell (which may be csh), so it is
one fixed text in single quotes, the same in every shell, with the remote path inside it
base64-encoded. dd reads and writes at the offsets given, never appending: a writer left
over from an attempt cut off can only write the same bytes to the same places.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import re
import shutil
import tempfile
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from cerise.remote.ssh import Login, SshHop

CIPHERS = (
    "aes128-gcm@openssh.com,aes256-gcm@openssh.com,chacha20-poly1305@openssh.com,"
    "aes128-ctr,aes192-ctr,aes256-ctr"
)
"""OpenSSH's default ciphers with AES-GCM first: on CPUs with AES instructions it costs
less CPU per byte than ChaCha20-Poly1305 (benchmarks/staging.py shows sftp with both)."""
HOP_ALIAS = "cerise-hop-{}"
"""The names by which the configuration file and the known_hosts file know the hops."""
_PLAIN = re.compile(r"[A-Za-z0-9_.@:+-]+")
READY = b"cerise-ready\n"
"""What the remote command prints first, on standard error: the child has logged in."""
MASTER_STOP = 5.0
"""Seconds that the shared connection gets to end when stopped, before it is killed."""
PROGRESS_INTERVAL = 0.01
"""Seconds between looks at how far the child has read (a chunk of 8 MiB takes longer)."""


class MoverFailed(Exception):
    """The `ssh` child failed; it had read `sent` bytes of the file by then."""

    def __init__(self, message: str, *, logged_in: bool, sent: int) -> None:
        super().__init__(message)
        self.logged_in = logged_in
        self.sent = sent


@dataclass(frozen=True)
class Account:
    """Where and as whom the child logs in: every hop's keys, the jump hosts first."""

    logins: tuple[Login, ...] = field(repr=False)
    connect_timeout: float


def usable(route: Sequence[SshHop]) -> bool:
    """Whether an `ssh` child can log in along `route`: private keys (not passwords), OpenSSH
    installed, memory files that it can open, and hosts and users that a configuration file
    holds as they are (nothing for OpenSSH to expand or split)."""
    return (all(hop.credentials.private_key and _PLAIN.fullmatch(hop.host)
                and _PLAIN.fullmatch(hop.credentials.username) for hop in route)
            and shutil.which("ssh") is not None
            and hasattr(os, "memfd_create") and os.path.isdir(f"/proc/{os.getpid()}/fd"))


async def send(account: Account, local: Path, remote: str, start: int, end: int,
               reached: Callable[[int], None], control: str | None = None) -> int:
    """Write bytes `start` to `end` of `local` into `remote` at the same offsets; bytes sent.

    `reached` is told the position reached as the child reads on; the child goes through
    the master listening on `control`, if given. Raises MoverFailed.
    """
    command = (f'exec dd of="${{p%x}}" bs=1M seek={start} count={end - start} '
               "oflag=seek_bytes iflag=count_bytes,fullblock conv=notrunc status=none")
    return await _move(account, _command(remote, command), local, start, end, reached,
                       upload=True, control=control)


async def receive(account: Account, remote: str, local: Path, start: int, end: int,
                  reached: Callable[[int], None], control: str | None = None) -> int:
    """Write bytes `start` to `end` of `remote` into `local` (created if missing) at the
    same offsets; bytes received. `reached` is told the position reached as the child
    writes on; `control` as for `send`. Raises MoverFailed."""
    command = (f'exec dd if="${{p%x}}" bs=1M skip={start} count={end - start} '
               "iflag=skip_bytes,count_bytes,fullblock status=none")
    return await _move(account, _command(remote, command), local, start, end, reached,
                       upload=False, control=control)


async def _move(account: Account, command: str, local: Path, start: int, end: int,
                reached: Callable[[int], None], *, upload: bool, control: str | None) -> int:
    """Run `command` in an `ssh` child with `local` as its standard input (`upload`) or
    output, from `start`; the bytes moved once it has moved up to `end`."""
    try:
        login = _Login(account)
    except OSError as error:
        raise MoverFailed(f"no memory file for ssh: {error}", logged_in=False, sent=0) from None
    file: BinaryIO | None = None
    process: asyncio.subprocess.Process | None = None
    errors: asyncio.Future[str] | None = None
    try:
        file = await asyncio.to_thread(_open_at, local, start, upload)
        try:
            process = await asyncio.create_subprocess_exec(
                *_argv(account, login, control), command,
                stdin=file if upload else asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.DEVNULL if upload else file,
                stderr=asyncio.subprocess.PIPE,
                start_new_session=True)  # a Ctrl-C meant for the operator is not for it
        except OSError as error:
            raise MoverFailed(f"ssh cannot start: {error}", logged_in=False, sent=0) from None
        assert process.stderr is not None
        refusal = await _logged_in(process.stderr, account.connect_timeout + 10)
        login.close()
        if refusal is not None:
            raise MoverFailed(f"ssh could not log in: {refusal}", logged_in=False, sent=0)
        errors = asyncio.ensure_future(_stderr(process.stderr))
        # The child shares the file's offset with us: it tells how far it has got.
        position = await _follow(process, file.fileno(), end, reached)
        status = await process.wait()
        if status != 0 or position < end:
            raise MoverFailed(f"ssh exited with {status}: {await errors}", logged_in=True,
                              sent=position - start)
        return position - start
    finally:
        if process is not None and process.returncode is None:
            with contextlib.suppress(ProcessLookupError):  # it may end meanwhile
                process.kill()
            await process.wait()
        if errors is not None and not errors.done():
            errors.cancel()
        if file is not None:
            await asyncio.to_thread(file.close)
        login.close()


def _open_at(path: Path, start: int, reading: bool) -> BinaryIO:
    """`path` open at `start`: to read, or to write (created if missing, never truncated)."""
    file: BinaryIO = path.open("rb") if reading else os.fdopen(
        os.open(path, os.O_WRONLY | os.O_CREAT, 0o666), "wb", buffering=0)
    file.seek(start)
    return file


async def _follow(process: asyncio.subprocess.Process, fd: int, end: int,
                  reached: Callable[[int], None]) -> int:
    """Report the position the child has read or written to until it ends; the last one."""
    ended = asyncio.ensure_future(process.wait())
    try:
        while True:
            done, _ = await asyncio.wait({ended}, timeout=PROGRESS_INTERVAL)
            position = min(end, os.lseek(fd, 0, os.SEEK_CUR))
            reached(position)
            if done:
                return position
    finally:
        ended.cancel()


class Master:
    """The connection that a compute resource's `ssh` children share (see the module
    docstring); `use` it around each child."""

    def __init__(self, idle: float) -> None:
        """`idle`: seconds the master stays after its last user."""
        self._idle_seconds = idle
        self._process: asyncio.subprocess.Process | None = None
        self._directory: str | None = None
        self._errors: asyncio.Future[str] | None = None
        self._lock = asyncio.Lock()
        self._users = 0
        self._idle: asyncio.Task[None] | None = None

    @contextlib.asynccontextmanager
    async def use(self, account: Account) -> AsyncIterator[str]:
        """The control socket of a master logged in (started if need be) for `account`,
        kept while in use. Raises MoverFailed if it cannot log in."""
        async with self._lock:
            if self._idle is not None:
                self._idle.cancel()
                self._idle = None
            if self._process is None or self._process.returncode is not None:
                await self._stop()
                await self._start(account)
            assert self._directory is not None
            self._users += 1
        try:
            yield f"{self._directory}/master"
        finally:
            self._users -= 1
            if not self._users:
                self._idle = asyncio.ensure_future(self._stop_after(self._idle_seconds))

    async def close(self) -> None:
        """Stop the master (it ends once its last child's session has)."""
        async with self._lock:
            if self._idle is not None:
                self._idle.cancel()
                self._idle = None
            await self._stop()

    async def _stop_after(self, seconds: float) -> None:
        await asyncio.sleep(seconds)
        async with self._lock:
            if not self._users:
                self._idle = None
                await self._stop()

    async def _start(self, account: Account) -> None:
        try:
            login = _Login(account)
        except OSError as error:
            raise MoverFailed(f"no memory file for ssh: {error}", logged_in=False,
                              sent=0) from None
        try:
            self._directory = await asyncio.to_thread(tempfile.mkdtemp, prefix="cerise-ssh-")
            try:
                self._process = await asyncio.create_subprocess_exec(
                    *_argv(account, login, f"{self._directory}/master", master=True),
                    _WAIT,
                    stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.DEVNULL,
                    stderr=asyncio.subprocess.PIPE, start_new_session=True)
            except OSError as error:
                raise MoverFailed(f"ssh cannot start: {error}", logged_in=False,
                                  sent=0) from None
            assert self._process.stderr is not None
            refusal = await _logged_in(self._process.stderr, account.connect_timeout + 10)
            if refusal is not None:
                raise MoverFailed(f"ssh could not log in: {refusal}", logged_in=False, sent=0)
            self._errors = asyncio.ensure_future(_stderr(self._process.stderr))
        except BaseException:
            await self._stop()
            raise
        finally:
            login.close()

    async def _stop(self) -> None:
        process, self._process = self._process, None
        if process is not None and process.returncode is None:
            assert process.stdin is not None
            process.stdin.close()  # its own session ends: then it does
            try:
                async with asyncio.timeout(MASTER_STOP):
                    await process.wait()
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
                await process.wait()
        if self._errors is not None:
            self._errors.cancel()
            self._errors = None
        directory, self._directory = self._directory, None
        if directory is not None:
            await asyncio.to_thread(shutil.rmtree, directory, ignore_errors=True)


class _Login:
    """The configuration, key and known_hosts files for one child, in memory (see the module
    docstring)."""

    def __init__(self, account: Account) -> None:
        self._fds: list[int] = []
        try:
            self.config = self._file("cerise-ssh-config", self._config(account).encode())
        except BaseException:
            self.close()
            raise

    def _config(self, account: Account) -> str:
        known_hosts = "".join(
            f"{HOP_ALIAS.format(index)} {key.export_public_key().decode().strip()}\n"
            for index, login in enumerate(account.logins) for key in login.host_keys)
        blocks = []
        for index, login in enumerate(account.logins):
            assert login.client_key is not None, "usable() lets only key logins through"
            key = self._file("cerise-key", login.client_key.export_private_key())
            hop = login.hop
            lines = [f"Host {HOP_ALIAS.format(index)}", f"HostName {hop.host}",
                     f"Port {hop.port}", f"User {hop.credentials.username}",
                     f"IdentityFile {key}", f"HostKeyAlias {HOP_ALIAS.format(index)}"]
            if index:
                lines.append(f"ProxyJump {HOP_ALIAS.format(index - 1)}")
            blocks.append("\n  ".join(lines))
        options = {
            **OPTIONS,
            "UserKnownHostsFile": self._file("cerise-known-hosts", known_hosts.encode()),
            "ConnectTimeout": str(max(1, round(account.connect_timeout))),
        }
        blocks.append("\n  ".join(["Host *", *(f"{name} {value}" for name, value in
                                               options.items())]))
        return "\n".join(blocks) + "\n"

    def _file(self, name: str, data: bytes) -> str:
        """A memory file holding `data`, and the path by which a child opens it."""
        fd = os.memfd_create(name, os.MFD_CLOEXEC)
        self._fds.append(fd)
        os.fchmod(fd, 0o600)  # OpenSSH refuses a key file that others could read
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        return f"/proc/{os.getpid()}/fd/{fd}"

    def close(self) -> None:
        while self._fds:
            os.close(self._fds.pop())


OPTIONS = {
    "BatchMode": "yes",
    "IdentitiesOnly": "yes",
    "IdentityAgent": "none",
    "PreferredAuthentications": "publickey",
    "GlobalKnownHostsFile": "/dev/null",
    "StrictHostKeyChecking": "yes",
    "CheckHostIP": "no",
    "UpdateHostKeys": "no",
    "ServerAliveInterval": "15",
    "ServerAliveCountMax": "3",
    "Ciphers": CIPHERS,
    "Compression": "no",
    "ControlMaster": "no",
    "ControlPath": "none",
    "ClearAllForwardings": "yes",
    "PermitLocalCommand": "no",
    "LogLevel": "ERROR",
}
"""Every hop's options besides its address, login and keys."""


def _argv(account: Account, login: _Login, control: str | None,
          master: bool = False) -> list[str]:
    """The `ssh` command line up to the remote command: the configuration, the control
    socket (that the child goes through, or as `master` listens on), the last hop."""
    last = HOP_ALIAS.format(len(account.logins) - 1)
    shared = [] if control is None else ["-o", f"ControlPath={control}"]
    return ["ssh", "-F", login.config, *(["-M"] if master else []), *shared, "-T", "-x", "-a",
            "--", last]


_WAIT = f"bash -c 'echo {READY.decode().strip()} >&2; exec cat >/dev/null'"
"""The master's own remote command: say that it runs, then wait until we close its input."""


def _command(remote: str, transfer: str) -> str:
    """The remote command: say on standard error that it runs, then `transfer` (dd, with
    the path in `p`).

    Only the single quotes around the script mean anything to the login shell; `p` gets
    the path with any trailing newline (hence the x)."""
    path = base64.b64encode(remote.encode()).decode()
    script = (f"umask 077; p=$(echo {path} | base64 -d; echo x); "
              f"echo {READY.decode().strip()} >&2; {transfer}")
    return f"bash -c '{script}'"


async def _logged_in(stderr: asyncio.StreamReader, timeout: float) -> str | None:
    """None once the remote command says that it runs (lines that ssh or login scripts print
    before are skipped); else the last line seen, which says why not."""
    seen = [b"no message"]

    async def ready() -> bool:
        while line := await stderr.readline():
            if line == READY:
                return True
            if line.strip():
                seen.append(line)
        return False

    try:
        async with asyncio.timeout(timeout):
            if await ready():
                return None
    except TimeoutError:
        return "no answer in time"
    except ValueError:  # a line longer than the stream's limit
        pass
    return seen[-1].decode(errors="replace").strip()[-300:]


async def _stderr(stderr: asyncio.StreamReader) -> str:
    """The child's last line of standard error (read all along, so that it never blocks)."""
    text = (await stderr.read()).decode(errors="replace").strip()
    return text.splitlines()[-1][-300:] if text else "no message"
