"""WorkflowJobs through the operator on real batch schedulers: Slurm, Torque wrappers, SGE."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from cerise.devenv.controlplane import ControlPlane
from cerise.devenv.operator import OperatorProcess
from cerise.devenv.sshd import SshEndpoint
from tests.integration.api_fixtures import poll_until
from tests.integration.operator_fixtures import (
    Resource,
    apply,
    install_example,
    remove,
    wait_for_job,
)
from tests.integration.remote_fixtures import ssh_remote
from tests.integration.test_operator_jobs import (
    FINAL,
    SLEEP,
    WC,
    published,
    stopped,
    submit,
    unique_delay,
    upload,
)

pytestmark = pytest.mark.integration


@contextlib.asynccontextmanager
async def scheduler_resource(
    request: pytest.FixtureRequest, control_plane: ControlPlane, namespace: str,
    sshd: SshEndpoint, scheduler: str, *, environment: tuple[tuple[str, str], ...] = (),
    name: str | None = None, jobs_spec: dict[str, Any] | None = None,
    spec: dict[str, Any] | None = None,
) -> AsyncIterator[Resource]:
    """An ssh ComputeResource on `scheduler` with the example project; `environment` is
    exported after the scheduler's own, `jobs_spec` added to its `jobs`, `spec` to its
    spec."""
    fixture = request.getfixturevalue(scheduler)
    name = name or scheduler
    jobs: dict[str, Any] = {
        "protocol": "ssh", "host": sshd.host, "port": sshd.port, "scheduler": scheduler,
        "environment": [{"name": n, "value": v}
                        for n, v in (*fixture.environment, *environment)],
        "coresPerNode": 2,
    }
    if scheduler == "gridengine":
        jobs |= {"queue": fixture.queue, "parallelEnvironment": fixture.pe}
    else:
        cluster = fixture if scheduler == "slurm" else fixture.slurm
        jobs["queue"] = cluster.partition
    jobs |= jobs_spec or {}
    suffix = uuid.uuid4().hex[:8]
    remote = ssh_remote(sshd)
    base = f"/home/{sshd.username}/.cerise-{suffix}"
    await install_example(
        control_plane, namespace, name,
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "login"},
         "stringData": {"username": sshd.username, "privateKey": sshd.client_key.read_text()}},
        {"apiVersion": "cerise.dev/v1alpha1", "kind": "ComputeResource",
         "metadata": {"name": name},
         "spec": {"credentialsSecret": "login", "hostKeys": [sshd.host_key],
                  "refreshSeconds": 0.5,
                  "files": {"protocol": "sftp", "host": sshd.host, "port": sshd.port,
                            "path": "/home/$CERISE_USERNAME/.cerise-" + suffix},
                  "jobs": jobs, **(spec or {})}})
    try:
        yield Resource(namespace=namespace, name=name, base=base, remote=remote)
    finally:
        await remove(remote, base)


@pytest.fixture(params=["slurm", "torque", "gridengine"])
async def batch_resource(
    request: pytest.FixtureRequest, control_plane: ControlPlane, namespace: str,
    sshd: SshEndpoint,
) -> AsyncIterator[Resource]:
    """An ssh ComputeResource on one of the schedulers, with the example project."""
    async with scheduler_resource(request, control_plane, namespace, sshd,
                                  request.param) as resource:
        yield resource


async def test_wc_runs_to_success_on_the_scheduler(
    control_plane: ControlPlane, operator: OperatorProcess, batch_resource: Resource,
    exchange_dir: Path,
) -> None:
    source = upload(exchange_dir, "words.txt", b"one two\nthree\n")
    submit(control_plane, batch_resource, WC, {"file": source})
    job = await wait_for_job(control_plane, batch_resource.namespace, "job", FINAL, timeout=120)
    assert job["status"]["phase"] == "Success", job["status"]
    counts = published(exchange_dir, job["status"]["output"]["counts"]["location"]).split()
    assert counts[:3] == [b"2", b"3", b"14"]
    assert job["status"]["remoteJobId"].isdigit()
    # What the run cost: Slurm's accounting is on in the test cluster; the others measure
    # themselves (the Torque wrappers' jobs are Slurm's too, but sacct is Slurm's own door).
    cost = job["status"]["accounting"]
    assert cost["source"] == ("sacct" if batch_resource.name == "slurm" else "jobscript"), cost
    assert cost["elapsedSeconds"] > 0 and cost["cpuSeconds"] > 0, cost  # wc: under a second
    assert cost["maxRssBytes"] > 10 * 2**20, "cwltool alone is bigger than that"
    assert cost["cores"] >= 1
    assert cost["coreHours"] == pytest.approx(cost["cores"] * cost["elapsedSeconds"] / 3600)


async def test_cancel_removes_the_job_from_the_scheduler(
    control_plane: ControlPlane, operator: OperatorProcess, batch_resource: Resource,
) -> None:
    delay = unique_delay()
    submit(control_plane, batch_resource, SLEEP, {"delay": delay})
    await wait_for_job(control_plane, batch_resource.namespace, "job", {"Running"}, timeout=120)
    control_plane.kubectl("patch", "wfj", "job", "-n", batch_resource.namespace,
                          "--type=merge", "-p", '{"spec": {"cancel": true}}')
    job = await wait_for_job(control_plane, batch_resource.namespace, "job", FINAL, timeout=120)
    assert job["status"]["phase"] == "Cancelled"
    assert await stopped(batch_resource, delay), "the runner outlived the cancel"


def test_control_characters_in_torque_options_are_refused_with_a_message(
    control_plane: ControlPlane, operator: OperatorProcess, namespace: str, tmp_path: Path,
) -> None:
    canary = tmp_path / "pwned"
    apply(control_plane, namespace, {
        "apiVersion": "cerise.dev/v1alpha1", "kind": "ComputeResource",
        "metadata": {"name": "hostile"},
        "spec": {"files": {"protocol": "local", "path": str(tmp_path / "base")},
                 "jobs": {"protocol": "local", "scheduler": "torque",
                          "schedulerOptions": ["-A", f"x\n$(touch {canary})"]}}})

    def last_error() -> str:
        found = control_plane.kubectl("get", "cres", "hostile", "-n", namespace,
                                      "-o", "jsonpath={.status.lastError}")
        return found.stdout

    poll_until(lambda: "control character" in last_error(), timeout=30,
               what="the refusal in the resource's status")
    assert not canary.exists()
