"""`GET /jobs` of the Cerise API: the full listing, live and archived jobs merged and rendered
a chunk at a time, and its pages."""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Any, cast

import pytest

from cerise.apiserver import errors, history
from cerise.apiserver.routers import cerise_jobs
from cerise.apiserver.tenancy import Tenant
from cerise.archive import records
from cerise.archive.store import Cursor, Unavailable

Body = dict[str, Any]


def job(number: int, phase: str = "Success") -> Body:
    created = f"2026-12-06T10:{number // 60:02d}:{number % 60:02d}Z"
    return {"metadata": {"name": f"job-{number:03d}", "namespace": "team-a",
                         "uid": f"u-{number}", "creationTimestamp": created},
            "spec": {"name": f"job «{number}»", "workflow": "wc.cwl", "input": {"n": number}},
            "status": {"phase": phase, "output": {"n": number}}}


class Archive:
    """The archive's paging over a list, failing from its `fail_from`-th query on."""

    def __init__(self, bodies: list[Body], fail_from: int | None = None) -> None:
        self.bodies, self.fail_from, self.queries = bodies, fail_from, 0

    async def page(self, namespace: str, *, after: Cursor | None, limit: int,
                   newest_first: bool) -> list[Body]:
        self.queries += 1
        if self.fail_from is not None and self.queries >= self.fail_from:
            raise Unavailable("connection refused")
        ordered = sorted(self.bodies, key=records.order, reverse=newest_first)
        if after is not None:
            ordered = [body for body in ordered
                       if (records.order(body) < after if newest_first
                           else records.order(body) > after)]
        return ordered[:limit]


def tenant(live: list[Body], archive: Archive | None) -> Tenant:
    jobs = SimpleNamespace(in_namespace=lambda namespace: sorted(live, key=records.order))
    return cast(Tenant, SimpleNamespace(
        namespace="team-a", base_url="http://cerise.example/ns/team-a",
        services=SimpleNamespace(jobs=jobs, archive=archive)))


def names(bodies: list[Body]) -> list[str]:
    return [body["metadata"]["name"] for body in bodies]


# jobs 0-29: 0, 3, 6, … live; the rest archived; 9 and 21 both (archived, not yet pruned)
LIVE = [job(n, "Running") for n in range(0, 30, 3)]
ARCHIVED = [job(n) for n in range(30) if n % 3 or n in (9, 21)]
EVERY = [f"job-{n:03d}" for n in range(30)]


async def chunked(listing: Tenant, size: int) -> list[list[Body]]:
    return [chunk async for chunk in history.chunks(listing, size)]


@pytest.mark.parametrize("size", [1, 2, 7, 1000])
async def test_the_listing_merges_live_and_archived_jobs_a_chunk_at_a_time(size: int) -> None:
    archive = Archive(ARCHIVED)
    chunks = await chunked(tenant(LIVE, archive), size)
    assert names([body for chunk in chunks for body in chunk]) == EVERY
    assert all(0 < len(chunk) <= size for chunk in chunks)
    shown = {body["metadata"]["name"]: body for chunk in chunks for body in chunk}
    assert shown["job-009"]["status"]["phase"] == "Running"  # the live one
    assert archive.queries == len(ARCHIVED) // size + 1


async def test_without_an_archive_the_listing_is_the_live_jobs() -> None:
    chunks = await chunked(tenant(LIVE, None), 4)
    assert [names(chunk) for chunk in chunks] == [
        ["job-000", "job-003", "job-006", "job-009"], ["job-012", "job-015", "job-018", "job-021"],
        ["job-024", "job-027"]]


async def test_an_archive_failing_midway_leaves_the_rest_of_the_live_jobs() -> None:
    chunks = await chunked(tenant(LIVE, Archive(ARCHIVED, fail_from=2)), 5)
    # the first five archived jobs (1, 2, 4, 5, 7) and the live jobs
    assert names([body for chunk in chunks for body in chunk]) == [
        f"job-{n:03d}" for n in (0, 1, 2, 3, 4, 5, 6, 7, 9, 12, 15, 18, 21, 24, 27)]


async def streamed(listing: Tenant) -> bytes:
    return b"".join([piece async for piece in cerise_jobs._streamed(listing)])


async def test_the_streamed_listing_is_the_json_array_of_every_job(
        monkeypatch: pytest.MonkeyPatch) -> None:
    listing = tenant(LIVE, Archive(ARCHIVED))
    monkeypatch.setattr(history, "CHUNK", 4)
    pieces = [piece async for piece in cerise_jobs._streamed(listing)]
    assert len(pieces) > 5
    whole = b"".join(pieces)
    every = [body async for chunk in history.chunks(listing, 1000) for body in chunk]
    # the same bytes as rendering the whole list at once
    assert whole == json.dumps(
        [cerise_jobs.present(listing, body).model_dump(mode="json") for body in every],
        ensure_ascii=False, separators=(",", ":")).encode()
    jobs = json.loads(whole)
    assert [item["id"] for item in jobs] == EVERY
    assert jobs[1] == {"id": "job-001", "name": "job «1»", "workflow": "wc.cwl",
                       "input": {"n": 1}, "state": "Success", "output": {"n": 1},
                       "log": "http://cerise.example/ns/team-a/jobs/job-001/log",
                       "accounting": None}


async def test_no_jobs_stream_as_an_empty_array() -> None:
    assert await streamed(tenant([], Archive([]))) == b"[]"
    assert await streamed(tenant([], None)) == b"[]"


@pytest.mark.parametrize("size", [1, 4, 29, 30, 100])
async def test_pages_oldest_first_walk_every_job_once(size: int) -> None:
    listing = tenant(LIVE, Archive(ARCHIVED))
    seen: list[str] = []
    after: Cursor | None = None
    while True:
        found = await history.page(listing, after=after, limit=size, newest_first=False)
        seen += names(found)
        if len(found) < size:
            break
        after = history.token_place(history.page_token(records.order(found[-1])))
    assert seen == EVERY


@pytest.mark.parametrize("token", ["", "not base64!", "bm90IGpzb24=", "WzEsIDJd", "WyJhIl0="])
def test_a_page_token_this_service_did_not_give_is_refused(token: str) -> None:
    with pytest.raises(errors.BadRequest, match="page_token is not one this service gave out"):
        history.token_place(token)
