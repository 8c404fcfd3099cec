"""Delivering the callbacks of a resource's ended jobs (`cerise.model.callbacks`).

Level-triggered, from the resource's worker: at each tick, every ended job whose
``status.callback`` is neither delivered nor given up, and is due, gets one attempt in a
background task (at most one per job, `TASKS` per resource). Since it is decided from the
status, delivery carries on after a restart, and with several operator replicas only the
one running the resource's worker sends. The POST goes through `cerise.remote.web`, behind
the resource's web fence. The signing key is read from the namespace's Secret at each
attempt (so a new key counts at once) and never leaves this module.

Settings, from the operator's environment (`schedule`): `FIRST_VARIABLE`,
`LONGEST_VARIABLE` and `GIVE_UP_VARIABLE`, in seconds.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable, Mapping
from typing import cast

import kopf

from cerise.kube import jobs as kube_jobs
from cerise.kube import objects
from cerise.model import callbacks, states
from cerise.model.callbacks import Outcome, Schedule
from cerise.operator.context import Body, ResourceContext, key_of
from cerise.operator.retention import positive_number
from cerise.remote import web

logger = logging.getLogger(__name__)

TASKS = 8
"""Most callbacks of one resource under way at once."""
TIMEOUT = 30.0
"""Seconds one attempt may take."""
FIRST_VARIABLE = "CERISE_CALLBACK_FIRST_RETRY_SECONDS"
LONGEST_VARIABLE = "CERISE_CALLBACK_MAX_RETRY_SECONDS"
GIVE_UP_VARIABLE = "CERISE_CALLBACK_GIVE_UP_SECONDS"


def schedule(environ: Mapping[str, str]) -> Schedule:
    """The retry schedule from the operator's environment; ValueError names a bad value."""
    default = Schedule()
    return Schedule(first=positive_number(environ, FIRST_VARIABLE, default.first),
                    longest=positive_number(environ, LONGEST_VARIABLE, default.longest),
                    give_up=positive_number(environ, GIVE_UP_VARIABLE, default.give_up))


class Callbacks:
    """The callbacks of one resource's ended jobs."""

    def __init__(self, context: ResourceContext, plan: Schedule) -> None:
        self.context, self.plan = context, plan
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._wakes: dict[str, float] = {}
        """When the worker was asked to wake for a job's next try (not to ask again)."""

    def start(self, jobs: Iterable[Body]) -> None:
        """Start an attempt for every ended job whose callback is due; have the worker wake
        when the next falls due."""
        now = time.time()
        seen: set[str] = set()
        for body in jobs:
            key = key_of(body)
            seen.add(key)
            if kube_jobs.phase_of(body) not in states.FINAL or key in self._tasks:
                continue
            step = callbacks.next_step(body, self.plan, now)
            if isinstance(step, callbacks.Wait):
                if self._wakes.get(key) != step.at:
                    self._wakes[key] = step.at
                    self.context.wake_in(step.at - now)
            elif step is not None and len(self._tasks) < TASKS:
                self._wakes.pop(key, None)
                task = asyncio.create_task(self._attempt(body), name=f"callback-{key}")
                self._tasks[key] = task
                task.add_done_callback(lambda _, key=key: self._done(key))  # type: ignore[misc]
        for key in self._wakes.keys() - seen:
            del self._wakes[key]

    def _done(self, key: str) -> None:
        self._tasks.pop(key, None)
        self.context.wake.set()

    async def close(self) -> None:
        """Stop the attempts under way (they are made again by whoever runs next)."""
        for task in self._tasks.values():
            task.cancel()
        await asyncio.gather(*self._tasks.values(), return_exceptions=True)

    async def _attempt(self, body: Body) -> None:
        """POST the job's summary once; record how it went."""
        status = body.get("status") or {}
        url = callbacks.callback_url(body) or ""
        problem = callbacks.url_problem(url)
        try:
            if problem is not None:
                await self._record(body, callbacks.refused(status, problem, time.time()))
                return
            outcome = await self._post(body, url)
            await self._record(body, callbacks.after_attempt(status, outcome, self.plan,
                                                             time.time()))
        except Exception:  # the next tick tries again; the worker must not stop
            logger.exception("job %s: callback failed", key_of(body))

    async def _post(self, body: Body, url: str) -> Outcome:
        namespace = body["metadata"]["namespace"]
        try:
            secret = await objects.optional_secret_data(self.context.kube, namespace,
                                                        callbacks.KEY_SECRET)
        except objects.SecretUnavailable as error:
            return Outcome(f"the signing key was not read: {error}")
        key = None if secret is None else secret.get(callbacks.KEY_FIELD, "").encode()
        if key is not None and not key:
            return Outcome(f"Secret {callbacks.KEY_SECRET} has no {callbacks.KEY_FIELD!r} key")
        payload = callbacks.summary(body)
        headers = callbacks.headers(key_of(body), payload, key, int(time.time()))
        try:
            answer = await web.post(url, payload, headers, fence=self.context.web_inputs.fence,
                                    timeout=TIMEOUT)
        except web.Refused as error:  # the URL is in the spec: the reason alone fits the status
            return Outcome(str(error).removeprefix(f"{url}: "), final=True)
        except web.FetchFailed as error:
            return Outcome(str(error).removeprefix(f"{url}: "))
        if 200 <= answer < 300:
            return Outcome(f"HTTP {answer}", delivered=True)
        return Outcome(f"HTTP {answer}")

    async def _record(self, body: Body, fields: dict[str, object]) -> None:
        """Write the attempt into ``status.callback``; an Event when it is done."""
        if not await self.context.transitions.observe(body, {"callback": fields}):
            return
        if "delivered" in fields:
            kopf.event(cast(kopf.Body, body), type="Normal", reason="CallbackDelivered",
                       message=f"callback delivered ({fields['lastResult']}) after "
                               f"{fields['attempts']} attempt(s)")
        elif "gaveUp" in fields:
            kopf.event(cast(kopf.Body, body), type="Warning", reason="CallbackGaveUp",
                       message=f"callback given up after {fields['attempts']} attempt(s): "
                               f"{fields['lastResult']}")
