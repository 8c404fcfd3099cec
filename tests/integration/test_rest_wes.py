"""GA4GH WES 1.1 with the published wes-client (wes-service 5.0) and by hand."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from cerise.devenv.controlplane import ControlPlane
from tests.integration import http_calls
from tests.integration.api_fixtures import SINGLE, Api, poll_until

pytestmark = pytest.mark.integration

WC = {"cwlVersion": "v1.2", "class": "Workflow", "inputs": {"file": "File"},
      "outputs": {"counts": {"type": "File", "outputSource": "wc/output"}},
      "steps": {"wc": {"run": "cerise/test/wc.cwl", "in": {"file": "file"},
                       "out": ["output"]}}}
TWO_STEPS = {"cwlVersion": "v1.2", "class": "Workflow", "inputs": {"file": "File"},
             "outputs": {"counts": {"type": "File", "outputSource": "second/output"}},
             "steps": {"first": {"run": "cerise/test/wc.cwl", "in": {"file": "file"},
                                 "out": ["output"]},
                       "second": {"run": "cerise/test/wc.cwl", "in": {"file": "first/output"},
                                  "out": ["output"]}}}
SLEEP = {"cwlVersion": "v1.2", "class": "Workflow", "inputs": {"delay": "int"}, "outputs": {},
         "steps": {"sleep": {"run": "cerise/test/sleep.cwl", "in": {"delay": "delay"},
                             "out": []}}}


def wes_client(api: Api, *args: str) -> subprocess.CompletedProcess[str]:
    """The wes-client command as a user runs it."""
    command = shutil.which("wes-client") or str(Path(sys.executable).parent / "wes-client")
    return subprocess.run([command, "--proto=http", f"--host={api.url.split('//')[1]}", *args],
                          capture_output=True, text=True, timeout=120)


def state(api: Api, run_id: str) -> str:
    found: str = http_calls.get(f"{api.url}/ga4gh/wes/v1/runs/{run_id}/status").json()["state"]
    return found


def post_run(api: Api, workflow: dict[str, Any], params: dict[str, Any],
             **fields: str) -> httpx.Response:
    return http_calls.post(f"{api.url}/ga4gh/wes/v1/runs", data={
        "workflow_url": "main.cwl", "workflow_type": "CWL", "workflow_type_version": "v1.2",
        "workflow_params": json.dumps(params), **fields},
        files=[("workflow_attachment", ("main.cwl", json.dumps(workflow).encode()))])


def test_wes_client_runs_a_workflow_with_an_attachment(
    single_user_api: Api, tmp_path: Path
) -> None:
    (tmp_path / "wc.cwl").write_text(json.dumps(WC))
    (tmp_path / "words.txt").write_text("one two\nthree\n")
    (tmp_path / "job.json").write_text(json.dumps(
        {"file": {"class": "File", "path": "words.txt"}}))
    done = wes_client(single_user_api, f"--attachments=file://{tmp_path / 'words.txt'}",
                      str(tmp_path / "wc.cwl"), str(tmp_path / "job.json"))
    assert done.returncode == 0, done.stderr
    outputs = json.loads(done.stdout)
    counts = http_calls.get(outputs["counts"]["location"]).text.split()
    assert counts[:3] == ["2", "3", "14"]
    listed = json.loads(wes_client(single_user_api, "--list").stdout)
    assert listed["runs"] and all("run_id" in run for run in listed["runs"])


def test_a_run_log_shows_request_outputs_and_logs(single_user_api: Api) -> None:
    params = {"file": {"class": "File", "location": "words.txt"}}
    response = http_calls.post(f"{single_user_api.url}/ga4gh/wes/v1/runs", data={
        "workflow_url": "flows/main.cwl", "workflow_type": "CWL",
        "workflow_type_version": "v1.2", "workflow_params": json.dumps(params),
        "tags": json.dumps({"project": "demo"})},
        files=[("workflow_attachment", ("flows/main.cwl", json.dumps(TWO_STEPS).encode())),
               ("workflow_attachment", ("flows/words.txt", b"a b c\n"))])
    assert response.status_code == 200, response.text
    run_id = response.json()["run_id"]
    poll_until(lambda: state(single_user_api, run_id) == "COMPLETE", what="the run completing")
    run = http_calls.get(f"{single_user_api.url}/ga4gh/wes/v1/runs/{run_id}").json()
    assert run["request"]["workflow_params"] == params
    assert run["request"]["tags"] == {"project": "demo"}
    # the second step counts the first's one-line output: "1 3 6 <path>"
    assert http_calls.get(run["outputs"]["counts"]["location"]).text.split()[:2] == ["1", "4"]
    assert "Final process status is success" in http_calls.get(run["run_log"]["stderr"]).text
    assert run["run_log"]["exit_code"] == 0
    cost = run["run_log"]["accounting"]
    assert cost["source"] == "jobscript" and cost["coreHours"] > 0, cost
    assert any(line.startswith("accounting: elapsed ") and "core-hours" in line
               for line in run["run_log"]["system_logs"]), run["run_log"]
    tasks = http_calls.get(run["task_logs_url"]).json()
    assert [task["name"] for task in tasks["task_logs"]] == ["first", "second"]
    assert all(task["end_time"] for task in tasks["task_logs"])
    one = http_calls.get(f"{run['task_logs_url']}/first").json()
    assert one["id"] == "first" and one["exit_code"] == 0
    every = http_calls.get(f"{single_user_api.url}/ga4gh/wes/v1/runs").json()["runs"]
    summary = http_calls.get(f"{single_user_api.url}/ga4gh/wes/v1/runs",
                             params={"page_size": 1}).json()
    # a next page exactly when other tests' runs are there too
    assert len(summary["runs"]) == 1 and bool(summary["next_page_token"]) == (len(every) > 1)


def test_cancel_through_wes_stops_the_run(single_user_api: Api) -> None:
    delay = 1000 + uuid.uuid4().int % 9000
    response = post_run(single_user_api, SLEEP, {"delay": delay})
    run_id = response.json()["run_id"]

    def sleeping() -> bool:
        return bool(subprocess.run(["pgrep", "-f", f"^sleep {delay}$"],
                                   capture_output=True, text=True).stdout.strip())

    poll_until(sleeping, what="the runner starting")
    cancelled = http_calls.post(f"{single_user_api.url}/ga4gh/wes/v1/runs/{run_id}/cancel")
    assert cancelled.json() == {"run_id": run_id}
    poll_until(lambda: state(single_user_api, run_id) == "CANCELED", what="CANCELED")
    poll_until(lambda: not sleeping(), 10, "the runner stopping")


def test_service_info_and_errors(single_user_api: Api) -> None:
    wes = f"{single_user_api.url}/ga4gh/wes/v1"
    info = http_calls.get(f"{wes}/service-info").json()
    assert info["type"] == {"group": "org.ga4gh", "artifact": "wes", "version": "1.1.0"}
    assert info["workflow_type_versions"]["CWL"]["workflow_type_version"] == [
        "v1.0", "v1.1", "v1.2"]
    assert set(info["system_state_counts"]) >= {"QUEUED", "RUNNING", "COMPLETE"}
    missing = http_calls.get(f"{wes}/runs/no-such-run")
    assert missing.status_code == 404
    assert missing.json()["status_code"] == 404 and "no-such-run" in missing.json()["msg"]
    unknown = post_run(single_user_api, WC, {},
                       workflow_engine_parameters=json.dumps({"nodes": 4}))
    assert unknown.status_code == 400 and "nodes" in unknown.json()["msg"]
    escaping = http_calls.post(f"{wes}/runs", data={"workflow_url": "../main.cwl",
                                                "workflow_params": "{}"},
                          files=[("workflow_attachment", ("../main.cwl", b"{}"))])
    assert escaping.status_code == 400 and "'..'" in escaping.json()["msg"]
    assert http_calls.get(f"{wes}/runs", params={"page_token": "garbage"}).status_code == 400


def test_a_run_without_workflow_params_is_refused(single_user_api: Api) -> None:
    """WES 1.1 marks workflow_params REQUIRED; an empty object is what a run without inputs
    sends."""
    marker = f"no-params-{uuid.uuid4().hex[:8]}"
    for fields in ({}, {"workflow_params": ""}, {"workflow_params": "  "}):
        answer = http_calls.post(f"{single_user_api.url}/ga4gh/wes/v1/runs", data={
            "workflow_url": f"{marker}.cwl", "workflow_type": "CWL", **fields},
            files=[("workflow_attachment", (f"{marker}.cwl", json.dumps(SLEEP).encode()))])
        assert answer.status_code == 400, answer.text
        assert answer.json()["msg"].startswith("workflow_params is missing")
    runs = http_calls.get(f"{single_user_api.url}/ga4gh/wes/v1/runs").json()["runs"]
    assert not [run for run in runs if run["run_id"].startswith(marker)]
    deep = post_run(single_user_api, WC, {}, workflow_params="[" * 100_000 + "]" * 100_000)
    assert deep.status_code == 400, deep.text
    assert "workflow_params nests arrays and objects more than 64 deep" in deep.json()["msg"]


def test_a_run_and_a_job_may_carry_their_own_retry_settings(
        single_user_api: Api, control_plane: ControlPlane) -> None:
    retry = {"attempts": 2, "timeFactor": 3, "maxTimeSeconds": 7200}

    def stored(job_id: str) -> Any:
        found = control_plane.kubectl("get", "wfj", job_id, "-n", SINGLE, "-o", "json").stdout
        return json.loads(found)["spec"].get("retry")

    run = post_run(single_user_api, SLEEP, {"delay": 1},
                   workflow_engine_parameters=json.dumps({"retry": retry}))
    assert run.status_code == 200, run.text
    assert stored(run.json()["run_id"]) == retry
    job = http_calls.post(f"{single_user_api.url}/jobs", json={
        "workflow": json.dumps(SLEEP), "input": {"delay": 1}, "retry": retry})
    assert job.status_code == 201, job.text
    assert stored(job.json()["id"]) == retry
    for bad, words in (({"retry": {"attempts": 11}}, "retry.attempts must be from 1 to 10"),
                       ({"retry": 3}, "workflow_engine_parameters.retry must be a JSON object")):
        refused = post_run(single_user_api, SLEEP, {"delay": 1},
                           workflow_engine_parameters=json.dumps(bad))
        assert refused.status_code == 400 and words in refused.json()["msg"], refused.text
