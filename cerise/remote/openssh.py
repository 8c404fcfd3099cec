"""The OpenSSH client as a data mover for large uploads.

asyncssh frames and encrypts every SSH packet with Python-level work, so on a small
machine an upload through it is CPU-bound below OpenSSH's speed (benchmarks/staging.py).
A large file is therefore carried by an `ssh` child process instead, over a connection of
its own (the shared one stays for everything else). The child reads the local file itself
(it is its standard input), so no byte passes through Python; progress is the position
that the child has read to, polled.

The child logs in as the shared connection does: the host keys pinned in a known_hosts
file and the Secret's private key (decrypted, if it has a passphrase) in a key file. Both
are memory files (memfd, mode 0600) that no directory lists: the child opens them as
/proc/<our pid>/fd/<n>, which only our user (and root) may, and they are closed as soon as
the child has logged in; they vanish with this process even if it is killed. No
configuration file, agent or password prompt is used, and nothing secret is on its command
line. A password cannot be given to OpenSSH that way, so password logins stay with
asyncssh (`usable`), as they do where there is no memfd or /proc.

The remote command is parsed by the account's login shell (which may be csh), so it is
one fixed text in single quotes, the same in every shell, with the remote path inside it
base64-encoded. dd writes at the offsets given, never appending: a writer left over from
an attempt cut off can only write the same bytes to the same places.
"""

from __future__ import annotations

import asyncio
import base64
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import asyncssh

CIPHERS = (
    "aes128-gcm@openssh.com,aes256-gcm@openssh.com,chacha20-poly1305@openssh.com,"
    "aes128-ctr,aes192-ctr,aes256-ctr"
)
"""OpenSSH's default ciphers with AES-GCM first: on CPUs with AES instructions it costs
less CPU per byte than ChaCha20-Poly1305 (benchmarks/staging.py shows sftp with both)."""
HOST_ALIAS = "cerise-pinned"
"""The name that the known_hosts file gives the pinned host keys, whatever the address."""
READY = b"cerise-ready\n"
"""What the remote command prints first: the child has logged in."""
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
    """Where and as whom the child logs in."""

    host: str
    port: int
    username: str
    key: asyncssh.SSHKey = field(repr=False)
    host_keys: tuple[asyncssh.SSHKey, ...]
    connect_timeout: float


def usable(has_key: bool, host: str, username: str) -> bool:
    """Whether an `ssh` child can log in: a private key (not a password), OpenSSH installed,
    memory files that it can open, and no `%` for OpenSSH to expand in the host or user."""
    return (has_key and "%" not in host + username and shutil.which("ssh") is not None
            and hasattr(os, "memfd_create") and os.path.isdir(f"/proc/{os.getpid()}/fd"))


async def send(account: Account, local: Path, remote: str, start: int, end: int,
               reached: Callable[[int], None]) -> int:
    """Write bytes `start` to `end` of `local` into `remote` at the same offsets; bytes sent.

    `reached` is told the position reached as the child reads on. Raises MoverFailed.
    """
    try:
        login = _Login(account)
    except OSError as error:
        raise MoverFailed(f"no memory file for ssh: {error}", logged_in=False, sent=0) from None
    source: BinaryIO | None = None
    process: asyncio.subprocess.Process | None = None
    errors: asyncio.Future[str] | None = None
    try:
        source = await asyncio.to_thread(_open_at, local, start)
        try:
            process = await asyncio.create_subprocess_exec(
                *_argv(account, login), _command(remote, start, end - start), stdin=source,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
                start_new_session=True)  # a Ctrl-C meant for the operator is not for it
        except OSError as error:
            raise MoverFailed(f"ssh cannot start: {error}", logged_in=False, sent=0) from None
        assert process.stdout is not None
        errors = asyncio.ensure_future(_stderr(process))
        ready = await _logged_in(process.stdout, account.connect_timeout + 10)
        login.close()
        if not ready:
            process.kill()
            raise MoverFailed(f"ssh could not log in: {await errors}", logged_in=False, sent=0)
        # The child shares the file's offset with us: it tells how far it has read.
        position = await _follow(process, source.fileno(), end, reached)
        status = await process.wait()
        if status != 0 or position < end:
            raise MoverFailed(f"ssh exited with {status}: {await errors}", logged_in=True,
                              sent=position - start)
        return position - start
    finally:
        if process is not None and process.returncode is None:
            process.kill()
            await process.wait()
        if errors is not None and not errors.done():
            errors.cancel()
        if source is not None:
            await asyncio.to_thread(source.close)
        login.close()


def _open_at(path: Path, start: int) -> BinaryIO:
    source = path.open("rb")
    source.seek(start)
    return source


async def _follow(process: asyncio.subprocess.Process, fd: int, end: int,
                  reached: Callable[[int], None]) -> int:
    """Report the position the child has read to until it ends; the last position."""
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


class _Login:
    """The key and known_hosts files for one child, in memory (see the module docstring)."""

    def __init__(self, account: Account) -> None:
        self._fds: list[int] = []
        try:
            self.key = self._file("cerise-key", account.key.export_private_key())
            lines = (f"{HOST_ALIAS} {key.export_public_key().decode().strip()}\n"
                     for key in account.host_keys)
            self.known_hosts = self._file("cerise-known-hosts", "".join(lines).encode())
        except BaseException:
            self.close()
            raise

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


def _argv(account: Account, login: _Login) -> list[str]:
    """The `ssh` command line up to the remote command: options, then the destination."""
    options = {
        "BatchMode": "yes",
        "IdentitiesOnly": "yes",
        "IdentityAgent": "none",
        "PreferredAuthentications": "publickey",
        "UserKnownHostsFile": login.known_hosts,
        "GlobalKnownHostsFile": "/dev/null",
        "HostKeyAlias": HOST_ALIAS,
        "StrictHostKeyChecking": "yes",
        "CheckHostIP": "no",
        "UpdateHostKeys": "no",
        "ConnectTimeout": str(max(1, round(account.connect_timeout))),
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
    return [
        "ssh", "-F", "/dev/null", "-T", "-x", "-a", "-i", login.key,
        *(f"-o{name}={value}" for name, value in options.items()),
        "-p", str(account.port), "-l", account.username, "--", account.host,
    ]


def _command(remote: str, start: int, length: int) -> str:
    """The remote command: say it runs, then let dd write `length` bytes from `start`.

    Only the single quotes around the script mean anything to the login shell; `p` gets
    the path with any trailing newline (hence the x)."""
    path = base64.b64encode(remote.encode()).decode()
    script = (
        f"umask 077; echo {READY.decode().strip()}; p=$(echo {path} | base64 -d; echo x); "
        f'exec dd of="${{p%x}}" bs=1M seek={start} count={length} oflag=seek_bytes '
        "iflag=count_bytes,fullblock conv=notrunc status=none"
    )
    return f"bash -c '{script}'"


async def _logged_in(stdout: asyncio.StreamReader, timeout: float) -> bool:
    """Whether the remote command said that it runs (lines that login scripts print before
    are skipped)."""

    async def ready() -> bool:
        while line := await stdout.readline():
            if line == READY:
                return True
        return False

    try:
        return await asyncio.wait_for(ready(), timeout)
    except (TimeoutError, ValueError):  # ValueError: a line longer than the stream's limit
        return False


async def _stderr(process: asyncio.subprocess.Process) -> str:
    """The child's last line of standard error (read all along, so that it never blocks)."""
    assert process.stderr is not None
    text = (await process.stderr.read()).decode(errors="replace").strip()
    return text.splitlines()[-1][-300:] if text else "no message"
