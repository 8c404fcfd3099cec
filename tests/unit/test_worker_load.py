"""A resource worker's own load stays bounded: staging tasks per resource, jobs held until
their time, and memory only of live jobs."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, cast

import pytest
from lightkube import AsyncClient

from cerise.model import compute
from cerise.model.exchange import Layout
from cerise.operator import worker
from cerise.operator.specialisations import Specialisations
from cerise.operator.worker import ResourceWorker
from cerise.remote.failures import RemoteCommandFailed
from cerise.remote.local import LocalRemote
from cerise.remote.schedulers.direct import DirectScheduler

Body = dict[str, Any]


def job(uid: str) -> Body:
    return {"metadata": {"uid": uid, "namespace": "ns", "name": uid, "resourceVersion": "1"},
            "spec": {"computeResource": "here", "workflow": "w"},
            "status": {"phase": "StagingIn"}}


@pytest.fixture
def resource_worker(tmp_path: Path) -> ResourceWorker:
    # Only the scheduling of work is exercised: nothing here reaches the API server.
    kube = cast(AsyncClient, None)
    spec = compute.parse_spec({"refreshSeconds": 0.1,
                               "files": {"protocol": "local", "path": str(tmp_path / "base")},
                               "jobs": {"protocol": "local", "scheduler": "none"}})
    return ResourceWorker(
        namespace="ns", name="here", spec=spec, remote=LocalRemote(), scheduler=DirectScheduler(),
        kube=kube, exchange=Layout(root=tmp_path, url="http://x/files").for_namespace("ns"),
        jobs=list, remember=lambda _: None, specialisations=Specialisations(kube))


class Work:
    """Staging work that lasts until released, counting its starts."""

    def __init__(self) -> None:
        self.started: list[str] = []
        self.release = asyncio.Event()

    async def __call__(self, body: Body) -> None:
        self.started.append(body["metadata"]["uid"])
        await self.release.wait()


async def settled(resource_worker: ResourceWorker) -> None:
    """Wait for the worker's staging tasks to end."""
    await asyncio.gather(*resource_worker._tasks.values())


def staged(bodies: list[Body], work: Work) -> list[tuple[
        Body, Callable[[Body], Coroutine[Any, Any, None]]]]:
    return [(body, work) for body in bodies]


async def test_at_most_a_few_jobs_are_staged_at_once_the_rest_in_turn(
        resource_worker: ResourceWorker) -> None:
    work, bodies = Work(), [job(f"j{n}") for n in range(worker.STAGING_TASKS + 5)]
    resource_worker._start(staged(bodies, work))
    await asyncio.sleep(0)
    assert len(work.started) == worker.STAGING_TASKS
    work.release.set()
    await settled(resource_worker)
    resource_worker._start(staged(bodies[worker.STAGING_TASKS:], work))
    await settled(resource_worker)
    assert sorted(work.started) == sorted(b["metadata"]["uid"] for b in bodies)


async def test_a_held_job_is_not_started_again_before_its_time(
        resource_worker: ResourceWorker) -> None:
    work, body = Work(), job("held")
    work.release.set()
    resource_worker.context.tracked(body).resume_at = time.monotonic() + 60
    for _ in range(10):  # ten ticks meanwhile
        resource_worker._start(staged([body], work))
        await asyncio.sleep(0.01)
    assert work.started == []
    resource_worker.context.tracked(body).resume_at = time.monotonic()  # its time has come
    resource_worker._start(staged([body], work))
    await settled(resource_worker)
    assert work.started == ["held"]


async def test_a_passing_failure_holds_the_job_for_a_delay(
        resource_worker: ResourceWorker, monkeypatch: pytest.MonkeyPatch) -> None:
    messages: list[str] = []

    async def record(body: Body, message: str, *, reason: str) -> None:
        messages.append(message)

    monkeypatch.setattr(resource_worker.context.transitions, "record_message", record)
    body = job("flaky")

    async def failing(_: Body) -> None:
        raise RemoteCommandFailed("reading the installed steps: lost")

    await resource_worker._guarded(body, failing)
    tracking = resource_worker.context.tracked(body)
    assert tracking.failures == 1 and tracking.resume_at > time.monotonic()
    assert messages and "reading the installed steps: lost" in messages[0]


async def test_the_worker_forgets_jobs_that_ended(resource_worker: ResourceWorker) -> None:
    resource_worker.context.tracked(job("ended"))
    resource_worker.context.tracked(job("live"))
    resource_worker._forget_ended({"live"})
    assert set(resource_worker.context.tracking) == {"live"}


async def test_a_change_on_a_quiet_resource_is_taken_up_at_once(
        resource_worker: ResourceWorker) -> None:
    assert resource_worker._coalesce() == 0.0, "a new job waits for nothing"
    resource_worker._woken_at = time.monotonic()  # a change was just taken up
    resource_worker._tick_seconds = 1.0  # by a tick of many jobs
    assert 0.0 < resource_worker._coalesce() <= worker.COALESCE, "a burst waits for more"


async def test_after_a_quick_tick_the_next_change_waits_a_few_times_as_long(
        resource_worker: ResourceWorker) -> None:
    """Jobs submitted one after another on a resource with few: each is taken up a few
    milliseconds after the last one's change, not COALESCE after."""
    resource_worker._woken_at = time.monotonic()
    resource_worker._tick_seconds = 0.002
    wait = resource_worker._coalesce()
    assert 0.0 < wait <= 0.002 / worker.TICK_SHARE < worker.COALESCE / 2, wait


class Stop:
    """A daemon's stop flag."""

    def __init__(self) -> None:
        self.stopped = False

    def __bool__(self) -> bool:
        return self.stopped


class Ticks:
    """A worker's ticks, counted: the worker runs with nothing but them (no probe, no end
    watch, no API server)."""

    def __init__(self, resource_worker: ResourceWorker, monkeypatch: pytest.MonkeyPatch) -> None:
        self.count = 0
        self.ticked = asyncio.Event()

        async def tick() -> None:
            self.count += 1
            self.ticked.set()

        async def nothing(*_: Any, **__: Any) -> None:
            return None

        monkeypatch.setattr(resource_worker, "tick", tick)
        monkeypatch.setattr(resource_worker.status, "probe", nothing)
        monkeypatch.setattr(resource_worker.end_watch, "run", nothing)


async def test_what_a_poll_for_a_run_s_end_moves_on_is_taken_up_at_once(
        resource_worker: ResourceWorker, monkeypatch: pytest.MonkeyPatch) -> None:
    ticks = Ticks(resource_worker, monkeypatch)
    stop = Stop()
    running = asyncio.create_task(resource_worker.run(cast(Any, stop)))
    resource_worker._poll_now()  # a run ended: poll now
    await asyncio.wait_for(ticks.ticked.wait(), 10)
    # The poll moved the job to Finished: its stage-out starts without waiting for COALESCE.
    assert resource_worker._coalesce() == 0.0
    stop.stopped = True
    resource_worker.wake.set()
    await asyncio.wait_for(running, 10)


async def test_a_worker_cancelled_as_a_change_wakes_it_stops(
        resource_worker: ResourceWorker, monkeypatch: pytest.MonkeyPatch) -> None:
    """A replica that loses a resource's Lease cancels its worker; a job's change arriving
    at that moment (as they do, in a burst, when a paused replica wakes) must not keep the
    worker going."""
    ticks = Ticks(resource_worker, monkeypatch)
    running = asyncio.create_task(resource_worker.run(cast(Any, Stop())))
    await ticks.ticked.wait()
    await asyncio.sleep(0.03)  # waiting for a change, or the next refresh (0.1 s)
    resource_worker.wake.set()
    running.cancel()
    done, _ = await asyncio.wait({running}, timeout=5)
    assert done, f"the worker went on ticking after it was cancelled ({ticks.count} ticks)"
    assert running.cancelled()
