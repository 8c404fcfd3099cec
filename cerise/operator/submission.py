"""Submitting a staged job, exactly once, within the resource's submit caps.

A job in `StagingIn` whose inputs are on the resource is submitted through the
exactly-once submit script (`cerise.remote.jobscript`; after a submit that failed, the job
is first looked for by its name, `cerise.remote.executor.search`), or handed to pilot
mode's queue. A job over the resource's cap (`cerise.model.submissions`) waits, staged,
saying why, and is not looked at again until the cap has room. What follows a submit is
`cerise.model.decisions.after_submit`'s answer; a cancel that arrived during staging is
settled by what the job's directory says (`after_cancelled_staging`). A job back in
`StagingIn` for another attempt (`cerise.model.retries`) asks for the time limit and memory
its status gives that attempt, and is submitted with that attempt's files.
"""

from __future__ import annotations

import time
from dataclasses import replace

from cerise.kube import jobs as kube_jobs
from cerise.model import compute, decisions, retries, states
from cerise.model.states import Phase
from cerise.operator import metrics
from cerise.operator.context import Body, ResourceContext, key_of
from cerise.remote import executor
from cerise.remote.jobscript import JobFiles, SubmitResult
from cerise.remote.schedulers import Request


class Submission:
    """Submits one resource's staged jobs."""

    def __init__(self, context: ResourceContext) -> None:
        self.context = context
        self._in_flight = 0
        """Submits under way (their jobs are not yet `Waiting`)."""

    def _queued(self) -> int:
        """This resource's jobs in the scheduler now, and those being submitted."""
        return sum(kube_jobs.phase_of(body) in states.REMOTE
                   for body in self.context.jobs()) + self._in_flight

    async def submit(self, body: Body, files: JobFiles, request: Request) -> None:
        """Submit a staged job in `StagingIn` (or have it wait for the cap), then move it."""
        context = self.context
        request = this_attempt(body, request)
        runner = compute.runner_argv(context.spec, context.remote.username)
        if context.pilot is not None:  # handed to the pilot queue: no batch job, no cap
            submitted = await executor.submit(context.remote, context.pilot.queue, files,
                                              request, runner, context.prologue)
            await self._after_submit(body, files, submitted, request)
            return
        now = time.monotonic()
        refusal = context.budget.refusal(now, self._queued())
        if refusal is not None:
            delay = context.budget.next_room(now) or context.spec.refresh
            context.tracked(body).resume_at = now + delay
            context.wake_in(delay)
            await context.transitions.record_message(body, refusal, reason="SubmitDeferred")
            return
        context.budget.record(now)
        self._in_flight += 1
        try:
            with metrics.scheduler_command(context.namespace, context.name, "submit"):
                submitted = await executor.submit(context.remote, context.scheduler, files,
                                                  request, runner, context.prologue)
        finally:
            self._in_flight -= 1
        await self._after_submit(body, files, submitted, request)

    async def _after_submit(self, body: Body, files: JobFiles, submitted: SubmitResult,
                            request: Request) -> None:
        move = decisions.after_submit(submitted.outcome, submitted.detail, submitted.remote_id,
                                      files.job_dir, kube_jobs.now(), request.time_limit,
                                      request.memory)
        if move is None:
            await self.context.transitions.record_message(
                body, f"submitting failed; trying again: {submitted.detail}", reason="Retrying")
            return
        await self.context.transitions.carry_out(body, Phase.STAGING_IN, move)

    async def settle_cancelled(self, body: Body, files: JobFiles) -> None:
        """A cancel arrived during staging: was the job submitted (before a crash, or by a
        submit that failed late) or not?"""
        context = self.context
        scheduler = context.pilot.queue if context.pilot is not None else context.scheduler
        found = await executor.submission(context.remote, scheduler, files,
                                          context.request(body), context.prologue)
        move = decisions.after_cancelled_staging(found.outcome, found.detail,
                                                 found.remote_id, files.job_dir)
        if move is not None:
            await context.transitions.change_phase(body, Phase.STAGING_IN_CR, move.target,
                                                   move.message, move.fields)


def this_attempt(body: Body, request: Request) -> Request:
    """`request` as the job's current attempt asks it: a retry's name is its own, and its
    time limit and memory are in its status."""
    status = body.get("status") or {}
    attempt = int(status.get("attempt") or 1)
    if attempt <= 1:
        return request
    return replace(request, name=retries.run_name(key_of(body), attempt),
                   time_limit=int(status.get("timeLimit") or request.time_limit),
                   memory=int(status.get("memory") or request.memory))
