"""Session fixtures that own the real remote side: sshd, Slurm, Grid Engine, Torque wrappers.

Each starts on first use and stops at the end of the session. They need root (sshd switches
user, slurmd and execd run jobs as the test user) and the packages of tools/install-system.sh.
"""

from __future__ import annotations

import dataclasses
import os
import shlex
import subprocess
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from cerise.devenv import gridengine as devenv_gridengine
from cerise.devenv import slurm as devenv_slurm
from cerise.devenv import sshd as devenv_sshd
from cerise.devenv import torque as devenv_torque
from cerise.devenv.process import StartupError
from cerise.remote.jobscript import JobFiles
from cerise.remote.local import LocalRemote
from cerise.remote.protocol import CommandResult, Remote
from cerise.remote.ssh import SshCredentials, SshTarget
from cerise.remote.ssh_remote import SshRemote


def _require_root() -> None:
    if os.geteuid() != 0:
        raise StartupError("the remote test environment needs root (sshd, slurmd, sge_execd)")


@pytest.fixture(scope="session")
def sshd() -> Iterator[devenv_sshd.SshEndpoint]:
    """An sshd on 127.0.0.1 that lets the test user in with a key made for this session."""
    _require_root()
    server = devenv_sshd.start()
    yield server.endpoint
    server.stop()


@pytest.fixture(scope="session")
def slurm() -> Iterator[devenv_slurm.SlurmCluster]:
    """A one-node Slurm cluster; its users need `environment` (SLURM_CONF)."""
    _require_root()
    cluster = devenv_slurm.start()
    yield cluster.cluster
    cluster.stop()


@pytest.fixture(scope="session")
def gridengine() -> Iterator[devenv_gridengine.GridEngineCell]:
    """The Grid Engine cell of this host, running; its users need `environment`."""
    _require_root()
    cell = devenv_gridengine.start()
    yield cell.cell
    cell.stop()


@pytest.fixture(scope="session")
def torque(slurm: devenv_slurm.SlurmCluster) -> devenv_torque.TorqueWrappers:
    """Slurm's Torque wrappers in front of the `slurm` cluster."""
    return devenv_torque.wrappers(slurm)


def ssh_target(sshd: devenv_sshd.SshEndpoint, **changes: Any) -> SshTarget:
    """How to reach the test sshd as its user, with `changes` (e.g. a wrong host key)."""
    target = SshTarget(
        host=sshd.host, port=sshd.port, host_keys=(sshd.host_key,),
        credentials=SshCredentials(sshd.username, private_key=sshd.client_key.read_text()))
    return dataclasses.replace(target, **changes)


def kill_sessions(sshd: devenv_sshd.SshEndpoint) -> None:
    """SIGKILL the server side of every connection to the test sshd: the per-connection
    processes that run as its user, grandchildren of the listener. Those of another sshd (of
    another xdist worker, or of another test) are left alone."""
    config = sshd.client_key.parent / "sshd_config"  # the key lies in the server's state
    listener = _pids("-f", f" -f {config}( |$)")
    privileged = _pids("-P", ",".join(listener)) if listener else []
    if privileged:
        subprocess.run(["pkill", "-KILL", "-u", sshd.username, "-P", ",".join(privileged)],
                       check=False)


def _pids(*pgrep: str) -> list[str]:
    found = subprocess.run(["pgrep", *pgrep], capture_output=True, text=True, check=False)
    return found.stdout.split()


def ssh_remote(sshd: devenv_sshd.SshEndpoint) -> SshRemote:
    """A connection of the tests' own to the test sshd."""
    return SshRemote(ssh_target(sshd))


@pytest.fixture
async def ssh(sshd: devenv_sshd.SshEndpoint) -> AsyncIterator[SshRemote]:
    """A connection to the test sshd, closed after the test."""
    connection = ssh_remote(sshd)
    try:
        yield connection
    finally:
        await connection.close()


@pytest.fixture(params=["ssh", "local"])
async def remote(
    request: pytest.FixtureRequest, sshd: devenv_sshd.SshEndpoint
) -> AsyncIterator[Remote]:
    """Each test twice: over SSH to the test sshd, and on this machine."""
    connection: Remote = ssh_remote(sshd) if request.param == "ssh" else LocalRemote()
    try:
        yield connection
    finally:
        await connection.close()


class CountingRemote:
    """A real remote that counts the commands run on it."""

    def __init__(self, inner: Remote) -> None:
        self.inner = inner
        self.calls = 0

    async def run(self, script: str, *, timeout: float = 120.0) -> CommandResult:
        self.calls += 1
        return await self.inner.run(script, timeout=timeout)


async def make_job_dir(remote: Remote, files: JobFiles) -> None:
    """Create a job directory and its work directory, private to the user, as staging does."""
    made = await remote.run(f"umask 077 && mkdir -p {shlex.quote(files.work)}")
    assert made.exit_status == 0, made.stderr
