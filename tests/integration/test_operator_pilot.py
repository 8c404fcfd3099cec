"""Pilot mode through the operator on real Slurm: many runs in a few allocations, an
allocation killed under its runs, a run cancelled inside one, requests no allocation fits."""

from __future__ import annotations

import asyncio
import json
import shlex
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from cerise.devenv.controlplane import ControlPlane
from cerise.devenv.operator import OperatorProcess
from cerise.devenv.sshd import SshEndpoint
from cerise.kube.jobs import ComputeResource
from tests.integration import http_calls
from tests.integration.kube_fixtures import admin_client, as_dict
from tests.integration.operator_fixtures import METRICS_URL, Resource, apply, wait_for_job
from tests.integration.test_operator_batch import scheduler_resource
from tests.integration.test_operator_jobs import FINAL, HOSTNAME, SLEEP, published, stopped

pytestmark = pytest.mark.integration


@pytest.fixture
def pilot_settings() -> dict[str, Any]:
    return {"cores": 1, "maxAllocations": 2, "idleSeconds": 5, "timeLimitSeconds": 600}


@pytest.fixture
async def pilot_resource(
    request: pytest.FixtureRequest, control_plane: ControlPlane, namespace: str,
    sshd: SshEndpoint, pilot_settings: dict[str, Any],
) -> AsyncIterator[Resource]:
    async with scheduler_resource(request, control_plane, namespace, sshd, "slurm",
                                  name="pilot", jobs_spec={"pilot": pilot_settings}) as resource:
        yield resource


def resource_status(plane: ControlPlane, resource: Resource) -> dict[str, Any]:
    found = admin_client(plane).get(ComputeResource, resource.name,
                                    namespace=resource.namespace)
    status: dict[str, Any] = as_dict(found).get("status", {})
    return status


def submits(resource: Resource) -> float:
    """Batch jobs the operator submitted to the scheduler for `resource`."""
    text = http_calls.get(METRICS_URL, timeout=10).text
    return sum(sample.value for family in text_string_to_metric_families(text)
               for sample in family.samples
               if sample.name == "cerise_operator_scheduler_commands_total"
               and sample.labels == {"namespace": resource.namespace,
                                     "resource": resource.name, "kind": "submit"})


def run(resource: Resource, name: str, workflow: str, inputs: dict[str, Any] | None = None,
        **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "cerise.dev/v1alpha1", "kind": "WorkflowJob",
            "metadata": {"name": name},
            "spec": {"workflow": workflow, "input": inputs or {},
                     "computeResource": resource.name, **spec}}


async def until(condition: Any, timeout: float, what: str) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await asyncio.to_thread(condition):
        if loop.time() > deadline:
            raise AssertionError(f"{what} did not happen within {timeout} s")
        await asyncio.sleep(0.5)


# An allocation that finds no run for `idleSeconds` ends; under a loaded machine the operator
# can take more than 5 s to queue the next of 20 runs, and a third allocation would then be
# right. 15 s keeps the two allocations the test counts.
@pytest.mark.parametrize("pilot_settings", [
    {"cores": 1, "maxAllocations": 2, "idleSeconds": 15, "timeLimitSeconds": 600}])
async def test_runs_go_through_a_few_allocations_which_end_when_idle(
    control_plane: ControlPlane, operator: OperatorProcess, pilot_resource: Resource,
    exchange_dir: Path,
) -> None:
    count = 20
    apply(control_plane, pilot_resource.namespace,
          *(run(pilot_resource, f"run-{n}", HOSTNAME) for n in range(count)),
          run(pilot_resource, "too-long", SLEEP, {"delay": 1}, timeLimit=3000))
    too_long = await wait_for_job(control_plane, pilot_resource.namespace, "too-long", FINAL)
    assert too_long["status"]["phase"] == "PermanentFailure"
    assert "3000 s" in too_long["status"]["message"]
    assert "timeLimitSeconds" in too_long["status"]["message"]
    for n in range(count):
        job = await wait_for_job(control_plane, pilot_resource.namespace, f"run-{n}", FINAL,
                                 timeout=300)
        assert job["status"]["phase"] == "Success", job["status"]
        assert job["status"]["remoteJobId"].startswith("pilot:")
        cost = job["status"]["accounting"]  # the run's own, not its allocation's
        assert cost["source"] == "pilot" and cost["cores"] == 1, cost
        assert 0 < cost["elapsedSeconds"] < 600 and cost["maxRssBytes"] > 10 * 2**20, cost
        assert published(exchange_dir, job["status"]["output"]["host"]["location"]).strip()
    assert 1 <= submits(pilot_resource) <= 2  # the scheduler saw the allocations only

    await until(lambda: resource_status(control_plane, pilot_resource).get(
        "allocationSummary") == "none", 60, "the idle allocations ending")
    listed = control_plane.kubectl("get", "cres", pilot_resource.name, "-n",
                                   pilot_resource.namespace)
    assert "ALLOCATIONS" in listed.stdout


@pytest.mark.parametrize("pilot_settings", [
    {"cores": 2, "maxAllocations": 1, "idleSeconds": 30, "timeLimitSeconds": 600}])
async def test_runs_of_an_allocation_killed_under_them_run_again_in_another(
    request: pytest.FixtureRequest, control_plane: ControlPlane, operator: OperatorProcess,
    pilot_resource: Resource,
) -> None:
    slurm = request.getfixturevalue("slurm")
    apply(control_plane, pilot_resource.namespace,
          *(run(pilot_resource, f"run-{n}", SLEEP, {"delay": 8})
            for n in range(2)))
    for n in range(2):
        await wait_for_job(control_plane, pilot_resource.namespace, f"run-{n}", {"Running"},
                           timeout=120)
    await until(lambda: [a["state"] for a in resource_status(
        control_plane, pilot_resource).get("allocations", [])] == ["Running"], 30,
        "one Running allocation in the resource's status")
    first = resource_status(control_plane, pilot_resource)["allocations"]
    environment = " ".join(f"{k}={shlex.quote(v)}" for k, v in slurm.environment)
    killed = await pilot_resource.remote.run(f"{environment} scancel {first[0]['id']}")
    assert killed.exit_status == 0, killed.stderr

    for n in range(2):
        job = await wait_for_job(control_plane, pilot_resource.namespace, f"run-{n}", FINAL,
                                 timeout=180)
        assert job["status"]["phase"] == "Success", job["status"]
        log = (await pilot_resource.remote.run(
            f"cat {shlex.quote(job['status']['workDir'])}/stderr*.txt")).stdout
        assert log.count("[job sleep] completed success") == 1  # lost once, ended once
    events = json.loads(control_plane.kubectl(
        "get", "events", "-n", pilot_resource.namespace, "-o", "json").stdout)["items"]
    requeued = [e for e in events if e["reason"] == "Requeued"]
    assert {e["involvedObject"]["name"] for e in requeued} == {"run-0", "run-1"}
    assert all(first[0]["name"] in e["message"] and "attempt 2 of 3" in e["message"]
               for e in requeued)


async def test_a_run_cancelled_inside_an_allocation_stops_alone(
    control_plane: ControlPlane, operator: OperatorProcess, pilot_resource: Resource,
) -> None:
    apply(control_plane, pilot_resource.namespace,
          run(pilot_resource, "stays", SLEEP, {"delay": 6}),
          run(pilot_resource, "goes", SLEEP, {"delay": 600}))
    for name in ("stays", "goes"):
        await wait_for_job(control_plane, pilot_resource.namespace, name, {"Running"},
                           timeout=120)
    # Cancelled once the runner has started the tool (see docs/pilot-mode.md for a cancel
    # that comes while the runner starts it).
    for _ in range(300):
        if (await pilot_resource.remote.run("pgrep -f '^sleep 600$' || true")).stdout:
            break
        await asyncio.sleep(0.2)
    control_plane.kubectl("patch", "wfj", "goes", "-n", pilot_resource.namespace,
                          "--type=merge", "-p", '{"spec": {"cancel": true}}')
    gone = await wait_for_job(control_plane, pilot_resource.namespace, "goes", FINAL)
    assert gone["status"]["phase"] == "Cancelled"
    assert await stopped(pilot_resource, 600, timeout=15)
    stays = await wait_for_job(control_plane, pilot_resource.namespace, "stays", FINAL)
    assert stays["status"]["phase"] == "Success", stays["status"]
