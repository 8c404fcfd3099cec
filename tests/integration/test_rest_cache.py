"""The apiserver's view of the jobs never goes silently stale, and names that break line-based
readers are refused at every door.

A private control plane and apiserver, because these tests cut the apiserver's watch and stop
the kube-apiserver. The apiserver answers 503 on /healthz after `STALE` seconds behind.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from cerise.devenv import controlplane
from cerise.devenv.apiserver import ApiserverProcess
from cerise.devenv.controlplane import ControlPlane
from cerise.devenv.process import free_port
from cerise.kube import cache
from tests.integration.api_fixtures import poll_until
from tests.unit.test_names import ACCEPTED, REFUSED

pytestmark = [pytest.mark.integration,
              # its module fixture's processes started once, on one worker
              pytest.mark.xdist_group("rest-cache")]

STALE = 2
"""CERISE_CACHE_STALE_SECONDS of the private apiserver."""
WORKFLOW = "http://localhost/files/input/wf.cwl"
SEPARATORS = "".join(REFUSED[label] for label in (
    "NEL", "LINE SEPARATOR", "PARAGRAPH SEPARATOR", "VT", "FF", "FS", "GS", "RS", "CR", "LF"))
"""Every character `str.splitlines` splits at."""
SENDABLE = {label: char for label, char in REFUSED.items() if label != "lone surrogate"}
"""What UTF-8 (a form, a command line, YAML) can carry."""


@dataclass(frozen=True)
class Stack:
    """A private control plane and an apiserver that follows it."""

    plane: ControlPlane
    api: ApiserverProcess
    http: httpx.Client

    def kubectl_job(self, job_id: str, **spec: Any) -> subprocess.CompletedProcess[str]:
        return self.plane.kubectl("apply", "-f", "-", check=False, stdin=json.dumps({
            "apiVersion": "cerise.dev/v1alpha1", "kind": "WorkflowJob",
            "metadata": {"name": job_id, "namespace": "default"},
            "spec": {"workflow": WORKFLOW, "computeResource": "local", **spec}}))

    def rest_state(self, job_id: str) -> str | None:
        answer = self.http.get(f"/jobs/{job_id}")
        return str(answer.json()["state"]) if answer.status_code == 200 else None

    def health(self) -> httpx.Response:
        return self.http.get("/healthz")


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    work = tmp_path_factory.mktemp("cache-stack")
    plane = controlplane.start(work / "control-plane", controller_manager=False)
    port = free_port()
    api = ApiserverProcess(
        kubeconfig=plane.kubeconfig, exchange_dir=work / "files",
        exchange_url=f"http://localhost:{port}/files", port=port, log=work / "apiserver.log",
        extra_env={"CERISE_CACHE_STALE_SECONDS": str(STALE)})
    try:
        plane.kubectl("apply", "-f", "-", stdin=json.dumps({
            "apiVersion": "cerise.dev/v1alpha1", "kind": "ComputeResource",
            "metadata": {"name": "local", "namespace": "default"},
            "spec": {"jobs": {"protocol": "local", "scheduler": "none"},
                     "files": {"protocol": "local", "path": str(work / "resource")}}}))
        api.start()
        with httpx.Client(base_url=api.url, timeout=10) as http:
            poll_until(lambda: http.get("/ga4gh/wes/v1/service-info").json()[
                "default_workflow_engine_parameters"][0]["default_value"] == "local",
                timeout=30, what="the ComputeResource in the apiserver's cache")
            yield Stack(plane, api, http)
    finally:
        api.stop()
        plane.stop()


def test_text_with_line_separators_in_a_job_does_not_stop_the_view(stack: Stack) -> None:
    """The defect: a job holding NEL (raw in the watch stream) stopped the job cache for good
    while /healthz said ok. Names are refused now, but any text field can hold them."""
    posted = stack.http.post("/jobs", json={"name": "separators in the input",
                                            "workflow": WORKFLOW,
                                            "input": {"text": f"a{SEPARATORS}b"}})
    assert posted.status_code == 201, posted.text
    assert stack.kubectl_job("made-with-kubectl").returncode == 0
    poll_until(lambda: stack.rest_state("made-with-kubectl") == "Waiting", timeout=5,
               what="the kubectl job in the REST view")
    stack.plane.kubectl("patch", "wfj", "made-with-kubectl", "-n", "default",
                        "--subresource=status", "--type=merge",
                        "-p", json.dumps({"status": {"phase": "Success"}}))
    ended = time.monotonic()
    poll_until(lambda: stack.rest_state("made-with-kubectl") == "Success", timeout=10,
               what="the kubectl job's end in the REST view")
    assert time.monotonic() - ended < 2
    job = stack.http.get(f"/jobs/{posted.json()['id']}").json()
    assert job["input"] == {"text": f"a{SEPARATORS}b"}
    assert stack.health().status_code == 200


@pytest.mark.parametrize("label", REFUSED)
def test_unsafe_names_are_refused_by_the_cerise_api(stack: Stack, label: str) -> None:
    name = f"job{REFUSED[label]}name"
    answer = stack.http.post("/jobs", content=json.dumps({"name": name, "workflow": WORKFLOW}),
                             headers={"Content-Type": "application/json"})
    assert answer.status_code == 400, answer.text
    assert f"U+{ord(REFUSED[label]):04X}" in answer.json()["detail"]


@pytest.mark.parametrize("label", SENDABLE)
def test_unsafe_names_and_tags_are_refused_by_wes(stack: Stack, label: str) -> None:
    char = REFUSED[label]
    for fields in ({"workflow_url": f"http://localhost/files/input/w{char}f.cwl"},
                   {"workflow_url": WORKFLOW, "tags": json.dumps({"who": f"a{char}b"})},
                   {"workflow_url": WORKFLOW, "tags": json.dumps({f"w{char}o": "ab"})}):
        answer = stack.http.post("/ga4gh/wes/v1/runs", files={"placeholder": ("", b"")},
                                 data={"workflow_params": "{}", **fields})
        assert answer.status_code == 400, (fields, answer.text)
        assert f"U+{ord(char):04X}" in answer.json()["msg"]


def test_unsafe_names_are_refused_by_kubectl(stack: Stack) -> None:
    for label, char in SENDABLE.items():
        made = stack.kubectl_job(f"kubectl-{len(label)}-{ord(char):x}", name=f"a{char}b")
        assert made.returncode != 0, label
        assert "line or paragraph" in made.stderr, (label, made.stderr)


@pytest.mark.parametrize("label", ["NEL", "LINE SEPARATOR", "RLO", "LF"])
def test_unsafe_names_are_refused_by_the_cli_before_anything_is_uploaded(
        stack: Stack, tmp_path: Path, label: str) -> None:
    (tmp_path / "wf.cwl").write_text("cwlVersion: v1.2\nclass: Workflow\n")
    done = subprocess.run(
        [sys.executable, "-m", "cerise.cli", "submit", "wf.cwl",
         "--name", f"my{REFUSED[label]}job", "--url", stack.api.url],
        capture_output=True, text=True, timeout=60, cwd=tmp_path,
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "COLUMNS": "200",
             "PYTHONPATH": str(Path(__file__).resolve().parents[2])})
    assert done.returncode == 2, done
    assert f"U+{ord(REFUSED[label]):04X}" in done.stderr
    assert not list(stack.api.exchange_dir.rglob("wf.cwl"))


def test_names_the_original_accepted_come_back_unchanged(stack: Stack) -> None:
    for name in ACCEPTED:
        posted = stack.http.post("/jobs", json={"name": name, "workflow": WORKFLOW})
        assert posted.status_code == 201, posted.text
        assert stack.http.get(f"/jobs/{posted.json()['id']}").json()["name"] == name
    listed = {job["name"] for job in stack.http.get("/jobs").json()}
    assert set(ACCEPTED) <= listed


def _connections(stack: Stack) -> list[str]:
    """The local addresses of the apiserver's connections to the kube-apiserver."""
    assert stack.api.daemon is not None
    port = stack.plane.api_url.rsplit(":", 1)[1]
    listing = subprocess.run(["ss", "-tnpH", "state", "established", "dport", "=", port],
                             capture_output=True, text=True, check=True).stdout
    return [line.split()[2] for line in listing.splitlines()
            if f"pid={stack.api.daemon.pid}," in line]


def test_a_cut_watch_lists_again_and_resumes(stack: Stack) -> None:
    log = stack.api.log
    broken_before = log.read_text().count("watch broke")
    for address in _connections(stack):
        subprocess.run(["ss", "-K", "src", address], capture_output=True, check=True)
    assert stack.kubectl_job("after-the-cut").returncode == 0
    poll_until(lambda: stack.rest_state("after-the-cut") == "Waiting", timeout=10,
               what="a job made after the cut in the REST view")
    assert log.read_text().count("watch broke") > broken_before
    assert stack.health().status_code == 200


def test_health_says_so_while_the_kubernetes_api_is_down(stack: Stack) -> None:
    apiserver = stack.plane.daemon("kube-apiserver")
    apiserver.stop()
    try:
        poll_until(lambda: stack.health().status_code == 503, timeout=STALE + 10,
                   what="/healthz answering 503")
        reason = stack.health().json()["reason"]
        assert "has not followed the Kubernetes API" in reason
        assert stack.http.get("/livez").status_code == 200
        refused = stack.http.post("/jobs", json={"name": "in the outage", "workflow": WORKFLOW})
        assert refused.status_code == 503, refused.text
        assert "cannot be reached" in refused.json()["detail"]
    finally:
        apiserver.start()
    poll_until(lambda: stack.health().status_code == 200, timeout=60,
               what="/healthz answering 200 again")
    assert stack.kubectl_job("after-the-outage").returncode == 0
    # A kube-apiserver just started may refuse watches while its watch cache fills: the view
    # then follows by listing again, at most LAST_RETRY seconds apart.
    poll_until(lambda: stack.rest_state("after-the-outage") == "Waiting",
               timeout=cache.LAST_RETRY + 5, what="a job made after the outage in the REST view")
