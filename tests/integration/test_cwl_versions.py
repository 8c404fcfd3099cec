"""One workflow in CWL v1.0, v1.1 and v1.2 through every door: the published cerise-client,
the published wes-client, and a WorkflowJob applied with kubectl. The workflow runs an
installed step inside an inline subworkflow whose step is in list form, as the original
Cerise's users write them."""

from __future__ import annotations

import json
import uuid
from functools import partial
from pathlib import Path

import cerise_client
import pytest

from cerise.devenv.controlplane import ControlPlane
from tests.integration import http_calls
from tests.integration.api_fixtures import SINGLE, Api, poll_until
from tests.integration.operator_fixtures import EXCHANGE_URL, apply
from tests.integration.test_rest_wes import wes_client

pytestmark = pytest.mark.integration

VERSIONS = ("v1.0", "v1.1", "v1.2")
WORDS = b"one two three\nfour\n"
COUNTS = ["2", "4", "19"]


def counting(version: str) -> str:
    """Words counted by an installed step, inside an inline subworkflow."""
    return f"""\
cwlVersion: {version}
class: Workflow
requirements:
  SubworkflowFeatureRequirement: {{}}
inputs:
  file: File
outputs:
  counts: {{type: File, outputSource: count/counts}}
steps:
  count:
    run:
      class: Workflow
      inputs: {{file: File}}
      outputs: {{counts: {{type: File, outputSource: wc/output}}}}
      steps:
        - id: wc
          run: cerise/test/wc.cwl
          in: [{{id: file, source: file}}]
          out: [output]
    in: {{file: file}}
    out: [counts]
"""


def ended(job: cerise_client.Job) -> bool:
    return not job.is_running()


def test_the_published_cerise_client_runs_every_version(
    single_user_api: Api, tmp_path: Path
) -> None:
    service = cerise_client.Service("http://localhost", int(single_user_api.url.rsplit(":", 1)[1]))
    source = tmp_path / "words.txt"
    source.write_bytes(WORDS)
    jobs = {}
    for version in VERSIONS:
        job = service.create_job(f"versions-{version.replace('.', '-')}-{uuid.uuid4().hex[:6]}")
        job.set_workflow(counting(version).encode())
        job.add_input_file("file", str(source))
        job.run()
        jobs[version] = job
    for version, job in jobs.items():
        poll_until(partial(ended, job), 90, f"the {version} job ending")
        assert job.state == "Success", (version, job.log)
        assert job.outputs["counts"].text.split()[:3] == COUNTS, version


@pytest.mark.parametrize("version", VERSIONS)
def test_the_published_wes_client_runs_every_version(
    single_user_api: Api, tmp_path: Path, version: str
) -> None:
    (tmp_path / "count.cwl").write_text(counting(version))
    (tmp_path / "words.txt").write_bytes(WORDS)
    (tmp_path / "job.json").write_text(json.dumps({"file": {"class": "File", "path": "words.txt"}}))

    done = wes_client(single_user_api, f"--attachments=file://{tmp_path / 'words.txt'}",
                      str(tmp_path / "count.cwl"), str(tmp_path / "job.json"))

    assert done.returncode == 0, done.stderr
    outputs = json.loads(done.stdout)
    assert http_calls.get(outputs["counts"]["location"]).text.split()[:3] == COUNTS


def test_workflow_jobs_applied_with_kubectl_run_every_version(
    control_plane: ControlPlane, single_user_api: Api
) -> None:
    folder = f"versions-{uuid.uuid4().hex[:8]}"
    (single_user_api.exchange_dir / "input" / folder).mkdir(parents=True)
    (single_user_api.exchange_dir / "input" / folder / "words.txt").write_bytes(WORDS)
    names = {version: f"{folder}-{version.replace('.', '-')}" for version in VERSIONS}
    for version, name in names.items():
        apply(control_plane, SINGLE, {
            "apiVersion": "cerise.dev/v1alpha1", "kind": "WorkflowJob",
            "metadata": {"name": name},
            "spec": {"computeResource": "local", "workflow": counting(version), "input": {
                "file": {"class": "File",
                         "location": f"{EXCHANGE_URL}/input/{folder}/words.txt"}}}})

    def final(name: str) -> bool:
        phase = control_plane.kubectl("get", "wfj", name, "-n", SINGLE, "-o",
                                      "jsonpath={.status.phase}").stdout
        return phase in {"Success", "PermanentFailure", "SystemError", "TemporaryFailure"}

    for version, name in names.items():
        poll_until(partial(final, name), 90, f"the {version} WorkflowJob ending")
        job = json.loads(control_plane.kubectl("get", "wfj", name, "-n", SINGLE, "-o",
                                               "json").stdout)
        assert job["status"]["phase"] == "Success", (version, job["status"])
        location = job["status"]["output"]["counts"]["location"]
        assert http_calls.get(location).text.split()[:3] == COUNTS, version
