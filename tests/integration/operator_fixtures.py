"""Session fixtures for the operator process, and per-test compute resources with a project."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import pytest
from lightkube import codecs
from lightkube.core.resource import NamespacedResource

from cerise.devenv import specialisations
from cerise.devenv.controlplane import ControlPlane
from cerise.devenv.operator import IDENTITY, OperatorProcess
from cerise.devenv.postgres import Postgres
from cerise.devenv.process import free_port
from cerise.devenv.sshd import SshEndpoint
from cerise.kube.jobs import Specialisation, WorkflowJob
from cerise.remote.failures import RemoteUnavailable
from cerise.remote.local import LocalRemote
from cerise.remote.protocol import Remote
from tests.integration.kube_fixtures import admin_client, watch_until
from tests.integration.remote_fixtures import ssh_remote

API_PORT = free_port()
"""The port of the session's single-user apiserver, which serves the operator's exchange."""
EXCHANGE_URL = f"http://localhost:{API_PORT}/files"
METRICS_PORT = free_port()
METRICS_URL = f"http://127.0.0.1:{METRICS_PORT}/metrics"
"""The session operator's Prometheus endpoint."""
RETENTION_SWEEP = 0.5
"""Seconds between the session operator's retention sweeps (only resources with a
`jobRetention` have jobs to delete)."""


@pytest.fixture(scope="session")
def exchange_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The file exchange directory the operator publishes to."""
    path = tmp_path_factory.mktemp("exchange")
    (path / "input").mkdir()
    return path


@pytest.fixture(scope="session")
def operator(
    control_plane: ControlPlane, exchange_dir: Path, tmp_path_factory: pytest.TempPathFactory,
    archive_db: Postgres,
) -> Iterator[OperatorProcess]:
    """The operator, run as in production: a `kopf run` process with its own, least
    privileged identity (ClusterRole `cerise-operator`), for the whole session."""
    process = OperatorProcess(
        kubeconfig=control_plane.kubeconfig_for(IDENTITY[0]), exchange_dir=exchange_dir,
        exchange_url=EXCHANGE_URL, log=tmp_path_factory.mktemp("operator") / "operator.log",
        extra_env={"CERISE_METRICS_PORT": str(METRICS_PORT),
                   "CERISE_RETENTION_SWEEP_SECONDS": str(RETENTION_SWEEP),
                   # only resources with an archiveAfter have jobs to archive
                   "CERISE_ARCHIVE_URL": archive_db.url, "CERISE_ARCHIVE_SWEEP_SECONDS": "0.5",
                   "CERISE_ARCHIVE_RETRY_SECONDS": "0.5",
                   # callbacks retried soon, so a receiver that is down for a while
                   # (tests/integration/test_operator_callbacks.py) gets one in seconds
                   "CERISE_CALLBACK_FIRST_RETRY_SECONDS": "0.5",
                   "CERISE_CALLBACK_MAX_RETRY_SECONDS": "1",
                   # the tests' web servers (tests/integration/web.py) are on the loopback,
                   # which the web fence refuses unless allowed
                   "CERISE_WEB_ALLOW": "127.0.0.1"})
    # The Lease timings are the chart's (15, 10 and 2 s): with `./dev up`'s 5, 3 and 1 s, the
    # session operators on four busy workers stalled past the renew deadline and stopped
    # their resources' work; a killed one's successor waits out the 15 s instead.
    process.start()
    yield process
    process.stop()


@dataclass(frozen=True)
class Resource:
    """A ComputeResource made for one test, with the example project installed."""

    namespace: str
    name: str
    base: str
    remote: Remote


def apply(plane: ControlPlane, namespace: str, *bodies: dict[str, Any]) -> None:
    """Apply the objects in `namespace`, in order, as the admin (server-side apply, over
    one client per control plane: a `kubectl` run costs about 90 ms of CPU)."""
    client = admin_client(plane)
    for body in bodies:
        obj = codecs.from_dict({**body, "metadata": {**body["metadata"], "namespace": namespace}})
        client.apply(cast(NamespacedResource, obj), field_manager="tests", force=True)


@pytest.fixture(params=["local", "ssh"])
async def resource(
    request: pytest.FixtureRequest, control_plane: ControlPlane, namespace: str,
    sshd: SshEndpoint, tmp_path: Path,
) -> AsyncIterator[Resource]:
    """A ComputeResource (local, or ssh to the test sshd) with the example project installed."""
    suffix = uuid.uuid4().hex[:8]
    objects: list[dict[str, Any]] = []
    if request.param == "local":
        remote: Remote = LocalRemote()
        base = str(tmp_path / "cerise")
        spec: dict[str, Any] = {
            "refreshSeconds": 0.2,
            "files": {"protocol": "local", "path": base},
            "jobs": {"protocol": "local", "scheduler": "none"},
        }
    else:
        remote = ssh_remote(sshd)
        base = f"/home/{sshd.username}/.cerise-{suffix}"
        objects.append({
            "apiVersion": "v1", "kind": "Secret", "metadata": {"name": "login"},
            "stringData": {"username": sshd.username,
                           "privateKey": sshd.client_key.read_text()}})
        spec = {
            "credentialsSecret": "login", "hostKeys": [sshd.host_key], "refreshSeconds": 0.2,
            "files": {"protocol": "sftp", "host": sshd.host, "port": sshd.port,
                      "path": "/home/$CERISE_USERNAME/.cerise-" + suffix},
            "jobs": {"protocol": "ssh", "host": sshd.host, "port": sshd.port,
                     "scheduler": "none"},
        }
    objects.append({"apiVersion": "cerise.dev/v1alpha1", "kind": "ComputeResource",
                    "metadata": {"name": request.param}, "spec": spec})
    await install_example(control_plane, namespace, request.param, *objects)
    try:
        yield Resource(namespace=namespace, name=request.param, base=base, remote=remote)
    finally:
        await remove(remote, base)


async def install_example(plane: ControlPlane, namespace: str, resource: str,
                          *first: dict[str, Any]) -> None:
    """Have the operator install the example projects on `resource`; wait until it has.
    The objects `first` are applied just before the Specialisation, in the same run."""
    apply(plane, namespace, *first, specialisations.example([resource]))
    await watch_until(plane, Specialisation, namespace, "example", _installed, timeout=60,
                      what=f"the example Specialisation ready in {namespace}")


def _installed(specialisation: dict[str, Any]) -> bool:
    """True once the Specialisation is Ready; AssertionError if its install failed."""
    status = specialisation.get("status") or {}
    ready = [c for c in status.get("conditions", []) if c["type"] == "Ready"]
    if ready and ready[0]["status"] == "True":
        return True
    assert not (ready and ready[0]["reason"] == "InstallFailed"), f"install failed: {status}"
    return False


async def remove(remote: Remote, base: str) -> None:
    """Remove a test's base directory; a connection lost by the test is reopened once."""
    try:
        await remote.run(f"rm -rf '{base}'")
    except RemoteUnavailable:
        await remote.run(f"rm -rf '{base}'")
    await remote.close()


async def wait_for_job(
    plane: ControlPlane, namespace: str, name: str, phases: set[str], timeout: float = 60
) -> dict[str, Any]:
    """Watch the job until its phase is one of `phases`; return it."""
    return await watch_until(
        plane, WorkflowJob, namespace, name,
        lambda job: (job.get("status") or {}).get("phase") in phases,
        timeout=timeout, what=f"job {name} in {phases}")
