"""Retention of finished jobs: parsing retentions, and which jobs have outlived theirs."""

from __future__ import annotations

import datetime
from pathlib import Path
from typing import Any, cast

import pytest
from lightkube import AsyncClient

from cerise.model import compute
from cerise.model.compute import InvalidResource
from cerise.model.exchange import Layout
from cerise.model.retention import expired, finished_at, parse_retention
from cerise.operator.registry import Registry
from cerise.operator.retention import RETENTION, Settings, durations, settings

NOW = datetime.datetime(2025, 6, 1, 12, 0, 0, tzinfo=datetime.UTC)


def job(name: str, phase: str | None, finished: str | None = None, *,
        resource: str = "hpc", namespace: str = "ns", **status: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "metadata": {"namespace": namespace, "name": name, "uid": f"uid-{name}"},
        "spec": {"computeResource": resource}, "status": dict(status)}
    if phase:
        body["status"]["phase"] = phase
    if finished:
        body["status"]["finishedAt"] = finished
    return body


def ago(seconds: float) -> str:
    return (NOW - datetime.timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%SZ")


@pytest.mark.parametrize(("text", "seconds"), [
    ("0", 0), ("3600", 3600), ("45s", 45), ("90m", 5400), ("12h", 43200), ("30d", 2592000),
    ("2w", 1209600), ("1d12h", 129600), (" 7d ", 604800),
])
def test_retentions_parse(text: str, seconds: float) -> None:
    assert parse_retention(text) == seconds


@pytest.mark.parametrize("text", ["", "d", "1.5d", "-1", "10y", "1 d", "30days", "1h1d1"])
def test_bad_retentions_say_what_is_accepted(text: str) -> None:
    with pytest.raises(ValueError, match="such as 30d"):
        parse_retention(text)


def test_a_resource_spec_carries_its_retention() -> None:
    base = {"jobs": {"protocol": "local"}}
    assert compute.parse_spec(base).job_retention is None
    assert compute.parse_spec({**base, "jobRetention": "1d"}).job_retention == 86400
    with pytest.raises(InvalidResource, match="jobRetention"):
        compute.parse_spec({**base, "jobRetention": "soon"})


def test_the_end_of_a_job_is_its_finished_at_or_its_final_condition() -> None:
    assert finished_at(job("a", "Success", "2025-05-01T10:00:00Z")) == datetime.datetime(
        2025, 5, 1, 10, tzinfo=datetime.UTC)
    condition = {"type": "Succeeded", "status": "False", "lastTransitionTime": ago(60)}
    assert finished_at(job("b", "SystemError", conditions=[condition])) == NOW - datetime.timedelta(
        seconds=60)
    assert finished_at(job("c", "Running", ago(60))) is None, "not finished"
    assert finished_at(job("d", None)) is None
    assert finished_at(job("e", "Cancelled")) is None, "nothing to count from: kept"
    assert finished_at(job("f", "Success", "yesterday")) is None


def test_only_finished_jobs_past_their_resources_retention_expire() -> None:
    jobs = [
        job("old", "Success", ago(7200)),
        job("young", "Success", ago(60)),
        job("running", "Running"),
        job("staging-out", "StagingOut"),
        job("elsewhere", "PermanentFailure", ago(7200), resource="kept"),
        job("just", "Cancelled", ago(3600)),
    ]
    retentions = {("ns", "hpc"): 3600.0, ("ns", "kept"): None}
    found = expired(jobs, NOW, lambda *key: retentions[key], limit=100)
    assert [j["metadata"]["name"] for j in found] == ["old", "just"]


def test_oldest_first_in_bounded_batches_and_deletions_under_way_skipped() -> None:
    jobs = [job(f"j{age}", "Success", ago(age * 100)) for age in (3, 9, 1, 7, 5)]
    jobs[1]["metadata"]["deletionTimestamp"] = ago(1)
    found = expired(jobs, NOW, lambda *_: 0.0, limit=2)
    assert [j["metadata"]["name"] for j in found] == ["j7", "j5"]


def test_operator_settings_from_its_environment() -> None:
    assert settings({}) == Settings(default=None, interval=300.0, batch=100)
    assert settings({"CERISE_JOB_RETENTION": "30d", "CERISE_RETENTION_SWEEP_SECONDS": "0.5",
                     "CERISE_RETENTION_BATCH": "10"}) == Settings(2592000.0, 0.5, 10)
    for bad, message in [({"CERISE_JOB_RETENTION": "a month"}, "CERISE_JOB_RETENTION"),
                         ({"CERISE_RETENTION_SWEEP_SECONDS": "0"}, "positive number"),
                         ({"CERISE_RETENTION_BATCH": "2.5"}, "whole number")]:
        with pytest.raises(ValueError, match=message):
            settings(bad)


async def test_a_resource_without_a_worker_here_keeps_its_own_retention_unread(
        tmp_path: Path) -> None:
    # No API client: a read would fail the test. The watch showed "theirs" (another
    # replica's) and the deletion of "gone"; both are answered from what it showed.
    registry = Registry(kube=cast(AsyncClient, None),
                        exchange=Layout(root=tmp_path, url="http://localhost/files"))
    registry.resource_event("ADDED", "ns", "theirs", {"jobRetention": "2h"})
    registry.resource_event("ADDED", "ns", "gone", {"jobRetention": "2h"})
    registry.resource_event("DELETED", "ns", "gone", {"jobRetention": "2h"})
    for _ in range(3):  # every sweep
        found = await durations(registry, [("ns", "theirs"), ("ns", "gone")], 60.0, RETENTION)
        assert found == {("ns", "theirs"): 7200.0, ("ns", "gone"): 60.0}
    registry.resource_event("ADDED", "ns", "gone", {})  # made again, saying nothing
    assert await durations(registry, [("ns", "gone")], 60.0, RETENTION) == {("ns", "gone"): 60.0}
    assert not registry.absent
