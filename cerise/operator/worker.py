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
import time
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from typing import Any, cast

import kopf
from lightkube import ApiError, AsyncClient

from cerise.kube import jobs as kube_jobs
from cerise.kube import objects
from cerise.model import compute, cwl, decisions, results, specialisation, states, steps
from cerise.model.compute import ResourceSpec
from cerise.model.decisions import Decision, Memory, Move, Seen, Sighting, Submitted, Work
from cerise.model.exchange import Exchange
from cerise.model.specialisation import StepUse
from cerise.model.states import Phase
from cerise.model.steps import Step
from cerise.operator import joblog
from cerise.operator.installer import Installer
from cerise.operator.specialisations import Specialisations
from cerise.operator.transitions import Transitions
from cerise.operator.workflows import JobInput, load_job, workflow_text
from cerise.remote import executor, installed, jobscript, staging
from cerise.remote.connection import CommandTimedOut, Remote, RemoteUnavailable
from cerise.remote.jobscript import JobFiles, SubmitOutcome
from cerise.remote.schedulers import JobRef, Observation, RemoteState, Request, Scheduler

logger = logging.getLogger(__name__)

ATTEMPTS = 3
"""Tries at staging a job in or out before an I/O error makes it a SystemError."""
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
        self._prologue = compute.prologue(spec.environment)
        self.transitions = Transitions(kube, remember=remember,
                                       log_path=lambda body: exchange.log_path(_key(body)),
                                       changed=self.wake.set)
        self._status: dict[str, Any] = {}
        self._status_written = 0.0
        self._ready_since = ""
        self.installer = Installer(
            namespace=namespace, resource=name, remote=remote, api=f"{self.base}/api",
            prologue=self._prologue, kube=kube, specialisations=specialisations,
            on_change=self._projects_changed)

    # --- paths -----------------------------------------------------------------------------

    @property
    def base(self) -> str:
        return compute.base_path(self.spec, self.remote.username)

    def files(self, body: Body) -> JobFiles:
        return JobFiles(f"{self.base}/jobs/{_key(body)}")

    # --- the loop --------------------------------------------------------------------------

    async def run(self, stopped: kopf.DaemonStopped) -> None:
        """Tick at the refresh interval, or sooner when a job changes, until stopped, or until
        the ComputeResource's spec changes (ResourceChanged: a new worker takes over)."""
        try:
            await self._probe()
            while not stopped:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.wake.wait(), self.spec.refresh)
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
        if remote_jobs:
            try:
                await self._poll(remote_jobs)
            except (RemoteUnavailable, CommandTimedOut, executor.RemoteCommandFailed) as error:
                await self._report(connected=False, error=str(error))

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
            return await load_job(body["spec"], self.exchange, await self.installed_steps())
        except cwl.InvalidWorkflow:
            # A step may have been installed since we last looked.
            return await load_job(body["spec"], self.exchange,
                                  await self.installed_steps(refresh=True))

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
            except cwl.InvalidWorkflow as error:
                await self.move(body, phase, Move(Phase.PERMANENT_FAILURE,
                                                  await self._explained(body, error)))
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
        job = job or await self._load(body)
        plan = staging.plan(job.references, self.exchange, files, workflow_url=job.workflow_url)
        await staging.stage_in(self.remote, files, plan.transfers, self.exchange)
        translated = cwl.translate_workflow(job.workflow, api_base=f"{self.base}/api")
        document = plan.apply(translated, cwl.Origin.WORKFLOW)
        inputs = plan.apply(job.input_object, cwl.Origin.INPUT_OBJECT)
        await self.remote.write(files.workflow, cwl.to_json(document).encode())
        await self.remote.write(files.input, cwl.to_json(inputs).encode())
        latest = self.current(body)
        if kube_jobs.phase_of(latest) is not Phase.STAGING_IN or latest["spec"].get("cancel"):
            self.wake.set()  # cancelled or deleted meanwhile: the next tick settles it
            return
        resources = cwl.required_resources(job.workflow)
        time_limit = int(body["spec"].get("timeLimit") or resources.time_limit)
        request = Request(name=f"cerise-{_key(body)}", cores=resources.cores,
                          time_limit=time_limit)
        runner = compute.runner_argv(self.spec, self.remote.username)
        submitted = await executor.submit(self.remote, self.scheduler, files, request, runner,
                                          self._prologue)
        await self._after_submit(latest, files, submitted)

    async def _projects_used(self, body: Body) -> dict[str, StepUse]:
        tracking = self._tracking.setdefault(_key(body), _Tracking())
        if tracking.projects is None:
            try:
                text = await workflow_text(body["spec"].get("workflow") or "", self.exchange)
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
        self, body: Body, files: JobFiles, submitted: jobscript.SubmitResult
    ) -> None:
        move = decisions.after_submit(_submitted(submitted.outcome), submitted.detail,
                                      submitted.remote_id, files.job_dir, kube_jobs.now())
        if move is None:
            await self._note(body, f"submitting failed; trying again: {submitted.detail}")
            return
        await self.transitions.carry_out(body, Phase.STAGING_IN, move)

    async def _settle_cancelled_staging(self, body: Body, files: JobFiles) -> None:
        """A cancel arrived during staging: was the job submitted (before a crash) or not?"""
        result = await self.remote.run(jobscript.lookup_script(files))
        found = jobscript.parse_submit(result.exit_status, result.stdout, result.stderr)
        move = decisions.after_cancelled_staging(_submitted(found.outcome), found.detail,
                                                 found.remote_id, files.job_dir)
        if move is not None:
            await self.move(body, Phase.STAGING_IN_CR, move)

    # --- polling ---------------------------------------------------------------------------

    async def _poll(self, bodies: list[Body]) -> None:
        refs = [JobRef(_key(b), JobFiles(b["status"].get("workDir") or self.files(b).job_dir),
                       b["status"].get("remoteJobId", "")) for b in bodies]
        observed = await executor.poll(self.remote, self.scheduler, refs, self._prologue)
        await self._report(connected=True, error="")
        now = time.monotonic()
        decided: list[tuple[Body, JobRef, Decision]] = []
        for body, ref in zip(bodies, refs, strict=True):
            tracking = self._tracking.setdefault(ref.key, _Tracking())
            phase = kube_jobs.phase_of(body)
            assert phase is not None
            decision = decisions.after_poll(phase, _sighting(observed[ref.key]), tracking.memory,
                                            now=now, refresh=self.spec.refresh)
            tracking.memory = decision.memory
            if decision.move is not None:
                await self.move(body, phase, decision.move)
            decided.append((body, ref, decision))
        to_cancel = [ref for _, ref, decision in decided if decision.cancel_remote]
        if to_cancel:
            await executor.cancel(self.remote, self.scheduler, to_cancel, self._prologue)
        await asyncio.gather(*(self._follow_log(body, observed[ref.key].log_size)
                               for body, ref, decision in decided if decision.follow_log))

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
        output = await staging.stage_out(self.remote, files, self.exchange, _key(body))
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
        if remote_id and phase not in states.FINAL:
            ref = JobRef(key, files, remote_id)
            await executor.cancel(self.remote, self.scheduler, [ref], self._prologue)
            for _ in range(50):
                observed = await executor.poll(self.remote, self.scheduler, [ref], self._prologue)
                if observed[key].state in (RemoteState.DONE, RemoteState.VANISHED):
                    break
                await asyncio.sleep(0.2)
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
        await self._report(connected=True, error="")

    async def _report(self, *, connected: bool, error: str, reason: str = "Unreachable") -> None:
        """Write the resource's status (`connected`, `lastError`, its Ready condition) when it
        changed or has not been written for a while; a change of it is also an Event."""
        ready = connected and not error
        status: dict[str, Any] = {"connected": connected, "lastError": error, "ready": ready}
        now = time.monotonic()
        if status == self._status and now - self._status_written < STATUS_INTERVAL:
            return
        changed = status != self._status
        del status["ready"]
        status["lastPoll"] = kube_jobs.now()
        if self.observed_generation is not None:
            status["observedGeneration"] = self.observed_generation
        if self._status.get("ready") != ready:  # a Ready flip, or the first report
            self._ready_since = status["lastPoll"]
        status["conditions"] = [{
            "type": "Ready", "status": "True" if ready else "False",
            "reason": "Connected" if ready else reason,
            "message": "the compute resource answers" if ready else error[:4096],
            "lastTransitionTime": self._ready_since}]
        previous = self._status
        self._status = {"connected": connected, "lastError": error, "ready": ready}
        self._status_written = now
        if changed and (previous or not ready):
            kopf.event(cast(kopf.Body, self._resource), type="Normal" if ready else "Warning",
                       reason="Ready" if ready else reason,
                       message="the compute resource answers again" if ready else error[:1024])
        try:
            await objects.patch_resource_status(self.kube, self.namespace, self.name, status)
        except ApiError as failure:
            logger.warning("resource %s/%s: status not written: %s", self.namespace, self.name,
                           failure)


def _submitted(outcome: SubmitOutcome) -> Submitted:
    return {SubmitOutcome.SUBMITTED: Submitted.SUBMITTED, SubmitOutcome.FAILED: Submitted.FAILED,
            SubmitOutcome.UNKNOWN: Submitted.UNKNOWN,
            SubmitOutcome.NOT_SUBMITTED: Submitted.NOT_SUBMITTED}[outcome]


def _sighting(observation: Observation) -> Sighting:
    return Sighting(Seen(observation.state.value), observation.exit_code)


def _failure_message(error: BaseException, attempts: int) -> str:
    if isinstance(error, (staging.InputRejected, staging.OutputRejected, cwl.InvalidWorkflow)):
        return str(error)
    if isinstance(error, OSError):
        return f"{error} (after {attempts} attempts)"
    logger.error("unexpected error in a job's work", exc_info=error)
    return f"internal error: {type(error).__name__}: {error}"
