"""A job's per-step status, from the runner's log: operator process, API server, cwltool."""

from __future__ import annotations

import pytest

from cerise.devenv.controlplane import ControlPlane
from cerise.devenv.operator import OperatorProcess
from tests.integration.operator_fixtures import Resource, wait_for_job
from tests.integration.test_operator_jobs import FINAL, submit, workflow

pytestmark = pytest.mark.integration

HOSTNAME_THEN_WC = workflow(
    {"host": {"run": "cerise/test/hostname.cwl", "in": {}, "out": ["output"]},
     "wc": {"run": "cerise/test/wc.cwl", "in": {"file": "host/output"}, "out": ["output"]}},
    {}, {"counts": {"type": "File", "outputSource": "wc/output"}})


@pytest.mark.parametrize("resource", ["local"], indirect=True)
async def test_two_steps_in_order_with_their_times(
    control_plane: ControlPlane, operator: OperatorProcess, resource: Resource,
) -> None:
    submit(control_plane, resource, HOSTNAME_THEN_WC)
    job = await wait_for_job(control_plane, resource.namespace, "job", FINAL)
    status = job["status"]
    assert status["phase"] == "Success", status
    host, wc = status["steps"]
    assert (host["name"], host["state"], wc["name"], wc["state"]) == (
        "host", "Success", "wc", "Success")
    # Kubernetes timestamps (RFC 3339, UTC, whole seconds) compare as text.
    assert host["startTime"] <= host["endTime"] <= wc["startTime"] <= wc["endTime"]
    assert wc["endTime"] <= status["finishedAt"]
