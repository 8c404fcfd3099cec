"""Cluster mode: bearer tokens, Kubernetes RBAC, and tenants that never see each other."""

from __future__ import annotations

import json

import httpx
import pytest

from cerise.devenv.controlplane import ControlPlane
from tests.integration import http_calls
from tests.integration.api_fixtures import Api
from tests.integration.kube_fixtures import TENANTS

pytestmark = [pytest.mark.integration,
              # its module fixture's processes started once, on one worker
              pytest.mark.xdist_group("rest-tenants")]

WORKFLOW = json.dumps({"cwlVersion": "v1.2", "class": "Workflow", "inputs": {}, "outputs": {},
                       "steps": {}})


@pytest.fixture(scope="module")
def tenants(control_plane: ControlPlane, cluster_api: Api) -> dict[str, httpx.Client]:
    """A client for alice (team-a) and bob (team-b), each with their own token."""
    for namespace, _ in TENANTS.values():
        control_plane.kubectl("apply", "-n", namespace, "-f", "-", stdin=json.dumps({
            "apiVersion": "cerise.dev/v1alpha1", "kind": "ComputeResource",
            "metadata": {"name": "local"},
            "spec": {"files": {"protocol": "local", "path": f"/tmp/cerise-{namespace}"},
                     "jobs": {"protocol": "local", "scheduler": "none"}}}))
    return {user: httpx.Client(base_url=f"{cluster_api.url}/ns/{namespace}", headers={
        "Authorization": f"Bearer {control_plane.identities[user].token}"}, timeout=30)
        for user, (namespace, _) in TENANTS.items()}


def test_no_token_no_service(cluster_api: Api) -> None:
    for path in ("/ns/team-a/jobs", "/ns/team-a/ga4gh/wes/v1/runs", "/ns/team-a/files/input/",
                 "/jobs"):
        answer = http_calls.get(f"{cluster_api.url}{path}")
        assert answer.status_code == 401, path
    wrong = http_calls.get(f"{cluster_api.url}/ns/team-a/jobs",
                           headers={"Authorization": "Bearer not-a-token"})
    assert wrong.status_code == 401


def test_a_tenant_sees_only_its_own_jobs(tenants: dict[str, httpx.Client]) -> None:
    alice, bob = tenants["alice"], tenants["bob"]
    created = alice.post("/jobs", json={"name": "alice's", "workflow": WORKFLOW})
    assert created.status_code == 201, created.text
    job_id = created.json()["id"]
    assert job_id in [job["id"] for job in alice.get("/jobs").json()]
    assert job_id not in [job["id"] for job in bob.get("/jobs").json()]
    # bob, in his own namespace, does not find it; in alice's he is forbidden
    assert bob.get(f"/jobs/{job_id}").status_code == 404
    for method, path in (("GET", f"/jobs/{job_id}"), ("GET", f"/jobs/{job_id}/log"),
                         ("POST", f"/jobs/{job_id}/cancel"), ("DELETE", f"/jobs/{job_id}"),
                         ("GET", "/jobs"), ("GET", f"/ga4gh/wes/v1/runs/{job_id}"),
                         ("POST", f"/ga4gh/wes/v1/runs/{job_id}/cancel"),
                         ("GET", "/ga4gh/wes/v1/runs")):
        url = str(alice.base_url).rstrip("/") + path
        answer = bob.request(method, url)
        assert answer.status_code == 403, (method, path, answer.text)
    alice_base = str(alice.base_url).rstrip("/")
    assert bob.post(f"{alice_base}/jobs", json={"workflow": WORKFLOW}).status_code == 403
    assert alice.get(f"/jobs/{job_id}").json()["name"] == "alice's"
    assert alice.delete(f"/jobs/{job_id}").status_code == 204
    assert alice.get(f"/jobs/{job_id}").status_code == 404


def test_a_tenant_reaches_only_its_own_files(tenants: dict[str, httpx.Client]) -> None:
    alice, bob = tenants["alice"], tenants["bob"]
    assert alice.request("MKCOL", "/files/input/secret/").status_code == 201
    assert alice.put("/files/input/secret/data.txt", content=b"alice's data").status_code == 201
    assert alice.get("/files/input/secret/data.txt").content == b"alice's data"
    assert bob.get("/files/input/secret/data.txt").status_code == 404
    for method in ("GET", "PROPFIND", "DELETE", "PUT"):
        answer = bob.request(method,
                             f"{str(alice.base_url).rstrip('/')}/files/input/secret/data.txt")
        assert answer.status_code == 403, method
    assert alice.get("/files/input/secret/data.txt").content == b"alice's data"
