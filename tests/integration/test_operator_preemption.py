"""Runs that Slurm preempts and requeues, followed through the operator on the real test
cluster: a job of its `urgent` partition takes the node's cores, the run is requeued
(Slurm holds a requeued job while its credential lives: 10 s in the test cluster), the
job keeps its place and shows the preemption, and it ends as the rerun ends. Likewise a
Grid Engine job rescheduled by `qmod -rj` (run under `flock /tmp/gridengine.lock`)."""

from __future__ import annotations

import asyncio
import shlex
import subprocess
import uuid
from typing import Any

import pytest

from cerise.devenv import slurm as devenv_slurm
from cerise.devenv.controlplane import ControlPlane
from cerise.devenv.gridengine import GridEngineCell
from cerise.devenv.operator import OperatorProcess
from cerise.devenv.sshd import SshEndpoint
from cerise.kube.jobs import WorkflowJob
from cerise.remote.protocol import Remote
from tests.integration.kube_fixtures import watch_until
from tests.integration.operator_fixtures import Resource, apply, wait_for_job
from tests.integration.test_operator_batch import scheduler_resource
from tests.integration.test_operator_jobs import FINAL, SLEEP, job_events, stopped

pytestmark = pytest.mark.integration

PREEMPTED = "preempted: the scheduler requeued the run; it will run again"


def submit_sleep(plane: ControlPlane, resource: Resource, delay: int) -> None:
    apply(plane, resource.namespace, {
        "apiVersion": "cerise.dev/v1alpha1", "kind": "WorkflowJob", "metadata": {"name": "job"},
        "spec": {"workflow": SLEEP, "input": {"delay": delay},
                 "computeResource": resource.name}})


async def preempt(remote: Remote, cluster: devenv_slurm.SlurmCluster, seconds: int) -> str:
    """Submit, as the cluster's user, a job of the urgent partition that needs every core of
    the node for `seconds`; its id."""
    submitted = await remote.run(
        f"SLURM_CONF={shlex.quote(str(cluster.conf))} sbatch --parsable "
        f"--partition={devenv_slurm.URGENT_PARTITION} --ntasks={cluster.cpus} "
        f"--output=/dev/null --wrap={shlex.quote(f'sleep {seconds}')}")
    assert submitted.exit_status == 0, submitted.stderr
    return submitted.stdout.strip()


async def scontrol(remote: Remote, cluster: devenv_slurm.SlurmCluster, job_id: str) -> str:
    shown = await remote.run(f"SLURM_CONF={shlex.quote(str(cluster.conf))} "
                             f"scontrol show job {shlex.quote(job_id)}")
    return shown.stdout


async def wait_for_status(plane: ControlPlane, namespace: str, what: str,
                          condition: Any, timeout: float) -> dict[str, Any]:
    found: dict[str, Any] = await watch_until(
        plane, WorkflowJob, namespace, "job",
        lambda job: bool(condition(job.get("status") or {})), timeout=timeout, what=what)
    return found


async def test_a_preempted_run_is_requeued_shown_and_ends_as_its_rerun(
    request: pytest.FixtureRequest, control_plane: ControlPlane, operator: OperatorProcess,
    namespace: str, sshd: SshEndpoint, slurm: devenv_slurm.SlurmCluster,
) -> None:
    async with scheduler_resource(request, control_plane, namespace, sshd, "slurm") as resource:
        delay = 20 + uuid.uuid4().int % 10
        submit_sleep(control_plane, resource, delay)
        running = await wait_for_job(control_plane, namespace, "job", {"Running"}, timeout=120)
        remote_id = running["status"]["remoteJobId"]
        await preempt(resource.remote, slurm, 5)
        job = await wait_for_status(
            control_plane, namespace, "the preemption in the job's status",
            lambda status: status.get("preempted") is True, timeout=60)
        status = job["status"]
        assert status["phase"] == "Running", status  # keeps its place
        assert status["preemptions"] == 1 and status["preemptedAt"], status
        assert status["message"] == PREEMPTED
        assert status["remoteJobId"] == remote_id
        assert "Restarts=1" in await scontrol(resource.remote, slurm, remote_id)
        assert await stopped(resource, delay), "the preempted runner still runs"
        events = job_events(control_plane, namespace, "job")
        assert [e["message"] for e in events if e["reason"] == "Preempted"] == [PREEMPTED]
        # Slurm runs it again once the credential of its first run expires.
        rerun = await wait_for_status(
            control_plane, namespace, "the rerun running",
            lambda status: status.get("preempted") is False, timeout=240)
        assert rerun["status"]["phase"] == "Running"
        assert rerun["status"]["message"] == "running again after a preemption"
        job = await wait_for_job(control_plane, namespace, "job", FINAL, timeout=180)
        markers = await resource.remote.run(
            f"cd {shlex.quote(job['status']['workDir'])} && cat exit_code started")
    status = job["status"]
    assert status["phase"] == "Success", status
    assert status["remoteJobId"] == remote_id and status["preemptions"] == 1
    code, started = markers.stdout.splitlines()
    assert code == "0 1" and started.endswith(" 1"), markers.stdout  # the rerun's end


async def test_a_job_cancelled_while_it_waits_after_a_preemption_ends_cancelled(
    request: pytest.FixtureRequest, control_plane: ControlPlane, operator: OperatorProcess,
    namespace: str, sshd: SshEndpoint, slurm: devenv_slurm.SlurmCluster,
) -> None:
    async with scheduler_resource(request, control_plane, namespace, sshd, "slurm") as resource:
        submit_sleep(control_plane, resource, 600)
        running = await wait_for_job(control_plane, namespace, "job", {"Running"}, timeout=120)
        await preempt(resource.remote, slurm, 5)
        await wait_for_status(control_plane, namespace, "the preemption in the job's status",
                              lambda status: status.get("preempted") is True, timeout=60)
        control_plane.kubectl("patch", "wfj", "job", "-n", namespace, "--type=merge", "-p",
                              '{"spec": {"cancel": true}}')
        job = await wait_for_job(control_plane, namespace, "job", FINAL, timeout=60)
        shown = await scontrol(resource.remote, slurm, running["status"]["remoteJobId"])
    assert job["status"]["phase"] == "Cancelled", job["status"]
    assert "JobState=CANCELLED" in shown, shown  # not run again after the cancel


async def test_a_grid_engine_job_rescheduled_runs_again_and_ends_as_its_rerun(
    request: pytest.FixtureRequest, control_plane: ControlPlane, operator: OperatorProcess,
    namespace: str, sshd: SshEndpoint, gridengine: GridEngineCell,
) -> None:
    async with scheduler_resource(request, control_plane, namespace, sshd,
                                  "gridengine") as resource:
        # Long enough that the run is still there when Grid Engine signals it (it marks the
        # job Rq at once, and stops the run at the execution daemon's next load report, 5 s
        # apart in the test cell); apart from the sleeps other tests count on the host (the
        # helm node test's 97 s, the retry test's 75-84 s, the Slurm preemption's 20-29 s).
        delay = 50 + uuid.uuid4().int % 8
        submit_sleep(control_plane, resource, delay)
        running = await wait_for_job(control_plane, namespace, "job", {"Running"}, timeout=120)
        remote_id = running["status"]["remoteJobId"]
        rescheduled = await asyncio.to_thread(  # as the cell's manager, as an admin would
            subprocess.run, ["qmod", "-rj", remote_id],
            env=gridengine.client_env(), capture_output=True, text=True,
            timeout=60, check=False)
        assert rescheduled.returncode == 0, rescheduled.stderr
        job = await wait_for_status(
            control_plane, namespace, "the rescheduling in the job's status",
            lambda status: status.get("preempted") is True, timeout=60)
        assert job["status"]["phase"] == "Running" and job["status"]["preemptions"] == 1
        assert job["status"]["message"] == PREEMPTED
        job = await wait_for_job(control_plane, namespace, "job", FINAL, timeout=420)
        markers = await resource.remote.run(
            f"cd {shlex.quote(job['status']['workDir'])} && cat exit_code started")
    status = job["status"]
    assert status["phase"] == "Success", status
    assert status["remoteJobId"] == remote_id
    code, started = markers.stdout.splitlines()
    assert code == "0 1" and started.endswith(" 1"), markers.stdout  # the rerun's end
