"""Whole-workflow validation in the operator: the CWL loader's refusal, before any staging."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cerise.devenv.controlplane import ControlPlane
from cerise.devenv.operator import OperatorProcess
from tests.integration.operator_fixtures import Resource, apply, wait_for_job

pytestmark = pytest.mark.integration

WRONG_OUTPUT_SOURCE = """\
cwlVersion: v1.2
class: Workflow
inputs: {file: File}
outputs:
  counts: {type: File, outputSource: wc/outptu}
steps:
  wc: {run: cerise/test/wc.cwl, in: {file: file}, out: [output]}
"""


@pytest.mark.parametrize("resource", ["local"], indirect=True)
async def test_a_wrong_output_source_fails_with_the_loaders_message_before_staging(
    control_plane: ControlPlane, operator: OperatorProcess, resource: Resource,
    exchange_dir: Path,
) -> None:
    apply(control_plane, resource.namespace, {
        "apiVersion": "cerise.dev/v1alpha1", "kind": "WorkflowJob", "metadata": {"name": "job"},
        "spec": {"workflow": WRONG_OUTPUT_SOURCE, "computeResource": resource.name,
                 "input": {"file": {"class": "File", "location": "http://127.0.0.1:9/words"}}}})

    job = await wait_for_job(control_plane, resource.namespace, "job", {
        "Success", "Cancelled", "PermanentFailure", "TemporaryFailure", "SystemError"})

    status = job["status"]
    assert status["phase"] == "PermanentFailure", status
    message = " ".join(status["message"].split())
    assert ("workflow.cwl:5:24: Field 'outputSource' references unknown identifier "
            "'wc/outptu'") in message
    assert "cerise.invalid" not in message
    jobs = await resource.remote.run(f"ls '{resource.base}/jobs' 2>/dev/null | wc -l")
    assert jobs.stdout.strip() == "0"
    reasons = json.loads(control_plane.kubectl(
        "get", "events", "-n", resource.namespace, "-o", "json",
        "--field-selector", "involvedObject.name=job").stdout)["items"]
    assert "StagingIn" not in {event["reason"] for event in reasons}
    log = (exchange_dir / "logs" / f"{job['metadata']['uid']}.log").read_text()
    assert "references unknown identifier" in log
