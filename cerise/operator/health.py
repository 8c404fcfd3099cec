"""The operator's own health, for kopf's liveness endpoint (`/healthz`).

Unhealthy (`/healthz` answers 500) while the operator has had no successful contact with the
Kubernetes API for longer than CERISE_HEALTH_CONTACT_SECONDS (default 60), or while one of
its background tasks (retention sweep, archiver, a resource worker) has died and is not
running again yet. Contact is what the operator hears anyway (watch events, handled by
kopf); when it has heard nothing for `PING_SECONDS`, a GET /version asks. `supervise` runs
a background task again, with back-off, whenever it ends with an exception.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field

import httpx2 as httpx

from cerise.kube import contact
from cerise.model.decisions import retry_delay
from cerise.operator.retention import positive_number

logger = logging.getLogger(__name__)

CONTACT_SECONDS = 60.0
"""Default bound on the time without successful contact with the Kubernetes API."""
PING_SECONDS = 10.0
"""Silence after which the operator asks the API server for its version (a third of the
bound when that is shorter)."""
FIRST_RESTART = 1.0
"""Seconds before a task that died is started again the first time (doubling after)."""
STEADY = 60.0
"""A task that ran this long before dying starts its back-off afresh."""


class Unhealthy(Exception):
    """What is wrong with the operator."""


@dataclass
class Health:
    """When the operator last reached the API, and which of its tasks are dead."""

    bound: float = CONTACT_SECONDS
    clock: Callable[[], float] = time.monotonic
    last_contact: float = field(init=False)
    """Start-up counts as contact: the bound runs from it."""
    dead: dict[str, str] = field(default_factory=dict)
    """Tasks that died and are not running again yet: why."""

    def __post_init__(self) -> None:
        self.last_contact = self.clock()

    def contact(self) -> None:
        """The Kubernetes API just answered."""
        self.last_contact = self.clock()

    def silence(self) -> float:
        """Seconds since the Kubernetes API last answered."""
        return self.clock() - self.last_contact

    def died(self, task: str, error: BaseException) -> None:
        self.dead[task] = f"{type(error).__name__}: {error}"

    def running(self, task: str) -> None:
        self.dead.pop(task, None)

    def check(self) -> dict[str, float]:
        """How long the API has been silent; `Unhealthy` says what is wrong."""
        silence = self.silence()
        problems = [f"task {task} died ({why})" for task, why in sorted(self.dead.items())]
        if silence > self.bound:
            problems.insert(0, f"no contact with the Kubernetes API for {silence:.0f} s "
                               f"(bound {self.bound:g} s)")
        if problems:
            raise Unhealthy("; ".join(problems))
        return {"apiSilentSeconds": round(silence, 1)}


def contact_bound(environ: Mapping[str, str]) -> float:
    """CERISE_HEALTH_CONTACT_SECONDS; ValueError says what is wrong."""
    return positive_number(environ, "CERISE_HEALTH_CONTACT_SECONDS", CONTACT_SECONDS)


def restart_delay(failures: int) -> float:
    """Seconds before starting a task again after `failures` deaths in a row."""
    return retry_delay(failures, FIRST_RESTART)


async def supervise(name: str, run: Callable[[], Awaitable[None]], health: Health) -> None:
    """Run `run()` until cancelled; each time it ends otherwise, log why and start it again
    after a back-off, marking it dead in `health` meanwhile."""
    failures = 0
    while True:
        began = health.clock()
        try:
            await run()
            error: Exception = RuntimeError("it ended")
        except Exception as raised:  # cancelling is a BaseException and ends supervision
            error = raised
        failures = 1 if health.clock() - began > STEADY else failures + 1
        delay = restart_delay(failures)
        health.died(name, error)
        logger.error("background task %s died; starting it again in %g s", name, delay,
                     exc_info=error)
        await asyncio.sleep(delay)
        health.running(name)


async def keep_in_touch(http: httpx.AsyncClient, health: Health) -> None:
    """Ask the API server for its version whenever it has been silent for `PING_SECONDS`
    (or a third of the bound)."""
    interval = min(PING_SECONDS, health.bound / 3)
    reached = True
    while True:
        if health.silence() >= interval:
            try:
                await contact.server_version(http)
            except httpx.HTTPError as error:
                if reached:
                    logger.warning("the Kubernetes API does not answer: %s", error)
                reached = False
            else:
                if not reached:
                    logger.info("the Kubernetes API answers again")
                reached = True
                health.contact()
        await asyncio.sleep(max(0.1, interval - health.silence()) if reached
                            else interval / 5)
