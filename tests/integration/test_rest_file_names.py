"""Every file name POSIX allows goes through the exchange, a job and back unchanged.

One job, to keep time down: a Directory of files with odd names is listed and copied by an
installed step (its outputs keep the names), and a File with an odd name is counted.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any
from urllib.parse import quote, unquote

import httpx
import pytest

from tests.integration import http_calls
from tests.integration.api_fixtures import Api

pytestmark = pytest.mark.integration

ODD_NAMES = ["back\\slash", "it's \"quoted\"", "$(touch pwned)", "`touch pwned`", "a;b&&c|d",
             " spaced ", "new\nline", "tab\there", "%41 per%25cent", "?query#fragment",
             "-rf", "\x01ctrl\x7f", "ünï ✓"]
"""Names with every character a shell, a URL or a line-based reader may misread."""
WORKFLOW = json.dumps({
    "cwlVersion": "v1.2", "class": "Workflow",
    "inputs": {"dir": "Directory", "file": "File"},
    "outputs": {"results": {"type": "Directory", "outputSource": "list/results"},
                "counts": {"type": "File", "outputSource": "wc/output"}},
    "steps": {"list": {"run": "cerise/test/list_dir.cwl", "in": {"dir": "dir"},
                       "out": ["listing", "results"]},
              "wc": {"run": "cerise/test/wc.cwl", "in": {"file": "file"}, "out": ["output"]}}})


def content(name: str) -> bytes:
    return f"the file called {name!r}\n".encode()


def finished(api: httpx.Client, job_id: str, timeout: float = 120) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        job: dict[str, Any] = api.get(f"/jobs/{job_id}").json()
        if job["state"] not in ("Waiting", "Running") or time.monotonic() > deadline:
            return job
        time.sleep(0.1)


def test_odd_names_upload_list_stage_and_come_back_unchanged(single_user_api: Api) -> None:
    folder = f"/files/input/names-{uuid.uuid4().hex[:8]}"
    with httpx.Client(base_url=single_user_api.url, timeout=30) as api:
        for name in ODD_NAMES:
            put = api.put(f"{folder}/data/{quote(name, safe='')}", content=content(name))
            assert put.status_code == 201, (name, put.text)
        single = "$(id) it's a \\ file;.txt"
        assert api.put(f"{folder}/{quote(single, safe='')}", content=b"one two\n"
                       ).status_code == 201
        listed = api.get(f"{folder}/data/").text.splitlines()
        assert sorted(unquote(line) for line in listed) == sorted(ODD_NAMES)

        answer = api.post("/jobs", json={"name": "odd names", "workflow": WORKFLOW, "input": {
            "dir": {"class": "Directory",
                    "location": f"{single_user_api.url}{folder}/data/"},
            "file": {"class": "File",
                     "location": f"{single_user_api.url}{folder}/{quote(single, safe='')}"}}})
        assert answer.status_code == 201, answer.text
        job = finished(api, answer.json()["id"])
        assert job["state"] == "Success", api.get(f"/jobs/{job['id']}/log").text[-3000:]

        counts = http_calls.get(job["output"]["counts"]["location"], timeout=30).text
        assert counts.split()[:3] == ["1", "2", "8"]
        results = job["output"]["results"]
        got = {}
        for entry in results["listing"]:
            assert entry["class"] == "File"
            got[entry["basename"]] = http_calls.get(entry["location"], timeout=30).content
            assert unquote(entry["location"].rsplit("/", 1)[1]) == entry["basename"]
        assert got == {name: content(name) for name in ODD_NAMES}
        where = results["location"].removeprefix(single_user_api.url)
        published = api.get(f"{where}/").text.splitlines()
        assert sorted(unquote(line) for line in published) == sorted(ODD_NAMES)
    assert not list(single_user_api.exchange_dir.rglob("pwned"))
