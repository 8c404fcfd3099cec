"""The apiserver's request metrics keep a bounded set of label values."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.testclient import TestClient

from cerise.apiserver import metrics


def count(method: str, route: str, status: str) -> float:
    value = metrics.REGISTRY.get_sample_value(
        "cerise_api_requests_total", {"method": method, "route": route, "status": status})
    return value or 0.0


def test_unknown_methods_count_as_other() -> None:
    app = FastAPI()

    @app.get("/jobs")
    async def jobs() -> list[str]:
        return []

    client = TestClient(metrics.RequestMetrics(app))
    before = count("other", "unmatched", "404")
    for verb in ("BREW", "X-RANDOM-1", "X-RANDOM-2", "X-RANDOM-3"):
        client.request(verb, "/nowhere")
    assert count("other", "unmatched", "404") - before == 4
    before_get = count("GET", "/jobs", "200")
    assert client.get("/jobs").status_code == 200
    assert count("GET", "/jobs", "200") - before_get == 1
    labels = {sample.labels["method"] for family in metrics.REGISTRY.collect()
              for sample in family.samples if "method" in sample.labels}
    assert labels <= metrics.METHODS | {"other"}
