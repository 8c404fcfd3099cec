"""OpenSSH sshd on 127.0.0.1 for the test user, with host and client keys made for each run.

It runs as root (to switch to the user), listens on a port chosen at run time, accepts public
keys only, and keeps its configuration, keys, authorized_keys and pid file in a private state
directory that teardown removes.

`start_behind_bastion` starts a cluster reachable only through a jump host: both servers
run in a network namespace of their own, the cluster's on that namespace's loopback
(which nothing outside it can reach), the bastion's on a veth link to this machine.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path

import asyncssh

from cerise.devenv import statedir
from cerise.devenv.process import Daemon, StartupError, free_port
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
        since = self.daemon.log.stat().st_size
        self.state.start(self.daemon)
        _wait_listening(self.daemon, self.endpoint.host, self.endpoint.port, timeout, since)


def sshd_config(*, port: int, state: Path, user: str, max_sessions: int = 32,
                listen: str = "127.0.0.1") -> str:
    """The sshd_config of the test server; every file it names lies in `state`."""
    return f"""\
Port {port}
ListenAddress {listen}
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


def start(*, user: str = TEST_USER, timeout: float = 30.0, max_sessions: int = 32,
          network: PrivateNetwork | None = None, listen: str = "127.0.0.1") -> Sshd:
    """Start sshd for `user` and wait until it listens; in `network`'s namespace if given,
    on its `listen` address there."""
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
        config.write_text(sshd_config(port=port, state=state.path, user=user,
                                      max_sessions=max_sessions, listen=listen))
        PRIVSEP_DIR.mkdir(mode=0o755, exist_ok=True)
        inside = ["ip", "netns", "exec", network.name] if network is not None else []
        argv = [*inside, SSHD, "-D", "-e", "-f", str(config)]
        daemon = state.start(Daemon(name="sshd", argv=argv, log=state.path / "sshd.log"))
        resources.callback(daemon.stop)
        _wait_listening(daemon, listen, port, timeout)
    except BaseException:
        resources.close()
        raise
    endpoint = SshEndpoint(
        host=listen,
        port=port,
        username=user,
        client_key=state.path / CLIENT_KEY,
        host_key=host_key.export_public_key().decode().strip(),
    )
    return Sshd(endpoint=endpoint, resources=resources, daemon=daemon, state=state)


@dataclass
class PrivateNetwork:
    """A network namespace linked to this machine by a veth pair: `outside` is this machine's
    end, `inside` the namespace's; the namespace's loopback is its own."""

    name: str
    outside: str
    inside: str

    def remove(self) -> None:
        """Delete the namespace (and with it the veth pair)."""
        subprocess.run(["ip", "netns", "del", self.name], check=False, capture_output=True)


def private_network() -> PrivateNetwork:
    """A new network namespace on a /30 of 10.213.0.0/16 that this machine does not use."""
    require_programs("ip")
    tag = secrets.token_hex(3)
    used = subprocess.run(["ip", "-o", "-4", "addr"], check=True, capture_output=True,
                          text=True).stdout
    subnet = next(n for n in (secrets.randbelow(1 << 14) for _ in range(100))
                  if f"10.213.{n >> 6}.{(n & 63) * 4 + 1}/" not in used)
    third, fourth = subnet >> 6, (subnet & 63) * 4
    network = PrivateNetwork(name=f"cerise-{tag}", outside=f"10.213.{third}.{fourth + 1}",
                             inside=f"10.213.{third}.{fourth + 2}")
    steps = [
        ["ip", "netns", "add", network.name],
        ["ip", "link", "add", f"cvo{tag}", "type", "veth", "peer", "name", f"cvi{tag}",
         "netns", network.name],
        ["ip", "addr", "add", f"{network.outside}/30", "dev", f"cvo{tag}"],
        ["ip", "link", "set", f"cvo{tag}", "up"],
        ["ip", "-n", network.name, "addr", "add", f"{network.inside}/30", "dev", f"cvi{tag}"],
        ["ip", "-n", network.name, "link", "set", f"cvi{tag}", "up"],
        ["ip", "-n", network.name, "link", "set", "lo", "up"],
    ]
    try:
        for step in steps:
            subprocess.run(step, check=True, capture_output=True)
    except subprocess.CalledProcessError as error:
        network.remove()
        raise StartupError(f"{' '.join(error.cmd)}: {error.stderr.decode().strip()}") from None
    return network


@dataclass
class BastionAndCluster:
    """A jump host and a cluster login node that only the jump host can reach; `stop` ends
    both and removes their network."""

    bastion: Sshd
    cluster: Sshd
    """Its endpoint's address is the one the bastion reaches it at (its namespace's loopback)."""
    network: PrivateNetwork

    def stop(self) -> None:
        self.cluster.stop()
        self.bastion.stop()
        self.network.remove()


def start_behind_bastion(*, user: str = TEST_USER, timeout: float = 30.0) -> BastionAndCluster:
    """A cluster sshd reachable only through a bastion sshd; each has keys of its own."""
    network = private_network()
    started: list[Sshd] = []
    try:
        started.append(start(user=user, timeout=timeout, network=network,
                             listen=network.inside))
        started.append(start(user=user, timeout=timeout, network=network))
    except BaseException:
        for server in started:
            server.stop()
        network.remove()
        raise
    bastion, cluster = started
    return BastionAndCluster(bastion=bastion, cluster=cluster, network=network)


def _write_key(path: Path) -> asyncssh.SSHKey:
    """Generate an ed25519 key and write its private half, readable by root only."""
    key = asyncssh.generate_private_key("ssh-ed25519")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(key.export_private_key())
    return key


def _wait_listening(daemon: Daemon, host: str, port: int, timeout: float,
                    since: int = 0) -> None:
    """Wait until sshd says, after byte `since` of its log, that it listens on `host`:`port`
    (it may be in another network namespace, where no banner can be read from here)."""
    said = f"Server listening on {host} port {port}.".encode()

    def listening() -> bool:
        with daemon.log.open("rb") as log:
            log.seek(since)
            return said in log.read()

    daemon.wait_ready(listening, timeout=timeout)


def _children(pid: int) -> list[int]:
    """The processes whose parent is `pid`, from /proc."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError, ValueError):
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(stat.parent.name))
    return found
