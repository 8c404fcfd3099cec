"""The job cache's pure parts: reading a watch stream, and its sorted, counted views."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx2
import pytest

from cerise.kube import cache, watch

SEPARATORS = "\x85\u2028\u2029\x0b\x0c\x1c\x1d\x1e\r"


def event(kind: str, name: str, *, created: str = "2026-01-01T00:00:00Z", rv: int = 1,
          phase: str | None = None, label: str = "") -> dict[str, Any]:
    body: dict[str, Any] = {"metadata": {"name": name, "namespace": "ns",
                                         "creationTimestamp": created,
                                         "resourceVersion": str(rv)},
                            "spec": {"name": label}}
    if phase:
        body["status"] = {"phase": phase}
    return {"type": kind, "object": body}


async def chunked(data: bytes, size: int) -> AsyncIterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start:start + size]


async def read(data: bytes, size: int) -> list[watch.Event]:
    return [found async for found in watch.events(chunked(data, size))]


@pytest.mark.parametrize("size", [1, 2, 3, 7, 4096])
async def test_a_name_with_unicode_line_separators_stays_one_event(size: int) -> None:
    sent = [event("ADDED", "a", label=f"x{SEPARATORS}y"), event("MODIFIED", "b", rv=2)]
    # The API server writes non-ASCII characters raw, as ensure_ascii=False does.
    stream = b"".join(json.dumps(one, ensure_ascii=False).encode() + b"\n" for one in sent)
    found = await read(stream, size)
    assert [(one.type, one.body["spec"]["name"]) for one in found] == [
        ("ADDED", f"x{SEPARATORS}y"), ("MODIFIED", "")]


async def test_httpx_line_reader_is_what_split_the_events() -> None:
    """The cause: httpx2's text lines split where `str.splitlines` does."""
    stream = json.dumps(event("ADDED", "a", label="x\u2028y"), ensure_ascii=False) + "\n"
    response = httpx2.Response(200, content=stream.encode())
    assert len([line async for line in response.aiter_lines()]) == 2


async def test_error_events_say_list_again_or_fail() -> None:
    gone = json.dumps({"type": "ERROR", "object": {"code": 410, "message": "too old"}})
    with pytest.raises(watch.Expired):
        await read(gone.encode() + b"\n", 10)
    other = json.dumps({"type": "ERROR", "object": {"code": 500, "message": "boom"}})
    with pytest.raises(watch.WatchFailed, match="boom"):
        await read(other.encode(), 10)


def jobs() -> cache.ObjectCache:
    kind = cache.Kind("cerise.dev", "v1alpha1", "workflowjobs", "WorkflowJob")
    return cache.ObjectCache(
        httpx2.AsyncClient(), kind,
        order=lambda body: str(body["metadata"]["creationTimestamp"]),
        tally=lambda body: str((body.get("status") or {}).get("phase") or "Submitted"))


def test_views_stay_sorted_and_counted_through_changes() -> None:
    found = jobs()
    for index in (3, 1, 2, 5, 4):
        found.remember(event("ADDED", f"job-{index}", created=f"2026-01-0{index}T00:00:00Z",
                             rv=index)["object"])
    before = found.revision("ns")
    found.remember(event("MODIFIED", "job-2", created="2026-01-02T00:00:00Z", rv=9,
                         phase="Success")["object"])
    found.forget("ns", "job-4")
    assert found.revision("ns") > before and found.revision("other") <= before
    names = [body["metadata"]["name"] for body in found.in_namespace("ns")]
    assert names == ["job-1", "job-2", "job-3", "job-5"]
    assert found.tallied("ns") == {"Submitted": 3, "Success": 1}
    newest = found.after("ns", ("\uffff", ""), 2, newest_first=True)
    assert [body["metadata"]["name"] for body in newest] == ["job-5", "job-3"]
    older = found.after("ns", ("2026-01-03T00:00:00Z", "job-3"), 5, newest_first=True)
    assert [body["metadata"]["name"] for body in older] == ["job-2", "job-1"]
    later = found.after("ns", ("2026-01-02T00:00:00Z", "job-2"), 1)
    assert [body["metadata"]["name"] for body in later] == ["job-3"]


def test_an_older_version_does_not_replace_a_newer_one() -> None:
    found = jobs()
    found.remember(event("MODIFIED", "a", rv=5, phase="Running")["object"])
    found.remember(event("MODIFIED", "a", rv=4, phase="Waiting")["object"])
    assert found.tallied("ns") == {"Running": 1}



def test_failures_back_off_and_a_steady_spell_starts_afresh() -> None:
    delays = [0.0]
    for _ in range(7):
        delays.append(cache.retry_delay(delays[-1], followed_for=1))
    assert delays[1:] == [0.5, 1, 2, 4, 8, 10, 10]
    assert cache.retry_delay(10, followed_for=cache.STEADY + 1) == cache.FIRST_RETRY
