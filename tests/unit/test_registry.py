"""The operator's job cache: newest versions win, workers see only jobs with work left."""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

import pytest
from lightkube import AsyncClient

from cerise.model.exchange import Layout
from cerise.operator.registry import Registry


def body(uid: str, phase: str, version: int, resource: str = "hpc", **meta: Any) -> dict[str, Any]:
    return {"metadata": {"uid": uid, "namespace": "ns", "name": uid,
                         "resourceVersion": str(version), **meta},
            "spec": {"computeResource": resource, "workflow": "w"},
            "status": {"phase": phase}}


@pytest.fixture
def registry(tmp_path: Path) -> Registry:
    # No API calls happen for jobs that already have a phase: the client is never used.
    return Registry(kube=cast(AsyncClient, None),
                    exchange=Layout(root=tmp_path, url="http://localhost/files"))


def names(bodies: list[dict[str, Any]]) -> set[str]:
    return {b["metadata"]["uid"] for b in bodies}


async def test_workers_see_only_active_jobs_of_their_resource(registry: Registry) -> None:
    await registry.job_event("ADDED", body("a", "Running", 1))
    await registry.job_event("ADDED", body("b", "Success", 2))
    await registry.job_event("ADDED", body("c", "Waiting", 3, resource="other"))
    await registry.job_event("ADDED", body("d", "Waiting", 4, deletionTimestamp="now"))
    assert names(registry.jobs_on(("ns", "hpc"))) == {"a"}
    assert names(registry.jobs_on(("ns", "other"))) == {"c"}


async def test_a_job_that_ends_leaves_the_active_set(registry: Registry) -> None:
    await registry.job_event("ADDED", body("a", "StagingOut", 1))
    await registry.job_event("MODIFIED", body("a", "Success", 2))
    assert registry.jobs_on(("ns", "hpc")) == []


async def test_an_older_event_does_not_replace_a_newer_write(registry: Registry) -> None:
    registry.remember(body("a", "Running", 7))
    await registry.job_event("MODIFIED", body("a", "Waiting", 5))
    (current,) = registry.jobs_on(("ns", "hpc"))
    assert current["status"]["phase"] == "Running"


async def test_deleted_jobs_are_forgotten(registry: Registry) -> None:
    await registry.job_event("ADDED", body("a", "Running", 1))
    await registry.job_event("DELETED", body("a", "Running", 2))
    assert registry.jobs_on(("ns", "hpc")) == []
    assert registry.jobs == {}
