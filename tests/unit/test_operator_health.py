"""The operator's health: the silence bound, dead tasks, and supervised restarts."""

from __future__ import annotations

import asyncio
import logging
from typing import Any, cast

import kopf
import pytest

from cerise.operator import handlers, health
from cerise.operator.health import Health, Unhealthy


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_healthy_while_the_api_answered_within_the_bound() -> None:
    clock = Clock()
    state = Health(bound=60, clock=clock)
    clock.now += 59
    assert state.check() == {"apiSilentSeconds": 59.0}
    clock.now += 2
    with pytest.raises(Unhealthy, match="no contact with the Kubernetes API for 61 s"):
        state.check()
    state.contact()
    assert state.check() == {"apiSilentSeconds": 0.0}


def test_a_dead_task_is_unhealthy_until_it_runs_again() -> None:
    state = Health(clock=Clock())
    state.died("retention-sweep", RuntimeError("boom"))
    with pytest.raises(Unhealthy, match=r"task retention-sweep died \(RuntimeError: boom\)"):
        state.check()
    state.running("retention-sweep")
    state.check()


def test_restart_delay_doubles_up_to_a_limit() -> None:
    delays = [health.restart_delay(failures) for failures in range(1, 6)]
    assert delays == [1.0, 2.0, 4.0, 8.0, 16.0]
    assert health.restart_delay(100) == 300.0


async def test_a_failing_task_is_logged_and_started_again(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(health, "FIRST_RESTART", 0.1)
    state = Health()
    runs: list[int] = []
    dead_between: list[bool] = []
    done = asyncio.Event()

    async def flaky() -> None:
        runs.append(len(runs))
        dead_between.append("flaky" in state.dead)
        if len(runs) < 3:
            raise ValueError(f"failure {len(runs)}")
        done.set()
        await asyncio.Event().wait()

    with caplog.at_level(logging.ERROR, logger="cerise.operator.health"):
        task = asyncio.create_task(health.supervise("flaky", flaky, state))
        await asyncio.wait_for(done.wait(), 5)
    assert len(runs) == 3 and dead_between == [False, False, False]
    assert [record.getMessage() for record in caplog.records] == [
        "background task flaky died; starting it again in 0.1 s",
        "background task flaky died; starting it again in 0.2 s"]
    state.check()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert state.dead == {}, "cancelling is not dying"


async def test_a_task_that_returns_counts_as_dead(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(health, "FIRST_RESTART", 60)
    state = Health()

    async def returns() -> None:
        return None

    task = asyncio.create_task(health.supervise("quitter", returns, state))
    for _ in range(100):
        if state.dead:
            break
        await asyncio.sleep(0.01)
    assert state.dead == {"quitter": "RuntimeError: it ended"}
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


def test_the_bound_comes_from_the_environment() -> None:
    assert health.contact_bound({}) == 60.0
    assert health.contact_bound({"CERISE_HEALTH_CONTACT_SECONDS": "15"}) == 15.0
    with pytest.raises(ValueError, match="CERISE_HEALTH_CONTACT_SECONDS must be a positive"):
        health.contact_bound({"CERISE_HEALTH_CONTACT_SECONDS": "-1"})


class _Registry:
    """Runs workers that fail as told."""

    sharing = None

    def __init__(self, error: Exception | None) -> None:
        self.error = error

    def resource_event(self, *_: Any) -> bool:
        return False

    async def run_worker(self, *_: Any, **__: Any) -> None:
        if self.error is not None:
            raise self.error


async def _run_worker(registry: _Registry) -> None:
    handlers._state["registry"] = cast(Any, registry)
    await _handler(handlers.resource_worker)(namespace="ns", name="hpc", spec={},
                                             meta={"uid": "u"}, stopped=None)


def _handler(function: object) -> Any:
    """A kopf handler, called as kopf would (its decorated type asks for every kwarg)."""
    return function


async def test_a_dead_worker_fails_the_probe_until_it_runs_again_or_is_deleted(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(handlers, "_health", Health())
    monkeypatch.setattr(handlers, "_state", {})
    with pytest.raises(RuntimeError):
        await _run_worker(_Registry(RuntimeError("a bug")))
    with pytest.raises(kopf.PermanentError, match=r"task worker ns/hpc died \(RuntimeError: a bug"):
        _handler(handlers.operator_health)()
    await _run_worker(_Registry(None))
    assert _handler(handlers.operator_health)()["apiSilentSeconds"] >= 0
    with pytest.raises(RuntimeError):
        await _run_worker(_Registry(RuntimeError("a bug")))
    await _handler(handlers.resource_event)(type="DELETED", namespace="ns", name="hpc",
                                            spec={})
    _handler(handlers.operator_health)()


async def test_a_resource_that_cannot_be_used_yet_is_no_death(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(handlers, "_health", Health())
    monkeypatch.setattr(handlers, "_state", {})
    with pytest.raises(kopf.TemporaryError):
        await _run_worker(_Registry(kopf.TemporaryError("no Secret yet", delay=30)))
    _handler(handlers.operator_health)()
