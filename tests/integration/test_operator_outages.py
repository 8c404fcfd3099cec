"""Outages of the scheduler while jobs run: no job is marked done or failed because of one,
the resource's status and an Event say what is wrong while it lasts, polling resumes."""

from __future__ import annotations

import asyncio
import shlex
import uuid
from typing import Any

import pytest
from lightkube.resources.core_v1 import Event

from cerise.devenv import slurm as devenv_slurm
from cerise.devenv.controlplane import ControlPlane
from cerise.devenv.operator import OperatorProcess
from cerise.devenv.sshd import SshEndpoint
from cerise.kube.jobs import ComputeResource
from tests.integration.api_fixtures import poll_until
from tests.integration.kube_fixtures import admin_client, as_dict
from tests.integration.operator_fixtures import wait_for_job
from tests.integration.remote_fixtures import ssh_remote
from tests.integration.test_operator_batch import scheduler_resource
from tests.integration.test_operator_jobs import FINAL, SLEEP, submit

pytestmark = pytest.mark.integration

VANISH_GRACE = 10.0
"""The worker's least grace for a job missing from the queue (decisions.MIN_VANISH_GRACE):
an outage longer than it would have failed jobs had it been taken for their end."""


def resource_status(plane: ControlPlane, namespace: str, name: str) -> dict[str, Any]:
    found = admin_client(plane).get(ComputeResource, name, namespace=namespace)
    status: dict[str, Any] = as_dict(found).get("status", {})
    return status


def ready(status: dict[str, Any]) -> dict[str, Any]:
    return next((c for c in status.get("conditions", []) if c["type"] == "Ready"), {})


def events(plane: ControlPlane, namespace: str, name: str) -> list[dict[str, Any]]:
    return [as_dict(event) for event in admin_client(plane).list(
        Event, namespace=namespace, fields={"involvedObject.name": name})]


BROKEN_SQUEUE = """#!/bin/sh
# squeue, broken on demand: while {dir}/broken exists it fails as the test says.
if [ -e {dir}/broken ]; then
    date +%s >> {dir}/failures
    case "$(cat {dir}/broken)" in
        garbage) echo '%%% garbage <html> ***'; exit 0 ;;
        *) echo 'squeue: error: Unable to contact slurm controller (connect failure)' >&2; exit 1 ;;
    esac
fi
exec {real} "$@"
"""


@pytest.mark.parametrize("failure", ["fails", "garbage"])
async def test_a_status_command_that_fails_for_many_refreshes_fails_no_job(
    request: pytest.FixtureRequest, control_plane: ControlPlane, operator: OperatorProcess,
    namespace: str, sshd: SshEndpoint, failure: str,
) -> None:
    remote = ssh_remote(sshd)
    folder = f"/home/{sshd.username}/.outage-{uuid.uuid4().hex[:8]}"
    real = (await remote.run("command -v squeue")).stdout.strip()
    await remote.run(f"mkdir -p {shlex.quote(folder)}/bin")
    await remote.write(f"{folder}/bin/squeue",
                       BROKEN_SQUEUE.format(dir=shlex.quote(folder), real=real).encode(),
                       mode=0o755)
    path = f"{folder}/bin:/usr/local/bin:/usr/bin:/bin"
    async with scheduler_resource(request, control_plane, namespace, sshd, "slurm",
                                  environment=(("PATH", path),)) as resource:
        name = submit(control_plane, resource, SLEEP, {"delay": 6})
        await wait_for_job(control_plane, namespace, name, {"Running", *FINAL}, timeout=120)
        await remote.write(f"{folder}/broken", failure.encode())
        loop = asyncio.get_running_loop()
        broken_at = loop.time()

        poll_until(lambda: ready(resource_status(
            control_plane, namespace, resource.name)).get("status") == "False",
            timeout=30, what="the resource becoming not Ready")
        condition = ready(resource_status(control_plane, namespace, resource.name))
        assert condition["reason"] == "SchedulerUnavailable"
        if failure == "fails":
            assert "Unable to contact slurm controller" in condition["message"]
        # the Event follows the status write
        poll_until(lambda: any(e["type"] == "Warning" and e["reason"] == "SchedulerUnavailable"
                               for e in events(control_plane, namespace, resource.name)),
                   timeout=10, what="a Warning Event SchedulerUnavailable")
        # Outlast the sleep and the grace a vanished job gets, with the status still broken.
        while loop.time() - broken_at < 6 + VANISH_GRACE + 2:
            job = await wait_for_job(control_plane, namespace, name, {"Running"}, timeout=5)
            assert job["status"]["phase"] == "Running", job["status"]
            await asyncio.sleep(1)
        failures = await remote.run(f"wc -l < {shlex.quote(folder)}/failures")
        assert int(failures.stdout) >= 3
        await remote.run(f"rm {shlex.quote(folder)}/broken")

        job = await wait_for_job(control_plane, namespace, name, FINAL, timeout=120)
        assert job["status"]["phase"] == "Success", job["status"]
        poll_until(lambda: ready(resource_status(
            control_plane, namespace, resource.name)).get("status") == "True",
            timeout=30, what="the resource becoming Ready again")
        poll_until(lambda: any(e["reason"] == "Ready" for e in
                               events(control_plane, namespace, resource.name)),
                   timeout=10, what="an Event Ready")
    await remote.run(f"rm -rf {shlex.quote(folder)}")


async def test_jobs_running_through_a_slurm_controller_restart_all_succeed(
    request: pytest.FixtureRequest, control_plane: ControlPlane, operator: OperatorProcess,
    namespace: str, sshd: SshEndpoint,
) -> None:
    slurm = request.getfixturevalue("slurm")
    async with scheduler_resource(request, control_plane, namespace, sshd,
                                  "slurm") as resource:
        names = [submit(control_plane, resource, SLEEP, {"delay": 5}, name=f"job-{n}")
                 for n in range(2)]
        for name in names:
            await wait_for_job(control_plane, namespace, name, {"Running"}, timeout=120)
        await asyncio.to_thread(devenv_slurm.stop_controller, slurm)
        try:
            poll_until(lambda: ready(resource_status(
                control_plane, namespace, resource.name)).get("reason") ==
                "SchedulerUnavailable", timeout=30, what="the outage in the resource's status")
            await asyncio.sleep(VANISH_GRACE)  # longer than a vanished job's grace
            for name in names:
                job = await wait_for_job(control_plane, namespace, name, {"Running"}, timeout=5)
                assert job["status"]["phase"] == "Running"
        finally:
            await asyncio.to_thread(devenv_slurm.start_controller, slurm)
        for name in names:
            job = await wait_for_job(control_plane, namespace, name, FINAL, timeout=120)
            assert job["status"]["phase"] == "Success", job["status"]


SLOW_ANSWER_SBATCH = """#!/bin/sh
# sbatch whose answer comes late: the job is queued at once, its id printed {delay} s later.
out=$({real} "$@"); status=$?
touch {dir}/queued
sleep {delay}
printf '%s\\n' "$out"
exit $status
"""


async def test_a_job_deleted_while_its_submit_is_in_flight_leaves_no_batch_job_behind(
    request: pytest.FixtureRequest, control_plane: ControlPlane, operator: OperatorProcess,
    namespace: str, sshd: SshEndpoint,
) -> None:
    remote = ssh_remote(sshd)
    folder = f"/home/{sshd.username}/.slow-{uuid.uuid4().hex[:8]}"
    real = (await remote.run("command -v sbatch")).stdout.strip()
    await remote.run(f"mkdir -p {shlex.quote(folder)}/bin")
    await remote.write(f"{folder}/bin/sbatch", SLOW_ANSWER_SBATCH.format(
        dir=shlex.quote(folder), real=real, delay=4).encode(), mode=0o755)
    path = f"{folder}/bin:/usr/local/bin:/usr/bin:/bin"
    # The batch job may not start for a while: an orphan would wait in the queue.
    async with scheduler_resource(request, control_plane, namespace, sshd, "slurm",
                                  environment=(("PATH", path),),
                                  jobs_spec={"schedulerOptions": ["--begin=now+600"]},
                                  ) as resource:
        submit(control_plane, resource, SLEEP, {"delay": 5})
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 120
        while (await remote.run(f"test -e {shlex.quote(folder)}/queued")).exit_status != 0:
            assert loop.time() < deadline, "the batch job was never queued"
            await asyncio.sleep(0.1)
        job = await wait_for_job(control_plane, namespace, "job", {"StagingIn"}, timeout=5)
        uid = job["metadata"]["uid"]
        control_plane.kubectl("delete", "wfj", "job", "-n", namespace, "--timeout=120s")
        slurm = request.getfixturevalue("slurm")
        exports = "".join(f"export {n}={shlex.quote(v)}\n" for n, v in slurm.environment)
        listed = await remote.run(f"{exports}squeue -h -t all -u \"$(id -un)\" "
                                  f"--name cerise-{uid} -o '%i|%T'")
        assert listed.exit_status == 0, listed.stderr
        states = [line.partition("|")[2] for line in listed.stdout.split()]
        assert not {"PENDING", "RUNNING"} & set(states), listed.stdout
    await remote.run(f"rm -rf {shlex.quote(folder)}")
