"""`GET /jobs` with thousands of live and archived jobs on the real stack (kube-apiserver,
PostgreSQL, the apiserver, the published cerise-client): streamed whole, or paged."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import cerise_client
import httpx
import pytest

from cerise.archive import records
from cerise.archive.store import Archive
from cerise.devenv.apiserver import IDENTITY, ApiserverProcess
from cerise.devenv.controlplane import ControlPlane
from cerise.devenv.postgres import Postgres
from cerise.devenv.process import free_port
from tests.integration import http_calls
from tests.integration.operator_fixtures import EXCHANGE_URL

pytestmark = [pytest.mark.integration,
              # its module fixture's processes started once, on one worker
              pytest.mark.xdist_group("rest-listing")]

LIVE = 40
EARLY = 2300
"""Archived jobs from before every live one: more than two of the archive's reads."""
LATE = 300


@dataclass(frozen=True)
class Listing:
    """An apiserver over a namespace of live and archived jobs, and the ids of every job in
    the order `GET /jobs` must give them."""

    url: str
    ids: list[str]
    both: str
    """A job both live and archived (archived, not yet pruned): listed once, live."""


def workflow_job(name: str, namespace: str) -> dict[str, Any]:
    return {"apiVersion": "cerise.dev/v1alpha1", "kind": "WorkflowJob",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"name": f"«{name}»", "workflow": "wc.cwl", "input": {"n": 1},
                     "computeResource": "local"}}


def archived(name: str, namespace: str, created: str, uid: str | None = None) -> records.Record:
    body = workflow_job(name, namespace)
    body["metadata"] |= {"uid": uid or str(uuid.uuid4()), "creationTimestamp": created}
    body["status"] = {"phase": "Success", "finishedAt": "2026-12-06T10:00:00+00:00",
                      "output": {"n": 1}}
    return records.record(body, f"{EXCHANGE_URL}/logs/{body['metadata']['uid']}.log")


async def add(url: str, found: list[records.Record]) -> None:
    archive = Archive(url)
    await archive.open()
    try:
        await archive.ready()
        await archive.add(found)
    finally:
        await archive.close()


@pytest.fixture(scope="module")
def listing(control_plane: ControlPlane, archive_db: Postgres,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[Listing]:
    """Namespace `listing-<random>`: `LIVE` WorkflowJobs, and in the archive `EARLY` jobs
    created before them, two more in each live job's second (one sorting before it by name,
    one after), `LATE` created after them and a copy of one live job."""
    namespace = f"listing-{uuid.uuid4().hex[:6]}"
    control_plane.kubectl("create", "namespace", namespace)
    control_plane.kubectl("create", "-f", "-", stdin=json.dumps({
        "apiVersion": "v1", "kind": "List",
        "items": [workflow_job(f"live-{n:03d}", namespace) for n in range(LIVE)]}))
    live = json.loads(control_plane.kubectl(
        "get", "wfj", "-n", namespace, "-o", "json").stdout)["items"]
    stamps = sorted({job["metadata"]["creationTimestamp"] for job in live})
    found = [archived(f"early-{n:05d}", namespace, "2026-01-01T00:00:00Z") for n in range(EARLY)]
    found += [archived(f"{prefix}-{n:03d}", namespace, job["metadata"]["creationTimestamp"])
              for n, job in enumerate(live) for prefix in ("between", "rest")]
    found += [archived(f"rest-late-{n:05d}", namespace, "2099-01-01T00:00:00Z")
              for n in range(LATE)]
    both = live[LIVE // 2]["metadata"]
    found.append(archived(both["name"], namespace, both["creationTimestamp"], both["uid"]))
    asyncio.run(add(archive_db.url, found))
    everything = {(job["metadata"]["creationTimestamp"], job["metadata"]["name"])
                  for job in live} | {(row.created, row.name) for row in found}
    assert stamps[0] > "2026-01-01T00:00:00Z"
    port = free_port()
    process = ApiserverProcess(
        kubeconfig=control_plane.kubeconfig_for(IDENTITY[0]),
        exchange_dir=tmp_path_factory.mktemp("listing-exchange"), exchange_url=EXCHANGE_URL,
        port=port, namespace=namespace, log=tmp_path_factory.mktemp("apiserver") / "listing.log",
        extra_env={"CERISE_ARCHIVE_URL": archive_db.url})
    process.start()
    try:
        yield Listing(process.url, [name for _, name in sorted(everything)], both["name"])
    finally:
        process.stop()
        control_plane.kubectl("delete", "namespace", namespace, "--wait=false")


def test_every_job_live_and_archived_is_streamed_once_in_order(listing: Listing) -> None:
    assert len(listing.ids) == LIVE * 3 + EARLY + LATE
    with httpx.stream("GET", f"{listing.url}/jobs", timeout=60) as response:
        assert response.status_code == 200
        assert response.headers["transfer-encoding"] == "chunked"
        assert "content-length" not in response.headers
        jobs = json.loads(response.read())
    assert [job["id"] for job in jobs] == listing.ids
    shown = {job["id"]: job for job in jobs}
    assert shown["early-00000"]["state"] == "Success"
    assert shown[listing.both]["state"] != "Success"  # the live one
    assert shown["live-000"] == {
        "id": "live-000", "name": "«live-000»", "workflow": "wc.cwl", "input": {"n": 1},
        "state": shown["live-000"]["state"], "output": {},
        "log": f"{listing.url}/jobs/live-000/log", "accounting": None}  # not ended: no cost


def test_the_published_client_lists_every_job(listing: Listing) -> None:
    service = cerise_client.Service("http://localhost", int(listing.url.rsplit(":", 1)[1]))
    assert [job.id for job in service.list_jobs()] == listing.ids


@pytest.mark.parametrize("size", [1000, 777])
def test_pages_walk_every_job_exactly_once(listing: Listing, size: int) -> None:
    seen: list[str] = []
    url: str | None = f"{listing.url}/jobs?page_size={size}"
    while url is not None:
        response = http_calls.get(url, timeout=30)
        assert response.status_code == 200, response.text
        page = response.json()
        assert 0 < len(page) <= size
        seen += [job["id"] for job in page]
        url = response.links.get("next", {}).get("url")
        assert (url is None) == (len(seen) == len(listing.ids))
    assert seen == listing.ids


def test_a_token_alone_pages_by_100_and_a_bad_token_is_refused(listing: Listing) -> None:
    first = http_calls.get(f"{listing.url}/jobs?page_size=5")
    assert [job["id"] for job in first.json()] == listing.ids[:5]
    following = http_calls.get(first.links["next"]["url"].replace("page_size=5&", ""))
    assert [job["id"] for job in following.json()] == listing.ids[5:105]
    refused = http_calls.get(f"{listing.url}/jobs?page_token=bm90IGEgdG9rZW4")
    assert refused.status_code == 400
    assert "page_token is not one this service gave out" in refused.text
