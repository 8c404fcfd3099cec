"""The operator's job cache: newest versions win, workers see only jobs with work left; a
deleted job's clean-up waits for its resource, but not for ever."""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

import kopf
import pytest
from lightkube import AsyncClient

from cerise.model.exchange import Layout
from cerise.operator.deletion import StillStopping
from cerise.operator.registry import GIVE_UP_REMOTE_CLEANUP, Registry
from cerise.operator.worker import ResourceWorker
from cerise.remote.failures import CommandTimedOut, RemoteCommandFailed, RemoteUnavailable


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


class UnreachableWorker:
    """A worker whose compute resource fails every deletion with `error`."""

    def __init__(self, error: Exception) -> None:
        self.error = error

    async def delete(self, body: dict[str, Any], looks: int = 0) -> None:
        raise self.error


@pytest.mark.parametrize("error", [
    CommandTimedOut("the remote command did not finish within 300 s"),
    RemoteUnavailable("connection refused"),
    RemoteCommandFailed("cannot remove /x: Permission denied"),
])
async def test_a_deletion_the_resource_cannot_do_yet_is_tried_again(
        registry: Registry, error: Exception) -> None:
    registry.workers[("ns", "hpc")] = cast(ResourceWorker, UnreachableWorker(error))
    with pytest.raises(kopf.TemporaryError, match="cannot clean up yet") as raised:
        await registry.delete_job(body("a", "Running", 1), retry=0)
    assert raised.value.delay == 10


async def test_a_deletion_gives_up_on_the_remote_side_in_the_end(
        registry: Registry, monkeypatch: pytest.MonkeyPatch) -> None:
    events: list[dict[str, Any]] = []
    monkeypatch.setattr(kopf, "event", lambda _, **event: events.append(event))
    registry.workers[("ns", "hpc")] = cast(ResourceWorker, UnreachableWorker(
        CommandTimedOut("the remote command did not finish within 300 s")))
    log = registry.exchange.for_namespace("ns").log_path("a")
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text("published")
    await registry.delete_job(body("a", "Running", 1), retry=GIVE_UP_REMOTE_CLEANUP)
    assert not log.exists()
    assert [event["reason"] for event in events] == ["CleanupIncomplete"]


async def test_a_job_still_stopping_is_looked_at_again_shortly(registry: Registry) -> None:
    registry.workers[("ns", "hpc")] = cast(ResourceWorker, UnreachableWorker(
        StillStopping("remote job 12 is still stopping", 0.5)))
    with pytest.raises(kopf.TemporaryError, match="still stopping") as raised:
        await registry.delete_job(body("a", "Running", 1), retry=0)
    assert raised.value.delay == 0.5
