"""Runs that their time limit ended, submitted again with more time through the operator:
on the job script's own limit (scheduler `none`) and on real Slurm."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest

from cerise.devenv.controlplane import ControlPlane
from cerise.devenv.gridengine import GridEngineCell
from cerise.devenv.operator import OperatorProcess
from cerise.devenv.sshd import SshEndpoint
from tests.integration.operator_fixtures import apply, install_example, wait_for_job
from tests.integration.test_operator_batch import scheduler_resource
from tests.integration.test_operator_jobs import FINAL, SLEEP, job_events

pytestmark = pytest.mark.integration


def submit_sleep(plane: ControlPlane, namespace: str, resource: str, delay: int,
                 time_limit: int, retry: dict[str, Any] | None = None) -> None:
    spec: dict[str, Any] = {"workflow": SLEEP, "input": {"delay": delay},
                            "computeResource": resource, "timeLimit": time_limit}
    if retry is not None:
        spec["retry"] = retry
    apply(plane, namespace, {"apiVersion": "cerise.dev/v1alpha1", "kind": "WorkflowJob",
                             "metadata": {"name": "job"}, "spec": spec})


def local_resource(plane: ControlPlane, namespace: str, base: Path, **extra: Any) -> None:
    """ComputeResource `local` (scheduler none) in `base`, with `extra` in its spec."""
    apply(plane, namespace, {
        "apiVersion": "cerise.dev/v1alpha1", "kind": "ComputeResource",
        "metadata": {"name": "local"},
        "spec": {"refreshSeconds": 0.2, "files": {"protocol": "local", "path": str(base)},
                 "jobs": {"protocol": "local", "scheduler": "none"}, **extra}})


async def test_a_run_out_of_time_is_retried_up_to_the_ceiling_and_says_what_was_tried(
    control_plane: ControlPlane, operator: OperatorProcess, namespace: str, tmp_path: Path,
) -> None:
    local_resource(control_plane, namespace, tmp_path / "cerise",
                   retry={"attempts": 3, "timeFactor": 2, "maxTimeSeconds": 4})
    await install_example(control_plane, namespace, "local")
    # The job asks for fewer attempts than the resource allows: 2 s, then 4 s (the ceiling).
    submit_sleep(control_plane, namespace, "local", 600, 2, {"attempts": 2})
    job = await wait_for_job(control_plane, namespace, "job", FINAL, timeout=120)
    status = job["status"]
    assert status["phase"] == "PermanentFailure", status
    assert status["message"].endswith(
        "ran out of time 2 times: 2 s, 4 s (ceiling); not tried again: no attempts are left"), \
        status["message"]
    assert "the job reached its time limit of 4 s" in status["message"]
    assert [(a["number"], a["timeLimitSeconds"], a["endedBy"]) for a in status["attempts"]] == \
        [(1, 2, "time limit"), (2, 4, "time limit")]
    assert status["attempt"] == 2
    retried = [e["message"] for e in job_events(control_plane, namespace, "job")
               if "attempt 2 of 2" in e["message"]]
    assert retried and retried[0].startswith("Running → StagingIn: the job reached its time "
                                             "limit of 2 s"), retried
    work = tmp_path / "cerise" / "jobs" / job["metadata"]["uid"]
    assert (work / "exit_code").exists() and (work / "exit_code.2").exists()


async def test_a_run_that_its_time_limit_ended_without_retries_says_so(
    control_plane: ControlPlane, operator: OperatorProcess, namespace: str, tmp_path: Path,
) -> None:
    local_resource(control_plane, namespace, tmp_path / "cerise")
    await install_example(control_plane, namespace, "local")
    submit_sleep(control_plane, namespace, "local", 600, 2)
    job = await wait_for_job(control_plane, namespace, "job", FINAL, timeout=120)
    assert job["status"]["phase"] == "PermanentFailure"
    assert job["status"]["message"].startswith("the job reached its time limit of 2 s"), \
        job["status"]["message"]


async def test_a_slurm_job_that_timed_out_succeeds_with_three_times_the_time(
    request: pytest.FixtureRequest, control_plane: ControlPlane, operator: OperatorProcess,
    namespace: str, sshd: SshEndpoint,
) -> None:
    async with scheduler_resource(request, control_plane, namespace, sshd, "slurm",
                                  spec={"retry": {"attempts": 2, "timeFactor": 3}}) as resource:
        # Slurm's limits are whole minutes: 1 min ends the first run, 3 min let it finish.
        delay = 75 + uuid.uuid4().int % 10
        submit_sleep(control_plane, namespace, "slurm", delay, 60)
        job = await wait_for_job(control_plane, namespace, "job", FINAL, timeout=600)
        ids = await resource.remote.run(f"cd {job['status']['workDir']} && cat remote_id "
                                        "remote_id.2")
    status = job["status"]
    assert ids.stdout.split() == [status["attempts"][0]["remoteJobId"], status["remoteJobId"]]
    assert status["phase"] == "Success", status
    first, = status["attempts"]
    assert (first["number"], first["timeLimitSeconds"], first["endedBy"]) == \
        (1, 60, "time limit")
    assert first["remoteJobId"].isdigit() and status["remoteJobId"] != first["remoteJobId"]
    assert status["attempt"] == 2 and status["timeLimit"] == 180
    # What it cost: both runs, the one its time limit ended and the one that finished.
    cost = status["accounting"]
    assert cost["source"] == "sacct" and cost["elapsedSeconds"] >= 60 + delay, cost
    messages = [e["message"] for e in job_events(control_plane, namespace, "job")]
    assert any("attempt 2 of 2 with a time limit of 3 min" in m for m in messages), messages


async def test_a_grid_engine_job_stopped_at_its_h_rt_succeeds_with_more_time(
    request: pytest.FixtureRequest, control_plane: ControlPlane, operator: OperatorProcess,
    namespace: str, sshd: SshEndpoint, gridengine: GridEngineCell,
) -> None:
    async with scheduler_resource(request, control_plane, namespace, sshd, "gridengine",
                                  spec={"retry": {"attempts": 2, "timeFactor": 10}}):
        # h_rt of 5 s ends the first run (with SIGUSR2: -notify); 50 s let it finish, with
        # room for the CWL runner's start on a loaded machine (a 16 s run once took 25 s).
        submit_sleep(control_plane, namespace, "gridengine", 10, 5)
        job = await wait_for_job(control_plane, namespace, "job", FINAL, timeout=300)
    status = job["status"]
    assert status["phase"] == "Success", status
    assert [(a["timeLimitSeconds"], a["endedBy"]) for a in status["attempts"]] == \
        [(5, "time limit")]
    assert status["timeLimit"] == 50
