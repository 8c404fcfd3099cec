"""The apiserver's Prometheus metrics and its JSON log lines move as requests are served."""

from __future__ import annotations

import json

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.integration import http_calls
from tests.integration.api_fixtures import Api

pytestmark = pytest.mark.integration

WORKFLOW = json.dumps({"cwlVersion": "v1.2", "class": "Workflow", "inputs": {}, "outputs": {},
                       "steps": {}})


def scrape(api: Api) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = http_calls.get(f"{api.url}/metrics").text
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


def value(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str,
          **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_requests_and_exchange_bytes_are_counted(single_user_api: Api) -> None:
    before = scrape(single_user_api)
    with httpx.Client(base_url=single_user_api.url) as client:
        job = client.post("/jobs", json={"name": "metered", "workflow": WORKFLOW}).json()
        for _ in range(3):
            assert client.get(f"/jobs/{job['id']}").status_code == 200
        assert client.get("/jobs/no-such-job").status_code == 404
        assert client.put("/files/input/metered/data.bin", content=b"x" * 1000).is_success
        assert client.get("/files/input/metered/data.bin").content == b"x" * 1000
    after = scrape(single_user_api)

    def moved(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert moved("cerise_api_requests_total", method="POST", route="/jobs", status="201") == 1
    assert moved("cerise_api_requests_total", method="GET", route="/jobs/{job_id}",
                 status="200") == 3
    assert moved("cerise_api_requests_total", method="GET", route="/jobs/{job_id}",
                 status="404") == 1
    assert moved("cerise_api_request_seconds_count", method="GET", route="/jobs/{job_id}") == 4
    assert moved("cerise_exchange_bytes_total", direction="in") == 1000
    assert moved("cerise_exchange_bytes_total", direction="out") == 1000
    lines = [json.loads(line) for line in single_user_api.process.log.read_text().splitlines()
             if line.startswith("{")]
    assert any(line.get("job") == job["id"] and line["message"].startswith("job submitted")
               for line in lines)
