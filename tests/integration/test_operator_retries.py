"""A job's work that fails for a passing reason waits and tries again: the job says why,
in its own status, and neither ends in an error nor makes its resource look broken."""

from __future__ import annotations

import json
from typing import Any

import pytest

from cerise.devenv.controlplane import ControlPlane
from cerise.devenv.operator import OperatorProcess
from tests.integration.api_fixtures import poll_until
from tests.integration.operator_fixtures import Resource, wait_for_job
from tests.integration.test_operator_jobs import FINAL, HOSTNAME, submit
from tests.integration.test_operator_outages import events, ready, resource_status

pytestmark = pytest.mark.integration


def job_status(plane: ControlPlane, namespace: str, name: str) -> dict[str, Any]:
    result = plane.kubectl("get", "wfj", name, "-n", namespace, "-o", "json")
    status: dict[str, Any] = json.loads(result.stdout).get("status", {})
    return status


@pytest.mark.parametrize("resource", ["local"], indirect=True)
async def test_installed_steps_that_cannot_be_read_for_a_while_hold_the_job_not_fail_it(
    control_plane: ControlPlane, operator: OperatorProcess, resource: Resource,
) -> None:
    # A loop in the steps' tree makes reading them fail (`find -L` says so and exits 1),
    # as a file system hiccup on the cluster would.
    loop = f"{resource.base}/api/cerise/steps/cerise/loop"
    await resource.remote.run(f"ln -s . '{loop}'")
    submit(control_plane, resource, HOSTNAME)
    namespace = resource.namespace

    def held_or_ended() -> bool:
        status = job_status(control_plane, namespace, "job")
        return ("reading the installed steps" in status.get("message", "")
                or status.get("phase") in FINAL)

    poll_until(held_or_ended, timeout=60, what="the job held, or ended")
    job = await wait_for_job(control_plane, namespace, "job", {"Submitted", *FINAL})
    assert job["status"]["phase"] == "Submitted", job["status"]
    assert "waiting for the compute resource" in job["status"]["message"]
    # The job's failure is its own: the resource stays Ready, with no Warning about it.
    condition = ready(resource_status(control_plane, namespace, resource.name))
    assert condition.get("status") == "True", condition
    assert not [e for e in events(control_plane, namespace, resource.name)
                if e["type"] == "Warning"]

    await resource.remote.run(f"rm '{loop}'")
    job = await wait_for_job(control_plane, namespace, "job", FINAL, timeout=120)
    assert job["status"]["phase"] == "Success", job["status"]
    condition = ready(resource_status(control_plane, namespace, resource.name))
    assert condition.get("status") == "True", condition
