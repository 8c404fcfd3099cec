"""Polling a resource's remote jobs: ONE status command for its batch jobs, ONE for pilot
mode's runs and allocations, then each job's decision (`cerise.model.decisions.after_poll`)
carried out with one status write per job: its transition, with the steps its log shows,
or those steps alone; or a preemption the scheduler requeued its run after
(`cerise.model.preemption`), with its Event.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import replace

from cerise.kube import jobs as kube_jobs
from cerise.model import decisions, preemption, retries, states
from cerise.model import pilot as pilot_decisions
from cerise.model.decisions import Decision, Move
from cerise.model.states import Phase
from cerise.operator import joblog, metrics
from cerise.operator.allocations import is_pilot_run
from cerise.operator.context import Body, ResourceContext, key_of
from cerise.operator.resource_status import ResourceStatus
from cerise.operator.runner_log import RunnerLog
from cerise.remote import executor
from cerise.remote.pilot.requeue import RequeueOutcome
from cerise.remote.pilot.status import RunSighting, RunVerdict
from cerise.remote.schedulers import JobRef, Observation


def job_ref(context: ResourceContext, body: Body) -> JobRef:
    """The job as the scheduler plug-ins know it."""
    return JobRef(key_of(body), context.files(body),
                  (body.get("status") or {}).get("remoteJobId") or "")


async def cancel(context: ResourceContext, refs: Sequence[JobRef]) -> None:
    """Stop jobs on the compute resource: batch jobs through the scheduler (one command),
    pilot runs through their queue and agents."""
    batch = [ref for ref in refs if not is_pilot_run(ref.remote_id)]
    if batch:
        with metrics.scheduler_command(context.namespace, context.name, "cancel"):
            await executor.cancel(context.remote, context.scheduler, batch, context.prologue)
    runs = [ref for ref in refs if is_pilot_run(ref.remote_id)]
    if runs and context.pilot is not None:
        await context.pilot.cancel(runs)


class Polling:
    """Polls one resource's remote jobs."""

    def __init__(self, context: ResourceContext, status: ResourceStatus,
                 log: RunnerLog) -> None:
        self.context, self.status, self.log = context, status, log

    async def poll(self, bodies: list[Body]) -> None:
        """Observe every remote job (and pilot mode's allocations), then decide for each."""
        context = self.context
        refs = [job_ref(context, body) for body in bodies]
        batch = [ref for ref in refs if not is_pilot_run(ref.remote_id)]
        observed: dict[str, Observation] = {}
        if batch:
            with metrics.scheduler_command(context.namespace, context.name, "status"):
                observed = await executor.poll(context.remote, context.scheduler, batch,
                                               context.prologue)
        lost: dict[str, RunSighting] = {}
        if context.pilot is not None:
            status = await context.pilot.poll([ref for ref in refs
                                               if is_pilot_run(ref.remote_id)])
            for key, run in status.runs.items():
                observed[key] = run.observation
                if run.verdict is RunVerdict.REQUEUE:
                    lost[key] = run
            await context.pilot.follow(status)
        await self.status.report(connected=True)
        now = time.time()
        decided: list[tuple[Body, Phase, JobRef, Decision]] = []
        for body, ref in zip(bodies, refs, strict=True):
            phase = kube_jobs.phase_of(body)
            assert phase is not None
            if ref.key in lost and phase not in states.CANCELLING:
                await self._requeue_lost_run(body, phase, ref, lost[ref.key])
                continue
            tracking = context.tracked(body)
            decision = decisions.after_poll(
                phase, observed[ref.key], tracking.memory, now=now, refresh=context.spec.refresh,
                time_limit=int(body["status"].get("timeLimit") or body["spec"].get("timeLimit")
                               or 0),
                run=None if is_pilot_run(ref.remote_id) else self._run(body))
            tracking.memory = decision.memory
            decided.append((body, phase, ref, decision))
        await asyncio.gather(*(self._carry_out(body, phase, decision, observed[ref.key])
                               for body, phase, ref, decision in decided))
        await cancel(context, [ref for _, _, ref, decision in decided if decision.cancel_remote])

    def _run(self, body: Body) -> retries.Run:
        """The job's current attempt, under the resource's retry policy and the job's own."""
        spec = self.context.spec
        policy = retries.for_job(spec.retry, body["spec"].get("retry"), max_time=spec.max_time,
                                 memory_per_node=spec.memory_per_node)
        return retries.current_run(policy, body["status"])

    async def _carry_out(self, body: Body, phase: Phase, decision: Decision,
                         seen: Observation) -> None:
        """One job's decision, in one status write: the transition, with the steps its log
        shows and what it says of a preemption (or those alone)."""
        transitions = self.context.transitions
        change = preemption.after_poll(body.get("status") or {}, seen, now=kube_jobs.now())
        if change is not None and decision.move is None:
            await self._follow_preemption(body, change)
            return
        if change is not None and decision.move is not None:  # the transition says it all
            move = decision.move
            decision = replace(decision, move=replace(move, fields={**change.fields,
                                                                    **move.fields}))
        if not decision.follow_log:
            if decision.move is not None and await transitions.change_phase(
                    body, phase, decision.move.target, decision.move.message,
                    decision.move.fields) and decision.move.target is Phase.STAGING_IN:
                # Submitted again: the next attempt's runner log starts afresh.
                self.context.tracked(body).log_offset = 0
                await joblog.runner_output(self.context.exchange.log_path(key_of(body)), "", 0)
            return
        lines = await self.log.read(body, seen.log_size)
        if decision.move is not None:
            move = decision.move
            written = await transitions.change_phase(body, phase, move.target, move.message,
                                                     {**move.fields, **lines.fields()}) is not None
        else:
            written = bool(lines.steps is not None
                           and await transitions.observe(body, lines.fields()))
        await self.log.commit(body, lines, written=written)

    async def _follow_preemption(self, body: Body, change: preemption.Preemption) -> None:
        """Write what the job's status must say of a preemption of its run (a newly seen
        one also has its Event, and the rerun's log starts afresh)."""
        if change.message is None:
            await self.context.transitions.observe(body, change.fields)
            return
        self.context.tracked(body).log_offset = 0
        await joblog.runner_output(self.context.exchange.log_path(key_of(body)), "", 0)
        await self.context.transitions.record_message(body, change.message,
                                                      reason=preemption.REASON,
                                                      fields=change.fields)

    async def _requeue_lost_run(self, body: Body, phase: Phase, ref: JobRef,
                                run: RunSighting) -> None:
        """A pilot run whose allocation ended under it: into the queue again, or given up."""
        context = self.context
        assert context.pilot is not None and context.spec.pilot is not None
        ticket = run.ticket
        answer = pilot_decisions.after_lost(context.spec.pilot, ticket.attempt, ticket.died_in,
                                            ticket.allocation)
        if isinstance(answer, Move):
            await context.transitions.change_phase(body, phase, answer.target, answer.message,
                                                   answer.fields)
            return
        result = await context.pilot.requeue(ref.files, ticket.allocation)
        if result.outcome is not RequeueOutcome.REQUEUED:
            return  # still held, or already done: the next refresh looks again
        context.tracked(body).log_offset = 0  # the new attempt's log starts afresh
        await joblog.runner_output(context.exchange.log_path(ref.key), "", 0)
        await context.transitions.record_message(
            body, f"allocation {ticket.allocation} ended before the run did; it runs again "
            f"(attempt {result.attempt} of {context.spec.pilot.max_attempts})",
            reason="Requeued")
