"""Bounded resources: upload caps and quotas, nesting, metric labels, bogus tokens, and the
metrics kept off the tenants' port."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Iterator

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from cerise.devenv.apiserver import IDENTITY, ApiserverProcess
from cerise.devenv.controlplane import ControlPlane
from cerise.devenv.process import free_port
from cerise.kube import access
from tests.integration import http_calls
from tests.integration.api_fixtures import SINGLE, Api, poll_until
from tests.integration.test_rest_metrics import scrape, value

pytestmark = [pytest.mark.integration,
              # its module fixture's processes started once, on one worker
              pytest.mark.xdist_group("rest-limits")]

CAP, QUOTA = 64 << 10, 160 << 10
"""The per-file cap and the input/ quota of the small apiserver."""


@pytest.fixture(scope="module")
def small_api(single_user_api: Api, control_plane: ControlPlane,
              tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    """A single-user apiserver with a small upload cap and quota, and an exchange of its own."""
    port = free_port()
    exchange = tmp_path_factory.mktemp("small-exchange")
    process = ApiserverProcess(
        kubeconfig=control_plane.kubeconfig_for(IDENTITY[0]), exchange_dir=exchange,
        exchange_url=f"http://localhost:{port}/files", port=port, namespace=SINGLE,
        log=tmp_path_factory.mktemp("apiserver") / "small.log",
        extra_env={"CERISE_MAX_UPLOAD_BYTES": str(CAP), "CERISE_EXCHANGE_QUOTA_BYTES": str(QUOTA)})
    process.start()
    yield Api(f"http://localhost:{port}", exchange, process)
    process.stop()


def stored(api: Api) -> list[str]:
    """Every file below the exchange's input/, temporary ones included."""
    return sorted(str(path.relative_to(api.exchange_dir)) for path in
                  (api.exchange_dir / "input").rglob("*") if path.is_file())


def test_uploads_over_the_cap_or_the_quota_are_refused_leaving_nothing(small_api: Api) -> None:
    files = f"{small_api.url}/files/input/quota"
    with httpx.Client(timeout=30) as client:
        over = client.put(f"{files}/big.bin", content=b"x" * (CAP + 1))
        assert over.status_code == 413
        assert over.json()["detail"] == ("a file in the exchange may hold at most 64 KiB; "
                                          "nothing was stored")
        streamed = client.put(f"{files}/streamed.bin",
                              content=iter([b"x" * 40_000, b"x" * 40_000]))  # no length
        assert streamed.status_code == 413
        for number in range(2):
            assert client.put(f"{files}/{number}.bin", content=b"y" * CAP).status_code == 201
        full = client.put(f"{files}/2.bin", content=b"y" * CAP)
        assert full.status_code == 507
        assert full.json()["detail"].startswith(
            "input/ of this namespace would hold more than its quota of 160 KiB; nothing was "
            "stored: delete inputs")
        full_streamed = client.put(f"{files}/3.bin", content=iter([b"z" * 20_000] * 3))
        assert full_streamed.status_code == 507
        assert stored(small_api) == ["input/quota/0.bin", "input/quota/1.bin"]
        assert client.delete(f"{files}/0.bin").status_code == 204
        assert client.put(f"{files}/2.bin", content=b"y" * CAP).status_code == 201


@pytest.mark.parametrize("levels", [65, 5000, 200_000])
def test_deeply_nested_json_is_a_400(single_user_api: Api, levels: int) -> None:
    deep = "[" * levels + "]" * levels
    body = f'{{"workflow": "x", "input": {{"deep": {deep}}}}}'
    answer = http_calls.post(f"{single_user_api.url}/jobs", content=body, timeout=30,
                             headers={"Content-Type": "application/json"})
    assert answer.status_code == 400, answer.text[:300]
    assert answer.json()["detail"] == "the request body nests arrays and objects more than 64 deep"


def test_unknown_methods_count_as_other(single_user_api: Api) -> None:
    """Methods the HTTP parser knows but Cerise does not (WebDAV's LOCK, COPY…) count as
    `other`; made-up ones are refused by the parser and count nowhere."""
    before = scrape(single_user_api)
    methods = ["LOCK", "COPY", "PURGE", f"X-{uuid.uuid4().hex[:8].upper()}"]
    for method in methods:
        assert http_calls.request(method, f"{single_user_api.url}/jobs").status_code in (400, 405)
    after = scrape(single_user_api)
    labels = {dict(key[1]).get("method") for key in after}
    assert not labels & set(methods)
    moved = sum(value(after, "cerise_api_requests_total", method="other", route=r, status=s)
                - value(before, "cerise_api_requests_total", method="other", route=r, status=s)
                for r in ("/jobs", "unmatched") for s in ("400", "405"))
    assert moved == 3


def refused_tokens(plane: ControlPlane) -> float:
    """Requests the Kubernetes API server has refused to authenticate so far: each access
    review asked with a bogus token is one (nothing else here sends a bad credential)."""
    text = plane.kubectl("get", "--raw", "/metrics").stdout
    return sum(sample.value for family in text_string_to_metric_families(text)
               for sample in family.samples if sample.name.startswith("authentication_attempts")
               and sample.labels.get("result") in ("failure", "error"))


def test_bogus_tokens_do_not_become_a_burst_of_access_reviews(
    cluster_api: Api, control_plane: ControlPlane,
) -> None:
    jobs = f"{cluster_api.url}/ns/team-a/jobs"
    before = refused_tokens(control_plane)
    bogus = {"Authorization": f"Bearer bogus-{uuid.uuid4().hex}"}
    with httpx.Client(timeout=30) as client:
        answers = [client.get(jobs, headers=bogus).status_code for _ in range(50)]
    assert answers == [401] * 50
    assert refused_tokens(control_plane) - before == 1  # the one token was asked about once

    async def burst(tokens: list[str]) -> list[int]:
        async with httpx.AsyncClient(timeout=120, limits=httpx.Limits(
                max_connections=len(tokens))) as client:
            answers = await asyncio.gather(*(client.get(
                jobs, headers={"Authorization": f"Bearer {token}"}) for token in tokens))
        return [answer.status_code for answer in answers]

    before, started = refused_tokens(control_plane), time.monotonic()
    statuses = asyncio.run(burst([f"bogus-{uuid.uuid4().hex}" for _ in range(150)]))
    elapsed = time.monotonic() - started
    made = refused_tokens(control_plane) - before
    assert set(statuses) <= {401, 429}
    assert statuses.count(429) > 0
    assert made <= access.REVIEW_BURST + access.REVIEWS_PER_SECOND * elapsed + 1
    alice = {"Authorization": f"Bearer {control_plane.identities['alice'].token}"}
    poll_until(lambda: http_calls.get(jobs, headers=alice, timeout=30).status_code == 200, 10,
               "alice served again once the burst is over")


def test_cluster_metrics_are_not_on_the_tenants_port(cluster_api: Api,
                                                     control_plane: ControlPlane) -> None:
    alice = {"Authorization": f"Bearer {control_plane.identities['alice'].token}"}
    assert http_calls.get(f"{cluster_api.url}/metrics", headers=alice).status_code == 404
    assert http_calls.get(f"{cluster_api.url}/ns/team-a/metrics", headers=alice).status_code == 404
    port = cluster_api.process.extra_env["CERISE_METRICS_PORT"]
    metrics = http_calls.get(f"http://127.0.0.1:{port}/metrics", timeout=30)
    assert metrics.status_code == 200
    assert "cerise_api_requests_total" in metrics.text


def test_a_submitted_input_object_of_sane_depth_still_works(single_user_api: Api) -> None:
    record: object = "leaf"
    for _ in range(20):
        record = {"nested": record}
    workflow = json.dumps({"cwlVersion": "v1.2", "class": "Workflow", "inputs": {},
                           "outputs": {}, "steps": {}})
    answer = http_calls.post(f"{single_user_api.url}/jobs", timeout=30,
                             json={"workflow": workflow, "input": {"extra": record}})
    assert answer.status_code == 201, answer.text
    http_calls.delete(f"{single_user_api.url}/jobs/{answer.json()['id']}", timeout=30)
