"""A cluster behind a jump host, against real OpenSSH servers: the cluster's sshd listens
where only the bastion's sshd can reach it (`cerise.devenv.sshd.start_behind_bastion`), so
every command and transfer that works here went through the bastion."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import logging
import os
import shlex
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import asyncssh
import pytest

from cerise.devenv import sshd as devenv_sshd
from cerise.devenv.controlplane import ControlPlane
from cerise.devenv.operator import OperatorProcess
from cerise.devenv.sshd import BastionAndCluster, SshEndpoint
from cerise.remote import openssh
from cerise.remote.failures import RemoteUnavailable
from cerise.remote.ssh import SshCredentials, SshHop, SshTarget, import_login
from cerise.remote.ssh_remote import SshRemote
from cerise.remote.transfers import ACCELERATION_THRESHOLD
from tests.integration.operator_fixtures import (
    Resource,
    apply,
    install_example,
    remove,
    wait_for_job,
)
from tests.integration.remote_fixtures import ssh_target
from tests.integration.test_operator_jobs import FINAL, WC, published, submit, upload

pytestmark = pytest.mark.integration

MIB = 1 << 20


@pytest.fixture(scope="module")
def behind() -> Iterator[BastionAndCluster]:
    """A bastion sshd and a cluster sshd that only the bastion reaches, each with keys of
    its own."""
    if os.geteuid() != 0:
        pytest.fail("a private network and sshd need root")
    servers = devenv_sshd.start_behind_bastion()
    yield servers
    servers.stop()


def hop(endpoint: SshEndpoint, **changes: Any) -> SshHop:
    """How to log in to a test sshd as a jump host, with `changes`."""
    login = SshHop(endpoint.host, endpoint.port,
                   SshCredentials(endpoint.username, private_key=endpoint.client_key.read_text()),
                   (endpoint.host_key,))
    return dataclasses.replace(login, **changes)


def through_bastion(behind: BastionAndCluster, **changes: Any) -> SshTarget:
    """The cluster, reached through the bastion."""
    return ssh_target(behind.cluster.endpoint, jumps=(hop(behind.bastion.endpoint),),
                      **changes)


def impostor() -> str:
    return asyncssh.generate_private_key("ssh-ed25519").export_public_key().decode().strip()


@pytest.fixture
async def cluster(behind: BastionAndCluster) -> AsyncIterator[SshRemote]:
    remote = SshRemote(through_bastion(behind))
    try:
        yield remote
    finally:
        await remote.close()


async def test_the_cluster_cannot_be_reached_directly(behind: BastionAndCluster) -> None:
    direct = SshRemote(ssh_target(behind.cluster.endpoint, connect_timeout=5))
    with pytest.raises(RemoteUnavailable):
        await direct.run("true")


async def test_commands_and_files_go_through_the_jump_host(
    cluster: SshRemote, behind: BastionAndCluster, tmp_path: Path
) -> None:
    # the cluster's sshd sees the client where the bastion is: its own loopback
    seen = (await cluster.run("echo $SSH_CONNECTION")).stdout.split()
    assert seen[0] == "127.0.0.1" and seen[3] == str(behind.cluster.endpoint.port)
    base = (await cluster.run("mktemp -d")).stdout.strip()
    try:
        await cluster.write(f"{base}/note", b"through the bastion\n")
        assert await cluster.read(f"{base}/note") == b"through the bastion\n"
        source = tmp_path / "small"
        source.write_bytes(os.urandom(3 * MIB))
        await cluster.upload(source, f"{base}/small")
        await cluster.download(f"{base}/small", tmp_path / "back")
        assert (tmp_path / "back").read_bytes() == source.read_bytes()
    finally:
        await cluster.run(f"rm -rf {shlex.quote(base)}")


async def test_large_files_go_through_the_jump_host_with_openssh(
    cluster: SshRemote, behind: BastionAndCluster, tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    source = tmp_path / "large"
    with source.open("wb") as out:
        for _ in range(ACCELERATION_THRESHOLD // MIB + 2):
            out.write(os.urandom(MIB))
    base = (await cluster.run("mktemp -d")).stdout.strip()
    logins_before = _logins(behind.bastion)  # the operator's connection's among them
    try:
        with caplog.at_level(logging.WARNING):
            await cluster.upload(source, f"{base}/large")
            await cluster.download(f"{base}/large", tmp_path / "back")
        assert "with ssh failed" not in caplog.text
        remote_sum = (await cluster.run(f"sha256sum < {base}/large")).stdout[:64]
        assert remote_sum == hashlib.sha256(source.read_bytes()).hexdigest()
        assert (tmp_path / "back").read_bytes() == source.read_bytes()
    finally:
        await cluster.run(f"rm -rf {shlex.quote(base)}")
    # the ssh children's shared connection logged in to the bastion (with the bastion's
    # key) once for both ways, beside the operator's connection
    assert _logins(behind.bastion) == logins_before + 1


async def test_a_wrong_bastion_host_key_is_refused(behind: BastionAndCluster) -> None:
    jump = hop(behind.bastion.endpoint, host_keys=(impostor(),))
    remote = SshRemote(ssh_target(behind.cluster.endpoint, jumps=(jump,)))
    with pytest.raises(RemoteUnavailable,
                       match=r"jump host .*: the server's host key does not match"):
        await remote.run("true")
    assert not remote.connected


async def test_a_wrong_cluster_host_key_behind_the_bastion_is_refused(
    behind: BastionAndCluster,
) -> None:
    remote = SshRemote(through_bastion(behind, host_keys=(impostor(),)))
    with pytest.raises(RemoteUnavailable, match="host key does not match"):
        await remote.run("true")


async def test_the_openssh_child_refuses_a_wrong_bastion_host_key(
    behind: BastionAndCluster, tmp_path: Path
) -> None:
    """The `ssh` child checks the bastion's key too (asyncssh would have refused first)."""
    wrong = dataclasses.replace(through_bastion(behind), jumps=(
        hop(behind.bastion.endpoint, host_keys=(impostor(),)),))
    logins = await asyncio.to_thread(lambda: tuple(import_login(h) for h in wrong.route))
    source = tmp_path / "data"
    source.write_bytes(b"x" * 1000)
    with pytest.raises(openssh.MoverFailed, match="ssh could not log in") as failed:
        await openssh.send(openssh.Account(logins, 10), source, "/tmp/never-written", 0, 1000,
                           lambda _: None)
    assert not failed.value.logged_in and failed.value.sent == 0


def _logins(server: devenv_sshd.Sshd) -> int:
    """Logins the server has accepted so far, from its log."""
    return server.daemon.log.read_text(errors="replace").count("Accepted publickey")


async def test_a_compute_resource_behind_a_jump_host_runs_a_job(
    behind: BastionAndCluster, control_plane: ControlPlane, operator: OperatorProcess,
    namespace: str, exchange_dir: Path,
) -> None:
    """Through the operator: `spec.jumpHosts` with the bastion's own Secret; the project
    is installed, the job staged, run and fetched back, all through the bastion."""
    bastion, cluster = behind.bastion.endpoint, behind.cluster.endpoint
    suffix = uuid.uuid4().hex[:8]
    apply(control_plane, namespace,
          {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "cluster-login"},
           "stringData": {"username": cluster.username,
                          "privateKey": cluster.client_key.read_text()}},
          {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "bastion-login"},
           "stringData": {"privateKey": bastion.client_key.read_text()}},
          {"apiVersion": "cerise.dev/v1alpha1", "kind": "ComputeResource",
           "metadata": {"name": "behind"},
           "spec": {"credentialsSecret": "cluster-login", "hostKeys": [cluster.host_key],
                    "refreshSeconds": 0.2,
                    "jumpHosts": [{"host": bastion.host, "port": bastion.port,
                                   "username": bastion.username,
                                   "credentialsSecret": "bastion-login",
                                   "hostKeys": [bastion.host_key]}],
                    "files": {"protocol": "sftp", "host": cluster.host, "port": cluster.port,
                              "path": "/home/$CERISE_USERNAME/.cerise-" + suffix},
                    "jobs": {"protocol": "ssh", "host": cluster.host, "port": cluster.port,
                             "scheduler": "none"}}})
    remote = SshRemote(through_bastion(behind))
    resource = Resource(namespace=namespace, name="behind",
                        base=f"/home/{cluster.username}/.cerise-{suffix}", remote=remote)
    try:
        await install_example(control_plane, namespace, "behind")
        submit(control_plane, resource, WC, {"file": upload(exchange_dir, "w.txt", b"a b c\n")})
        job = await wait_for_job(control_plane, namespace, "job", FINAL)
        assert job["status"]["phase"] == "Success", job["status"]
        counts = job["status"]["output"]["counts"]["location"]
        assert published(exchange_dir, counts).split()[:3] == [b"1", b"3", b"6"]
    finally:
        await remove(remote, resource.base)
