"""Callbacks end to end: a job that ends POSTs its summary, signed with the namespace's
key, to a real HTTP server; a receiver that is down for a while gets it later, even
across an operator restart; a private address is refused; every door (CRD, Cerise API,
WES, CLI) takes the URL and refuses a bad one."""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from cerise.devenv.controlplane import ControlPlane
from cerise.devenv.operator import OperatorProcess
from cerise.devenv.process import free_port
from cerise.kube.jobs import WorkflowJob
from tests.integration import http_calls, web
from tests.integration.api_fixtures import SINGLE, Api, poll_until
from tests.integration.kube_fixtures import watch_until
from tests.integration.operator_fixtures import Resource, apply
from tests.integration.test_cli import cerise
from tests.integration.test_operator_jobs import HOSTNAME, events

pytestmark = pytest.mark.integration

KEY = "portal-shared-secret"
NOTHING = json.dumps({"cwlVersion": "v1.2", "class": "Workflow", "inputs": {}, "outputs": {},
                      "steps": {}})
"""A workflow that ends at once."""


def submit(plane: ControlPlane, resource: Resource, url: str, name: str = "job") -> None:
    apply(plane, resource.namespace, {
        "apiVersion": "cerise.dev/v1alpha1", "kind": "WorkflowJob", "metadata": {"name": name},
        "spec": {"workflow": HOSTNAME, "input": {}, "computeResource": resource.name,
                 "callback": {"url": url}}})


async def callback_status(plane: ControlPlane, namespace: str, name: str,
                          done: Callable[[dict[str, Any]], bool], what: str,
                          timeout: float = 60) -> dict[str, Any]:
    """Watch the job until its ``status.callback`` satisfies `done`; return that."""
    job = await watch_until(plane, WorkflowJob, namespace, name,
                            lambda job: done((job.get("status") or {}).get("callback") or {}),
                            timeout=timeout, what=what)
    found: dict[str, Any] = job["status"]["callback"]
    return found


def verified(post: web.Post, key: str) -> bool:
    """Whether the POST's signature is right for `key`, checked as docs/operating.md says."""
    timestamp = post.headers["X-Cerise-Timestamp"]
    expected = hmac.new(key.encode(), timestamp.encode() + b"." + post.body,
                        hashlib.sha256).hexdigest()
    return hmac.compare_digest(post.headers["X-Cerise-Signature"], f"sha256={expected}")


@pytest.mark.parametrize("resource", ["local"], indirect=True)
async def test_an_ended_job_posts_its_summary_signed_with_the_namespaces_key(
    control_plane: ControlPlane, operator: OperatorProcess, resource: Resource,
) -> None:
    apply(control_plane, resource.namespace, {
        "apiVersion": "v1", "kind": "Secret", "metadata": {"name": "cerise-callback-key"},
        "stringData": {"key": KEY}})
    with web.receiving() as (url, posts):
        submit(control_plane, resource, f"{url}/hooks/cerise?job=1")
        record = await callback_status(control_plane, resource.namespace, "job",
                                       lambda found: "delivered" in found, "the callback")
        [post] = posts
    assert (record["attempts"], record["lastResult"]) == (1, "HTTP 204")
    assert post.path == "/hooks/cerise?job=1"
    assert post.headers["Content-Type"] == "application/json"
    assert verified(post, KEY)
    assert not verified(post, "another key")
    summary = json.loads(post.body)
    job = json.loads(control_plane.kubectl("get", "wfj", "job", "-n", resource.namespace,
                                           "-o", "json").stdout)
    assert post.headers["X-Cerise-Delivery"] == job["metadata"]["uid"]
    assert (summary["id"], summary["namespace"], summary["state"]) == (
        "job", resource.namespace, "Success")
    assert summary["finishedAt"] == job["status"]["finishedAt"]
    assert summary["output"] == job["status"]["output"]
    assert "CallbackDelivered" in events(control_plane, resource.namespace, "job")
    assert KEY not in json.dumps(job)


@pytest.mark.parametrize("resource", ["local"], indirect=True)
async def test_a_receiver_down_for_a_while_gets_the_callback_later_despite_a_restart(
    control_plane: ControlPlane, operator: OperatorProcess, resource: Resource,
) -> None:
    port = free_port()  # nothing listens there yet
    submit(control_plane, resource, f"http://127.0.0.1:{port}/hook")
    failed = await callback_status(control_plane, resource.namespace, "job",
                                   lambda found: found.get("attempts", 0) >= 2,
                                   "two failed attempts")
    assert "Connect" in failed["lastResult"] and "nextAttempt" in failed
    assert "delivered" not in failed and "gaveUp" not in failed
    operator.kill()  # what is left to do is in the job's status, not in the operator
    operator.start()
    with web.receiving(port=port) as (_, posts):
        record = await callback_status(control_plane, resource.namespace, "job",
                                       lambda found: "delivered" in found, "the late callback")
        [post] = posts
    assert record["attempts"] > failed["attempts"] and record["lastResult"] == "HTTP 204"
    assert "nextAttempt" not in record
    assert "X-Cerise-Signature" not in post.headers  # the namespace has no key: unsigned
    assert json.loads(post.body)["state"] == "Success"


@pytest.mark.parametrize("resource", ["local"], indirect=True)
async def test_a_callback_to_a_private_address_is_refused_and_given_up(
    control_plane: ControlPlane, operator: OperatorProcess, resource: Resource,
) -> None:
    # The session operator allows 127.0.0.1 (CERISE_WEB_ALLOW), not the rest of the loopback.
    with web.receiving(host="127.0.0.2") as (url, posts):
        submit(control_plane, resource, f"{url}/hook")
        record = await callback_status(control_plane, resource.namespace, "job",
                                       lambda found: "gaveUp" in found, "giving up")
        assert posts == []
    assert record["attempts"] == 1
    assert record["lastResult"].startswith("127.0.0.2 is in the loopback range")
    assert "CallbackGaveUp" in events(control_plane, resource.namespace, "job")


def _spec(plane: ControlPlane, job_id: str) -> dict[str, Any]:
    found: dict[str, Any] = json.loads(
        plane.kubectl("get", "wfj", job_id, "-n", SINGLE, "-o", "json").stdout)["spec"]
    return found


def test_every_door_takes_a_callback_url_and_refuses_a_bad_one(
    control_plane: ControlPlane, single_user_api: Api, tmp_path: Path,
) -> None:
    api = single_user_api.url
    with web.receiving() as (url, posts):
        created = http_calls.post(f"{api}/jobs", json={"workflow": NOTHING, "callback_url": url},
                                  timeout=30)
        assert created.status_code == 201, created.text
        job_id = created.json()["id"]
        run = http_calls.post(f"{api}/ga4gh/wes/v1/runs", files={
            "workflow_url": (None, "nothing.cwl"), "workflow_params": (None, "{}"),
            "workflow_engine_parameters": (None, json.dumps({"callback_url": f"{url}/wes"})),
            "workflow_attachment": ("nothing.cwl", NOTHING.encode())}, timeout=30)
        assert run.status_code == 200, run.text
        run_id = run.json()["run_id"]
        (tmp_path / "nothing.cwl").write_text(NOTHING)
        cli = cerise(single_user_api, "submit", "nothing.cwl", "--callback", f"{url}/cli",
                     "--json", cwd=tmp_path)
        assert cli.returncode == 0, cli.stderr
        cli_id = json.loads(cli.stdout)["id"]
        assert _spec(control_plane, job_id)["callback"] == {"url": url}
        assert _spec(control_plane, run_id)["callback"] == {"url": f"{url}/wes"}
        assert _spec(control_plane, cli_id)["callback"] == {"url": f"{url}/cli"}
        poll_until(lambda: len(posts) == 3, 60, "three callbacks")
    by_path = {post.path: json.loads(post.body) for post in posts}
    assert (by_path["/"]["id"], by_path["/"]["state"]) == (job_id, "Success")
    assert by_path["/wes"]["id"] == run_id and by_path["/cli"]["id"] == cli_id
    logged = http_calls.get(f"{api}/ga4gh/wes/v1/runs/{run_id}", timeout=30).json()
    assert logged["request"]["workflow_engine_parameters"]["callback_url"] == f"{url}/wes"

    bad = http_calls.post(f"{api}/jobs", json={"workflow": NOTHING,
                                          "callback_url": "ftp://portal.example.org/x"},
                     timeout=30)
    assert bad.status_code == 400
    assert "must be an http:// or https:// URL" in bad.json()["detail"]
    bad_run = http_calls.post(f"{api}/ga4gh/wes/v1/runs", files={
        "workflow_url": (None, "https://example.org/wf.cwl"), "workflow_params": (None, "{}"),
        "workflow_engine_parameters": (None, json.dumps(
            {"callback_url": "https://user:pw@portal.example.org/x"}))}, timeout=30)
    assert bad_run.status_code == 400
    assert "callback_url: the callback URL must not carry credentials" in bad_run.json()["msg"]
    bad_cli = cerise(single_user_api, "submit", "nothing.cwl", "--callback", "portal/x",
                     cwd=tmp_path)
    assert bad_cli.returncode != 0 and "http:// or https://" in bad_cli.stderr
    for wrong in ("https://user:pw@portal.example.org/x", "https://portal.example.org/ä"):
        refused = control_plane.kubectl("apply", "-n", SINGLE, "-f", "-", check=False,
                                        stdin=json.dumps({
            "apiVersion": "cerise.dev/v1alpha1", "kind": "WorkflowJob",
            "metadata": {"name": "bad-callback"},
            "spec": {"workflow": NOTHING, "computeResource": "local",
                     "callback": {"url": wrong}}}))
        assert refused.returncode != 0 and "spec.callback.url" in refused.stderr
