"""One worker per ComputeResource: drives all of that resource's jobs.

Level-triggered: every tick looks at each job's current phase and does the next piece of
work, so an operator restarted at any instruction simply carries on:

* Specialisation projects → installed in the background (`installer`); new jobs whose
  workflow uses a project being installed stay `Submitted`, saying so in `status.message`.
* `Submitted` → validate (nothing touches the remote side before) → `StagingIn`, or
  `PermanentFailure` with the reason.
* `StagingIn` → stage (idempotent) → submit (exactly once, see `jobscript`) → `Waiting`.
* remote phases → ONE status command per tick for all of them → `Running`, `Finished`.
* `Finished` → `StagingOut` → destage (idempotent) → the final phase.
* a cancel request → its `CR` phase; `CR` phases are cancelled on the scheduler (resent
  now and then until the job is gone) and end in `Cancelled`.

What to do next for a job is decided by the pure functions of `cerise.model.decisions`;
this module gathers their facts and carries out their answers. Staging in and out run as
background tasks, at most one per job, so a slow upload never holds up polling. Every
phase change is a compare-and-swap (`cerise.operator.transitions`); a worker that loses
one re-reads the job and decides again on the next tick. An error in a job's work ends
the job as `FAILURES` says, or is retried.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import kopf
from lightkube import ApiError, AsyncClient

from cerise.kube import jobs as kube_jobs
from cerise.kube import objects
from cerise.model import compute, cwl, decisions, limits, results, specialisation, states, steps
from cerise.model import pilot as pilot_decisions
from cerise.model.compute import ResourceSpec
from cerise.model.decisions import Decision, Memory, Move, Work
from cerise.model.exchange import Exchange
from cerise.model.specialisation import StepUse
from cerise.model.states import Phase
from cerise.model.steps import Step
from cerise.model.submissions import SubmitBudget
from cerise.operator import joblog, metrics
from cerise.operator.allocations import Allocations, is_pilot_run
from cerise.operator.installer import Installer
from cerise.operator.progress import ProgressWriter
from cerise.operator.specialisations import Specialisations
from cerise.operator.transitions import Transitions
from cerise.operator.workflows import JobInput, load_job, workflow_text
from cerise.remote import executor, installed, jobscript, staging
from cerise.remote.failures import CommandTimedOut, RemoteUnavailable
from cerise.remote.jobscript import JobFiles
from cerise.remote.pilot import executor as pilot_executor
from cerise.remote.pilot.requeue import RequeueOutcome
from cerise.remote.pilot.status import RunSighting, RunVerdict
from cerise.remote.protocol import Remote
from cerise.remote.schedulers import JobRef, Observation, RemoteState, Request, Scheduler

logger = logging.getLogger(__name__)

ATTEMPTS = 3
"""Tries at staging a job in or out before an I/O error makes it a SystemError."""
COALESCE = 0.05
"""Seconds a wake-up waits for more changes before the tick (10,000 jobs changing at once
would otherwise be 10,000 ticks)."""
LOG_CHUNK = 64 << 10
STATUS_INTERVAL = 30.0
"""Most often the resource's `lastPoll` is written (etcd is not a heartbeat store)."""

Body = dict[str, Any]


def _key(body: Body) -> str:
    return str(body["metadata"]["uid"])


RETRY = None
"""In `FAILURES`: not the job's fault nor final; its work is tried again on a later tick."""

FAILURES: tuple[tuple[type[BaseException], Phase | None, int], ...] = (
    (RemoteUnavailable, RETRY, 0),  # the connection backs off by itself
    (CommandTimedOut, RETRY, 0),
    (staging.InputRejected, Phase.PERMANENT_FAILURE, 1),
    (cwl.InvalidWorkflow, Phase.PERMANENT_FAILURE, 1),
    (staging.OutputRejected, Phase.SYSTEM_ERROR, 1),
    (OSError, Phase.SYSTEM_ERROR, ATTEMPTS),  # a download or a disk hiccup: try again
    (Exception, Phase.SYSTEM_ERROR, 1),
)
"""What an error in a job's work does to it: (error type, the phase it ends the job in, the
errors in a row that takes); the first entry whose type matches applies."""


@dataclass
class _Tracking:
    """What the worker remembers of a remote job between ticks (lost on restart: harmless)."""

    memory: Memory = field(default_factory=Memory)
    """What the decisions keep (`cerise.model.decisions`)."""
    log_offset: int | None = None
    failures: int = 0
    """Failed staging attempts (I/O errors) in a row."""
    steps: list[Step] | None = None
    """The job's `status.steps` as its log says."""
    steps_unwritten: bool = False
    """Whether `steps` has changed since it was last written."""
    projects: dict[str, StepUse] | None = None
    """The projects the job's workflow uses (read only when it matters)."""
    request: Request | None = None
    """What the job asks of the scheduler, once it is staged."""


class ResourceChanged(Exception):
    """The ComputeResource's spec changed: its worker must start again with the new one."""


class ResourceWorker:
    """Drives the jobs of one ComputeResource over its one connection."""

    def __init__(
        self,
        *,
        namespace: str,
        name: str,
        spec: ResourceSpec,
        remote: Remote,
        scheduler: Scheduler,
        kube: AsyncClient,
        exchange: Exchange,
        jobs: Callable[[], list[Body]],
        remember: Callable[[Body], None],
        specialisations: Specialisations,
        generation: Callable[[], int | None] = lambda: None,
        uid: str = "",
    ) -> None:
        self.namespace, self.name, self.spec = namespace, name, spec
        self._resource: Body = {
            "apiVersion": f"{kube_jobs.GROUP}/{kube_jobs.VERSION}", "kind": "ComputeResource",
            "metadata": {"namespace": namespace, "name": name, "uid": uid}}
        """What Events about the resource are about."""
        self._generation = generation
        self.observed_generation = generation()
        """The ComputeResource's spec generation this worker runs with."""
        self.remote, self.scheduler, self.kube, self.exchange = remote, scheduler, kube, exchange
        self._jobs, self._remember = jobs, remember
        self.wake = asyncio.Event()
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._tracking: dict[str, _Tracking] = {}
        self._installed: Mapping[str, str] | None = None
        self.web_inputs = compute.web_inputs(spec, os.environ)
        self.input_cache = (staging.InputCache(self.base, spec.cache_max_bytes)
                            if spec.cache_max_bytes else None)
        self._prologue = compute.prologue(spec.environment)
        self.transitions = Transitions(kube, remember=remember,
                                       log_path=lambda body: exchange.log_path(_key(body)),
                                       changed=self.wake.set)
        self.budget = SubmitBudget(spec.submit_limits)
        self._submitting = 0
        """Submits under way (their jobs are not yet `Waiting`)."""
        self.pilot = None if spec.pilot is None else Allocations(
            namespace=namespace, resource=name, spec=spec.pilot, remote=remote,
            scheduler=scheduler, base=self.base, prologue=self._prologue, budget=self.budget)
        """Pilot mode's allocations, when it is on: runs go to their queue, not the scheduler."""
        self._status: tuple[dict[str, Any], dict[str, Any]] | None = None
        """The resource's health and pilot fields as last written."""
        self._status_written = 0.0
        self._polled_at = float("-inf")
        """When the remote jobs were last polled (monotonic seconds)."""
        self._polling = False
        """Whether the last tick found jobs (or allocations) on the resource to poll."""
        self._ready_since = ""
        self.installer = Installer(
            namespace=namespace, resource=name, remote=remote, api=f"{self.base}/api",
            prologue=self._prologue, kube=kube, specialisations=specialisations,
            on_change=self._projects_changed, fence=self.web_inputs.fence)

    # --- paths -----------------------------------------------------------------------------

    @property
    def base(self) -> str:
        return compute.base_path(self.spec, self.remote.username)

    def files(self, body: Body) -> JobFiles:
        return JobFiles(f"{self.base}/jobs/{_key(body)}")

    # --- the loop --------------------------------------------------------------------------

    async def run(self, stopped: kopf.DaemonStopped) -> None:
        """Tick when a job changes, and when the next poll is due, until stopped, or until
        the ComputeResource's spec changes (ResourceChanged: a new worker takes over)."""
        try:
            await self._probe()
            while not stopped:
                due = self._polled_at + self.spec.refresh - time.monotonic()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.wake.wait(),
                                           max(0.0, due) if self._polling else self.spec.refresh)
                if self.wake.is_set():  # one tick for a burst of changes, not one for each
                    await asyncio.sleep(COALESCE)
                self.wake.clear()
                if self._generation() != self.observed_generation:
                    raise ResourceChanged(f"the ComputeResource changed (generation "
                                          f"{self._generation()}); restarting its worker")
                await self.tick()
        finally:
            for task in self._tasks.values():
                task.cancel()
            await asyncio.gather(*self._tasks.values(), return_exceptions=True)
            await self.installer.close()
            await self.remote.close()

    async def tick(self) -> None:
        """Install what is wanted; advance every job one step; poll the remote ones with
        one command."""
        try:
            await self.installer.tick()
        except Exception:  # a fault in installing must not stop the jobs
            logger.exception("resource %s/%s: installing projects failed", self.namespace,
                             self.name)
        remote_jobs: list[Body] = []
        for body in self._jobs():
            phase = kube_jobs.phase_of(body)
            decision = decisions.next_work(
                phase, cancel=bool(body["spec"].get("cancel")),
                deleting=bool(body["metadata"].get("deletionTimestamp")))
            if decision.move is not None and phase is not None:
                await self.move(body, phase, decision.move)
            elif decision.work is Work.STAGE_IN:
                self._spawn(body, self._stage_in)
            elif decision.work is Work.STAGE_OUT:
                self._spawn(body, self._stage_out)
            elif decision.work is Work.POLL:
                remote_jobs.append(body)
        self._polling = bool(remote_jobs) or (self.pilot is not None and bool(self.pilot.known))
        # At most one poll a refresh: the many changes of many jobs wake the worker far
        # more often than that.
        if self._polling and time.monotonic() - self._polled_at >= self.spec.refresh:
            self._polled_at = time.monotonic()
            try:
                await self._poll(remote_jobs)
            except (RemoteUnavailable, CommandTimedOut) as error:
                await self._report(connected=False, error=str(error))
            except executor.RemoteCommandFailed as error:  # the scheduler did not answer
                await self._report(connected=True, error=str(error),
                                   reason="SchedulerUnavailable")

    def _spawn(self, body: Body, work: Callable[[Body], Coroutine[Any, Any, None]]) -> None:
        key = _key(body)
        if key in self._tasks:
            return
        task = asyncio.create_task(self._guarded(body, work), name=f"job-{key}")
        self._tasks[key] = task
        task.add_done_callback(lambda _: self._done(key))

    def _done(self, key: str) -> None:
        self._tasks.pop(key, None)
        self.wake.set()

    async def _guarded(self, body: Body, work: Callable[[Body], Coroutine[Any, Any, None]]) -> None:
        """Run a job's work; an error in it ends the job, or not, as `FAILURES` says."""
        tracking = self._tracking.setdefault(_key(body), _Tracking())
        try:
            await work(body)
        except asyncio.CancelledError:
            raise
        except Exception as error:
            target, attempts = next((phase, attempts) for kind, phase, attempts in FAILURES
                                    if isinstance(error, kind))
            if target is RETRY:
                await self._report(connected=False, error=str(error))
                return
            tracking.failures += 1
            if tracking.failures < attempts:
                logger.warning("job %s: %s (attempt %d of %d)", _key(body), error,
                               tracking.failures, attempts)
                return
            await self._fail(body, target, _failure_message(error, attempts))
            if isinstance(error, (staging.InputRejected, cwl.InvalidWorkflow)):
                metrics.validation_failed(self.namespace, self.name)
        else:
            tracking.failures = 0

    async def _fail(self, body: Body, target: Phase, message: str) -> None:
        """End the job in `target` (or SystemError, where `target` is not allowed now)."""
        current = self.current(body)
        phase = kube_jobs.phase_of(current)
        if phase is None:
            return
        if not states.is_legal(phase, target):
            target = Phase.SYSTEM_ERROR
        if states.is_legal(phase, target):
            staging_out = phase in (Phase.STAGING_OUT, Phase.STAGING_OUT_CR)
            fields: dict[str, Any] = {"output": {}} if staging_out else {}
            await self.move(current, phase, Move(target, message, fields))

    def current(self, body: Body) -> Body:
        """The newest copy of a job this worker has."""
        key = _key(body)
        return next((b for b in self._jobs() if _key(b) == key), body)

    # --- transitions -----------------------------------------------------------------------

    async def move(self, body: Body, source: Phase, move: Move) -> Body | None:
        """CAS `source` → `move.target`; the new body, or None if another writer got there
        first."""
        return await self.transitions.move(body, source, move.target, move.message, move.fields)

    # --- staging in and submitting ---------------------------------------------------------

    def _projects_changed(self) -> None:
        self._installed = None
        self.wake.set()

    async def installed_steps(self, refresh: bool = False) -> Mapping[str, str]:
        """The files of the installed steps (`<project>/<path>.cwl` and what they import)
        → their text."""
        if self._installed is None or refresh:
            self._installed = await installed.step_documents(self.remote, f"{self.base}/api")
        return self._installed

    async def _load(self, body: Body) -> JobInput:
        try:
            return await load_job(body["spec"], self.exchange, await self.installed_steps(),
                                  self.web_inputs.fence)
        except cwl.InvalidWorkflow:
            # A step may have been installed since we last looked.
            return await load_job(body["spec"], self.exchange,
                                  await self.installed_steps(refresh=True), self.web_inputs.fence)

    async def _stage_in(self, body: Body) -> None:
        phase = kube_jobs.phase_of(body)
        job: JobInput | None = None
        if phase is Phase.SUBMITTED:
            if await self._waits_for_projects(body):
                return
            try:
                job = await self._load(body)
                staging.plan(job.references, self.exchange, self.files(body),
                             workflow_url=job.workflow_url)
                request = _request(body, job)
            except cwl.InvalidWorkflow as error:
                if await self.move(body, phase, Move(Phase.PERMANENT_FAILURE,
                                                     await self._explained(body, error))):
                    metrics.validation_failed(self.namespace, self.name)
                return
            refusal = limits.request_refusal(self.spec, request.cores, request.time_limit)
            if refusal is None and self.spec.pilot is not None:
                refusal = pilot_decisions.refusal(self.spec.pilot, request.cores,
                                                  request.time_limit)
            if refusal is not None:  # the resource can never give what the job asks
                await self.move(body, phase, Move(Phase.PERMANENT_FAILURE, refusal))
                return
            moved = await self.move(body, phase, Move(Phase.STAGING_IN, "staging inputs"))
            if moved is None:
                return
            body, phase = moved, Phase.STAGING_IN
        files = self.files(body)
        if phase is Phase.STAGING_IN_CR:
            await self._settle_cancelled_staging(body, files)
            return
        if phase is not Phase.STAGING_IN:
            return
        tracking = self._tracking.setdefault(_key(body), _Tracking())
        if tracking.request is None:  # staged already when only the submit had to wait
            tracking.request = await self._stage(body, files, job or await self._load(body))
        latest = self.current(body)
        if kube_jobs.phase_of(latest) is not Phase.STAGING_IN or latest["spec"].get("cancel"):
            self.wake.set()  # cancelled or deleted meanwhile: the next tick settles it
            return
        runner = compute.runner_argv(self.spec, self.remote.username)
        if self.pilot is not None:  # handed to the pilot queue: no batch job, no cap
            submitted = await executor.submit(self.remote, self.pilot.queue, files,
                                              tracking.request, runner, self._prologue)
            await self._after_submit(latest, files, submitted, tracking.request.time_limit)
            return
        now = time.monotonic()
        refusal = self.budget.refusal(now, self._queued() + self._submitting)
        if refusal is not None:
            await self._note(latest, refusal, reason="SubmitDeferred")
            asyncio.get_running_loop().call_later(self.budget.next_room(now) or self.spec.refresh,
                                                  self.wake.set)
            return
        self.budget.record(now)
        self._submitting += 1
        try:
            with metrics.scheduler_command(self.namespace, self.name, "submit"):
                submitted = await executor.submit(self.remote, self.scheduler, files,
                                                  tracking.request, runner, self._prologue)
        finally:
            self._submitting -= 1
        await self._after_submit(latest, files, submitted, tracking.request.time_limit)

    async def _stage(self, body: Body, files: JobFiles, job: JobInput) -> Request:
        """Send the job's inputs, workflow and input object; what it asks of the scheduler."""
        plan = staging.plan(job.references, self.exchange, files, workflow_url=job.workflow_url)
        meta = body["metadata"]
        started = time.monotonic()
        async with ProgressWriter(self.kube, namespace=meta["namespace"], name=meta["name"],
                                  direction="in", written=self._remember) as progress:
            report = await staging.stage_in(self.remote, files, plan.transfers, self.exchange,
                                            web_inputs=self.web_inputs, cache=self.input_cache,
                                            progress=progress)
        metrics.staging(self.namespace, self.name, "in", report.bytes_sent,
                        time.monotonic() - started)
        translated = cwl.translate_workflow(job.workflow, api_base=f"{self.base}/api")
        document = plan.apply(translated, cwl.Origin.WORKFLOW)
        inputs = plan.apply(job.input_object, cwl.Origin.INPUT_OBJECT)
        await self.remote.write(files.workflow, cwl.to_json(document).encode())
        await self.remote.write(files.input, cwl.to_json(inputs).encode())
        return _request(body, job)

    def _queued(self) -> int:
        """This resource's jobs in the scheduler now."""
        return sum(kube_jobs.phase_of(body) in states.REMOTE for body in self._jobs())

    async def _projects_used(self, body: Body) -> dict[str, StepUse]:
        tracking = self._tracking.setdefault(_key(body), _Tracking())
        if tracking.projects is None:
            try:
                text = await workflow_text(body["spec"].get("workflow") or "", self.exchange,
                                           self.web_inputs.fence)
            except cwl.InvalidWorkflow:
                text = ""
            tracking.projects = specialisation.projects_used(text)
        return tracking.projects

    async def _waits_for_projects(self, body: Body) -> bool:
        """Hold a new job while a project its workflow uses is being installed."""
        waiting = self.installer.waiting()
        if not waiting:
            return False
        held = {p: waiting[p] for p in await self._projects_used(body) if p in waiting}
        if not held:
            return False
        await self._note(body, specialisation.waiting_message(held, self.name),
                         reason="WaitingForProject")
        return True

    async def _note(self, body: Body, message: str, *, reason: str = "Retrying") -> None:
        """Say why a job is held where it is, in its status message, an Event and its log
        (once: not again while the message stays the same)."""
        if body["status"].get("message") == message:
            return
        meta = body["metadata"]
        try:
            new = await kube_jobs.patch_status(self.kube, namespace=meta["namespace"],
                                               name=meta["name"], status={"message": message})
        except ApiError as error:
            logger.warning("job %s: message not written: %s", _key(body), error)
            return
        self._remember(new.to_dict())  # type: ignore[no-untyped-call]
        kopf.event(cast(kopf.Body, body), type="Normal", reason=reason, message=message)
        await joblog.message(self.exchange.log_path(_key(body)), "INFO", message)

    async def _explained(self, body: Body, error: cwl.InvalidWorkflow) -> str:
        """The job's failure message; a step of a project that is not here says why."""
        installed = self.installer.projects()
        for project, use in (await self._projects_used(body)).items():
            if project not in installed:
                return specialisation.missing_project(
                    project, use, installed, self.installer.failures(), self.name)
        return str(error)

    async def _after_submit(
        self, body: Body, files: JobFiles, submitted: jobscript.SubmitResult, time_limit: int
    ) -> None:
        move = decisions.after_submit(submitted.outcome, submitted.detail, submitted.remote_id,
                                      files.job_dir, kube_jobs.now(), time_limit)
        if move is None:
            await self._note(body, f"submitting failed; trying again: {submitted.detail}")
            return
        await self.transitions.carry_out(body, Phase.STAGING_IN, move)

    async def _settle_cancelled_staging(self, body: Body, files: JobFiles) -> None:
        """A cancel arrived during staging: was the job submitted (before a crash) or not?"""
        result = await self.remote.run(jobscript.lookup_script(files))
        found = jobscript.parse_submit(result.exit_status, result.stdout, result.stderr)
        move = decisions.after_cancelled_staging(found.outcome, found.detail,
                                                 found.remote_id, files.job_dir)
        if move is not None:
            await self.move(body, Phase.STAGING_IN_CR, move)

    # --- polling ---------------------------------------------------------------------------

    async def _poll(self, bodies: list[Body]) -> None:
        """ONE status command for the batch jobs, ONE for pilot mode's runs and allocations;
        then every job's decision."""
        refs = [JobRef(_key(b), JobFiles(b["status"].get("workDir") or self.files(b).job_dir),
                       b["status"].get("remoteJobId", "")) for b in bodies]
        batch = [ref for ref in refs if not is_pilot_run(ref.remote_id)]
        observed: dict[str, Observation] = {}
        if batch:
            with metrics.scheduler_command(self.namespace, self.name, "status"):
                observed = await executor.poll(self.remote, self.scheduler, batch,
                                               self._prologue)
        lost: dict[str, RunSighting] = {}
        if self.pilot is not None:
            status = await self.pilot.poll([ref for ref in refs if is_pilot_run(ref.remote_id)])
            for key, run in status.runs.items():
                observed[key] = run.observation
                if run.verdict is RunVerdict.REQUEUE:
                    lost[key] = run
            await self.pilot.follow(status)
        await self._report(connected=True, error="")
        now = time.time()
        decided: list[tuple[Body, JobRef, Decision]] = []
        for body, ref in zip(bodies, refs, strict=True):
            tracking = self._tracking.setdefault(ref.key, _Tracking())
            phase = kube_jobs.phase_of(body)
            assert phase is not None
            if ref.key in lost and phase not in states.CANCELLING:
                await self._lost(body, phase, ref, lost[ref.key])
                continue
            decision = decisions.after_poll(
                phase, observed[ref.key], tracking.memory, now=now, refresh=self.spec.refresh,
                time_limit=int(body["status"].get("timeLimit") or body["spec"].get("timeLimit")
                               or 0))
            tracking.memory = decision.memory
            if decision.move is not None:
                await self.move(body, phase, decision.move)
            decided.append((body, ref, decision))
        to_cancel = [ref for _, ref, decision in decided if decision.cancel_remote]
        await self._cancel(to_cancel)
        await asyncio.gather(*(self._follow_log(body, observed[ref.key].log_size)
                               for body, ref, decision in decided if decision.follow_log))

    async def _cancel(self, refs: Sequence[JobRef]) -> None:
        """Stop jobs on the compute resource: batch jobs through the scheduler, pilot runs
        through their queue and agents."""
        batch = [ref for ref in refs if not is_pilot_run(ref.remote_id)]
        if batch:
            with metrics.scheduler_command(self.namespace, self.name, "cancel"):
                await executor.cancel(self.remote, self.scheduler, batch, self._prologue)
        runs = [ref for ref in refs if is_pilot_run(ref.remote_id)]
        if runs and self.pilot is not None:
            await self.pilot.cancel(runs)

    async def _lost(self, body: Body, phase: Phase, ref: JobRef, run: RunSighting) -> None:
        """A pilot run whose allocation ended under it: into the queue again, or given up."""
        assert self.pilot is not None and self.spec.pilot is not None
        ticket = run.ticket
        answer = pilot_decisions.after_lost(self.spec.pilot, ticket.attempt, ticket.died_in,
                                            ticket.allocation)
        if isinstance(answer, Move):
            await self.move(body, phase, answer)
            return
        result = await self.pilot.requeue(ref.files, ticket.allocation)
        if result.outcome is not RequeueOutcome.REQUEUED:
            return  # still held, or already done: the next refresh looks again
        tracking = self._tracking.setdefault(ref.key, _Tracking())
        tracking.log_offset = 0  # the new attempt's log starts afresh (the old one is kept)
        await joblog.runner_output(self.exchange.log_path(ref.key), "", 0)
        await self._note(body, f"allocation {ticket.allocation} ended before the run did; it "
                         f"runs again (attempt {result.attempt} of "
                         f"{self.spec.pilot.max_attempts})", reason="Requeued")

    async def _follow_log(self, body: Body, size: int | None = None) -> None:
        """Append the runner's new log lines to the job log, and write the steps they start
        or end to the job's `status.steps` (one write at most); with the log's `size` from a
        poll, nothing is read unless it grew."""
        key = _key(body)
        tracking = self._tracking.setdefault(key, _Tracking())
        path = self.exchange.log_path(key)
        if tracking.log_offset is None:
            tracking.log_offset = await joblog.runner_offset(path)
        if tracking.steps is None:
            tracking.steps = list(body["status"].get("steps") or [])
        complete = b""
        if size is None or size > tracking.log_offset:
            data = await self.remote.read(self.files(body).stderr, tracking.log_offset, LOG_CHUNK)
            complete = data[: data.rfind(b"\n") + 1]
        text = complete.decode(errors="replace")
        new = steps.update(tracking.steps, text.splitlines(), kube_jobs.now())
        if new != tracking.steps:
            tracking.steps, tracking.steps_unwritten = new, True
        if tracking.steps_unwritten:
            # Before the job log records the new offset: after a crash in between, the
            # lines are read again, which leaves the steps as they are.
            await self._write_steps(body, tracking)
        if complete:
            tracking.log_offset += len(complete)
            await joblog.runner_output(path, text, tracking.log_offset)

    async def _write_steps(self, body: Body, tracking: _Tracking) -> None:
        """Merge the job's steps into its status; if that fails, the next poll tries again."""
        meta = body["metadata"]
        try:
            new = await kube_jobs.patch_status(self.kube, namespace=meta["namespace"],
                                               name=meta["name"], status={"steps": tracking.steps})
        except ApiError as error:
            logger.warning("job %s: steps not written: %s", _key(body), error)
            return
        tracking.steps_unwritten = False
        self._remember(new.to_dict())  # type: ignore[no-untyped-call]

    # --- staging out -----------------------------------------------------------------------

    async def _stage_out(self, body: Body) -> None:
        phase = kube_jobs.phase_of(body)
        if phase is Phase.FINISHED:
            moved = await self.move(body, phase, Move(Phase.STAGING_OUT, "collecting outputs"))
            if moved is None:
                return
            body, phase = moved, Phase.STAGING_OUT
        if phase not in (Phase.STAGING_OUT, Phase.STAGING_OUT_CR):
            return
        files = JobFiles(body["status"].get("workDir") or self.files(body).job_dir)
        await self._follow_log(body)
        meta = body["metadata"]
        started = time.monotonic()
        async with ProgressWriter(self.kube, namespace=meta["namespace"], name=meta["name"],
                                  direction="out", written=self._remember) as progress:
            output = await staging.stage_out(self.remote, files, self.exchange, _key(body),
                                             progress=progress)
        metrics.staging(self.namespace, self.name, "out", progress.done,
                        time.monotonic() - started)
        if phase is Phase.STAGING_OUT_CR:
            await self.move(body, phase, Move(Phase.CANCELLED, "cancelled; partial outputs kept",
                                              {"output": output}))
            return
        end = self._tracking.get(_key(body), _Tracking()).log_offset or 0
        tail = await self.remote.read(files.stderr, max(0, end - LOG_CHUNK), 2 * LOG_CHUNK)
        log_tail = tail.decode(errors="replace")
        final, message = decisions.finish_message(
            *results.final_phase(body["status"].get("exitCode"), log_tail),
            end_reason=body["status"].get("endReason"), failed_step=steps.failure(log_tail))
        await self.transitions.carry_out(body, phase, Move(final, message, {"output": output}))

    # --- deletion --------------------------------------------------------------------------

    async def delete(self, body: Body) -> None:
        """Stop the job wherever it is and remove its remote directory."""
        key = _key(body)
        task = self._tasks.pop(key, None)
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        files = JobFiles(body.get("status", {}).get("workDir") or self.files(body).job_dir)
        remote_id = body.get("status", {}).get("remoteJobId")
        phase = kube_jobs.phase_of(body)
        ref = JobRef(key, files, remote_id or "")
        scheduler = self.scheduler
        if self.pilot is not None and is_pilot_run(ref.remote_id):
            scheduler = self.pilot.queue
        if remote_id and phase not in states.FINAL:
            await self._cancel([ref])
            for _ in range(50):
                with metrics.scheduler_command(self.namespace, self.name, "status"):
                    observed = await executor.poll(self.remote, scheduler, [ref],
                                                   self._prologue)
                if observed[key].state in (RemoteState.DONE, RemoteState.VANISHED):
                    break
                await asyncio.sleep(0.2)
        if self.pilot is not None and is_pilot_run(ref.remote_id):
            await pilot_executor.forget_runs(self.remote, self.pilot.queue, [ref])
        await executor.remove_job_dir(self.remote, files)
        self._tracking.pop(key, None)

    # --- the resource's own status ---------------------------------------------------------

    async def _probe(self) -> None:
        """Say at once whether the resource answers, and for which generation of its spec."""
        try:
            await self.remote.run("true", timeout=30)
        except (RemoteUnavailable, CommandTimedOut) as error:
            await self._report(connected=False, error=str(error))
            return
        if self.input_cache is not None:
            try:
                await self.input_cache.survey(self.remote)  # lists it, evicts over the limit
            except OSError as error:
                logger.warning("resource %s/%s: input cache not listed: %s",
                               self.namespace, self.name, error)
        await self._report(connected=True, error="")

    async def _report(self, *, connected: bool, error: str, reason: str = "Unreachable") -> None:
        """Write the resource's status (`connected`, `lastError`, its Ready condition, pilot
        mode's allocations) when it changed or has not been written for a while; a change of
        its health is also an Event."""
        ready = connected and not error
        if ready and self.pilot is not None and self.pilot.problem:
            # It answers, but the scheduler refuses pilot mode's allocations.
            ready, error, reason = False, self.pilot.problem, "AllocationRefused"
        health = {"connected": connected, "lastError": error, "ready": ready}
        extra = self.pilot.status_fields() if self.pilot is not None else {}
        now = time.monotonic()
        if (health, extra) == self._status and now - self._status_written < STATUS_INTERVAL:
            return
        previous = self._status[0] if self._status else None
        self._status, self._status_written = (health, extra), now
        status: dict[str, Any] = {"connected": connected, "lastError": error, **extra,
                                  "lastPoll": kube_jobs.now()}
        if self.observed_generation is not None:
            status["observedGeneration"] = self.observed_generation
        if previous is None or previous["ready"] != ready:  # a Ready flip, or the first report
            self._ready_since = status["lastPoll"]
        status["conditions"] = [{
            "type": "Ready", "status": "True" if ready else "False",
            "reason": "Connected" if ready else reason,
            "message": "the compute resource answers" if ready else error[:4096],
            "lastTransitionTime": self._ready_since}]
        if self.input_cache is not None:
            status["inputCache"] = self.input_cache.status_fields()
        if previous != health and (previous is not None or not ready):
            kopf.event(cast(kopf.Body, self._resource), type="Normal" if ready else "Warning",
                       reason="Ready" if ready else reason,
                       message="the compute resource answers again" if ready else error[:1024])
        try:
            await objects.patch_resource_status(self.kube, self.namespace, self.name, status)
        except ApiError as failure:
            logger.warning("resource %s/%s: status not written: %s", self.namespace, self.name,
                           failure)


def _request(body: Body, job: JobInput) -> Request:
    """What a job asks of the scheduler: its workflow's cores, and the time limit of its
    spec or else its workflow's."""
    resources = cwl.required_resources(job.workflow)
    return Request(name=f"cerise-{_key(body)}", cores=resources.cores,
                   time_limit=int(body["spec"].get("timeLimit") or resources.time_limit))


def _failure_message(error: BaseException, attempts: int) -> str:
    if isinstance(error, (staging.InputRejected, staging.OutputRejected, cwl.InvalidWorkflow)):
        return str(error)
    if isinstance(error, OSError):
        return f"{error} (after {attempts} attempts)"
    logger.error("unexpected error in a job's work", exc_info=error)
    return f"internal error: {type(error).__name__}: {error}"
