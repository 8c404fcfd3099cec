"""OpenSSH sshd on 127.0.0.1 for the test user, with host and client keys made for each run.

It runs as root (to switch to the user), listens on a port chosen at run time, accepts public
keys only, and keeps its configuration, keys, authorized_keys and pid file in a private state
directory that teardown removes.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
from dataclasses import dataclass
from pathlib import Path

import asyncssh

from cerise.devenv import statedir
from cerise.devenv.process import Daemon, free_port
from cerise.devenv.system import TEST_USER, require_programs, require_user

SSHD = "/usr/sbin/sshd"
PRIVSEP_DIR = Path("/run/sshd")
"""sshd refuses to start without it; normally made by the init system."""
HOST_KEY = "ssh_host_ed25519_key"
CLIENT_KEY = "client_ed25519"


@dataclass(frozen=True)
class SshEndpoint:
    """How to reach the test sshd: what a compute resource and its credentials would hold."""

    host: str
    port: int
    username: str
    client_key: Path
    """The user's private key (OpenSSH format, no passphrase)."""
    host_key: str
    """The server's public host key line (`ssh-ed25519 AAAA…`), to pin."""

    @property
    def known_hosts(self) -> str:
        """A known_hosts line pinning `host_key` for this host and port."""
        return f"[{self.host}]:{self.port} {self.host_key}\n"


@dataclass
class Sshd:
    """A running sshd; `stop` ends it and removes its state."""

    endpoint: SshEndpoint
    resources: contextlib.ExitStack
    daemon: Daemon
    state: statedir.StateDir

    def stop(self) -> None:
        self.resources.close()

    def go_down(self) -> None:
        """An outage: the server and every open session end; port, keys and config stay.

        Each connection's process is a child of the listener in a session of its own (sshd
        calls setsid), so stopping the listener's process group alone would leave it."""
        if self.daemon.process is not None:
            for pid in _children(self.daemon.process.pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGTERM)
        self.daemon.stop()

    def come_back(self, timeout: float = 30.0) -> None:
        """End an outage: the same server again, on the same port with the same host key."""
        self.state.start(self.daemon)
        port, address = self.endpoint.port, self.endpoint.host
        self.daemon.wait_ready(lambda: _banner(port, address).startswith(b"SSH-2.0-"),
                               timeout=timeout)


def sshd_config(*, port: int, state: Path, user: str, max_sessions: int = 32,
                address: str = "127.0.0.1") -> str:
    """The sshd_config of the test server; every file it names lies in `state`."""
    return f"""\
Port {port}
ListenAddress {address}
HostKey {state / HOST_KEY}
PidFile {state / "sshd.pid"}
AuthorizedKeysFile {state / "authorized_keys"}
AllowUsers {user}
PermitRootLogin no
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
MaxSessions {max_sessions}
MaxStartups {max_sessions}:30:{2 * max_sessions}
Subsystem sftp internal-sftp
LogLevel VERBOSE
"""


def start(*, user: str = TEST_USER, timeout: float = 30.0, address: str = "127.0.0.1") -> Sshd:
    """Start sshd for `user` on `address` and wait until it answers with an SSH banner."""
    require_programs(SSHD)
    require_user(user)
    resources = contextlib.ExitStack()
    try:
        state = statedir.claim("sshd")
        resources.callback(state.release)
        host_key = _write_key(state.path / HOST_KEY)
        client_key = _write_key(state.path / CLIENT_KEY)
        (state.path / "authorized_keys").write_bytes(client_key.export_public_key())
        port = free_port()
        config = state.path / "sshd_config"
        config.write_text(sshd_config(port=port, state=state.path, user=user, address=address))
        PRIVSEP_DIR.mkdir(mode=0o755, exist_ok=True)
        argv = [SSHD, "-D", "-e", "-f", str(config)]
        daemon = state.start(Daemon(name="sshd", argv=argv, log=state.path / "sshd.log"))
        resources.callback(daemon.stop)
        daemon.wait_ready(lambda: _banner(port, address).startswith(b"SSH-2.0-"),
                          timeout=timeout)
    except BaseException:
        resources.close()
        raise
    endpoint = SshEndpoint(
        host=address,
        port=port,
        username=user,
        client_key=state.path / CLIENT_KEY,
        host_key=host_key.export_public_key().decode().strip(),
    )
    return Sshd(endpoint=endpoint, resources=resources, daemon=daemon, state=state)


def _write_key(path: Path) -> asyncssh.SSHKey:
    """Generate an ed25519 key and write its private half, readable by root only."""
    key = asyncssh.generate_private_key("ssh-ed25519")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(key.export_private_key())
    return key


def _banner(port: int, address: str = "127.0.0.1") -> bytes:
    """The first bytes the server at `address`:`port` sends."""
    with socket.create_connection((address, port), timeout=2) as sock:
        return sock.recv(64)


def _children(pid: int) -> list[int]:
    """The processes whose parent is `pid`, from /proc."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError, ValueError):
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(stat.parent.name))
    return found
