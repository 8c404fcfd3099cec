"""Careless and hostile requests: a 4xx with a message, never a 500, nothing run."""

from __future__ import annotations

import json
import time
from typing import Any

import httpx
import pytest

from tests.integration.api_fixtures import Api
from tests.integration.operator_fixtures import EXCHANGE_URL

pytestmark = pytest.mark.integration

WC = json.dumps({"cwlVersion": "v1.2", "class": "Workflow", "inputs": {"file": "File"},
                 "outputs": {"counts": {"type": "File", "outputSource": "wc/output"}},
                 "steps": {"wc": {"run": "cerise/test/wc.cwl", "in": {"file": "file"},
                                  "out": ["output"]}}})


@pytest.fixture
def api(single_user_api: Api) -> httpx.Client:
    return httpx.Client(base_url=single_user_api.url, timeout=30)


def final(api: httpx.Client, job_id: str, timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        job: dict[str, Any] = api.get(f"/jobs/{job_id}").json()
        if job["state"] not in ("Waiting", "Running") or time.monotonic() > deadline:
            return job
        time.sleep(0.1)


@pytest.mark.parametrize(("body", "expected"), [
    (b"{not json", "not valid JSON"),
    (b"[1, 2]", "JSON object"),
    (b'{"name": "x"}', "no workflow"),
    (b'{"workflow": null}', "no workflow"),
    (b'{"workflow": 5}', "workflow"),
    (b'{"workflow": "x", "input": "not an object"}', "input"),
    (b'{"workflow": "x", "priority": 1}', "priority"),
    (b'{"workflow": "   "}', "empty"),
    (b'{"workflow": "x", "name": "a\\u0000b"}', "control character"),
    (json.dumps({"workflow": "x", "name": "n" * 300}).encode(), "300 characters"),
    (json.dumps({"workflow": "x" * 300_000}).encode(), "upload it to the file exchange"),
    (json.dumps({"workflow": WC, "compute_resource": "nowhere"}).encode(), "nowhere"),
    (json.dumps({"workflow": WC, "retry": {"attempts": 0}}).encode(),
     "retry.attempts must be from 1 to 10"),
    (json.dumps({"workflow": WC, "retry": {"timeFactor": 0.5}}).encode(), "timeFactor"),
    (json.dumps({"workflow": WC, "retry": "more"}).encode(), "retry"),
])
def test_bad_job_descriptions_are_refused_with_a_message(
    api: httpx.Client, body: bytes, expected: str
) -> None:
    answer = api.post("/jobs", content=body, headers={"Content-Type": "application/json"})
    assert answer.status_code == 400, answer.text
    assert expected in answer.json()["detail"]


def test_an_oversized_body_is_refused(api: httpx.Client) -> None:
    answer = api.post("/jobs", content=json.dumps({"workflow": "x" * (10 << 20)}),
                      headers={"Content-Type": "application/json"})
    assert answer.status_code == 413
    assert "file exchange" in answer.json()["detail"]


@pytest.mark.parametrize("name", ["a/b/c", "it's \"quoted\"", "UPPER case & ünïcode", "-", ""])
def test_any_printable_name_works_and_is_echoed(api: httpx.Client, name: str) -> None:
    answer = api.post("/jobs", json={"name": name, "workflow": WC, "input": {}})
    assert answer.status_code == 201, answer.text
    job = answer.json()
    assert job["name"] == name
    assert api.get(f"/jobs/{job['id']}").json()["name"] == name
    assert answer.headers["Location"].endswith(f"/jobs/{job['id']}")


def test_unknown_ids_and_wrong_methods(api: httpx.Client) -> None:
    for method, path in (("GET", "/jobs/nope"), ("DELETE", "/jobs/nope"),
                         ("POST", "/jobs/nope/cancel"), ("GET", "/jobs/nope/log"),
                         ("GET", "/jobs/" + "x" * 300), ("GET", "/jobs/..%2f..%2fetc")):
        answer = api.request(method, path)
        assert answer.status_code in (404, 422), (method, path)
        assert "Traceback" not in answer.text
    assert api.put("/jobs").status_code == 405
    assert api.patch("/jobs/nope").status_code == 405


@pytest.mark.parametrize("location", [
    "file:///etc/passwd",
    f"{EXCHANGE_URL}/input/../../etc/passwd",
    f"{EXCHANGE_URL}/input/%2e%2e/%2e%2e/etc/passwd",
    "ftp://example.org/data.txt",
    "/etc/passwd",
    "input/../../../etc/passwd",
], ids=lambda location: location.replace(EXCHANGE_URL, "<exchange>"))  # the same on every worker
def test_hostile_input_locations_end_the_job_with_a_message(
    api: httpx.Client, location: str
) -> None:
    answer = api.post("/jobs", json={"workflow": WC, "input": {
        "file": {"class": "File", "location": location}}})
    assert answer.status_code == 201
    job = final(api, answer.json()["id"])
    assert job["state"] == "PermanentFailure", job
    assert "Traceback" not in api.get(f"/jobs/{job['id']}/log").text


@pytest.mark.parametrize("path", [
    "/files/../etc/passwd", "/files/input/%2e%2e/%2e%2e/etc/passwd",
    "/files/input/a%2f..%2f..%2fx", "/files/input/a%00b", "/files//etc/passwd",
])
def test_traversal_in_the_exchange_is_refused(api: httpx.Client, path: str) -> None:
    for method in ("GET", "PUT", "DELETE", "PROPFIND", "MKCOL"):
        answer = api.request(method, path, content=b"x" if method == "PUT" else None)
        assert answer.status_code in (400, 403, 404), (method, path, answer.status_code)
