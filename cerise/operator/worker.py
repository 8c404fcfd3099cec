"""One worker per ComputeResource: drives all of that resource's jobs.

Level-triggered: every tick looks at each job's current phase and starts the next piece
of work, so an operator restarted at any instruction simply carries on. The work is split
by phase, each part in a module of its own sharing one `ResourceContext`:

* Specialisation projects → installed in the background (`installer`).
* `Submitted`, `StagingIn` → `stage_in` (validate, stage) → `submission` → `Waiting`.
* remote phases → `polling`: ONE status command per refresh for all of them; between
  polls, `end_watch` waits on the resource for a run to end, and has it polled at once.
* `Finished`, `StagingOut` → `stage_out` → the final phase.
* a cancel request → its `CR` phase; a deleted job → `deletion`.
* the resource's own status → `resource_status`.
* an ended job's callback → `callbacks`.

What to do next is decided by the pure functions of `cerise.model.decisions`; this module
gathers their facts and carries out their answers. Staging in and out run as background
tasks, at most one per job and `STAGING_TASKS` per resource, so a slow upload never holds
up polling; an error in one is judged by `decisions.after_error`: the job is tried again
after a delay (saying why in its own status) or ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from typing import Any

import kopf
from lightkube import AsyncClient

from cerise.kube import contact
from cerise.kube import jobs as kube_jobs
from cerise.model import cwl, decisions
from cerise.model.compute import ResourceSpec
from cerise.model.decisions import Failure, Retry, Work
from cerise.model.exchange import Exchange
from cerise.model.leases import FencingToken
from cerise.operator import callbacks, metrics
from cerise.operator.context import Body, ResourceContext, key_of
from cerise.operator.deletion import Deletion
from cerise.operator.end_watch import EndWatch
from cerise.operator.installer import Installer
from cerise.operator.polling import Polling
from cerise.operator.resource_status import ResourceStatus
from cerise.operator.runner_log import RunnerLog
from cerise.operator.specialisations import Specialisations
from cerise.operator.stage_in import StageIn
from cerise.operator.stage_out import StageOut
from cerise.operator.submission import Submission
from cerise.remote import executor, staging
from cerise.remote.failures import CommandTimedOut, RemoteUnavailable
from cerise.remote.protocol import Remote
from cerise.remote.schedulers import Scheduler

logger = logging.getLogger(__name__)

COALESCE = 0.05
"""Most seconds between the starts of two ticks woken by changes (10,000 jobs changing at
once would otherwise be 10,000 ticks); a change on a resource quiet for longer is acted on
at once."""
TICK_SHARE = 0.2
"""After a tick that took t seconds, the next one woken by a change starts t / TICK_SHARE
after it, or COALESCE after it if that is sooner: ticks of up to COALESCE * TICK_SHARE
seconds take at most this share of the worker's time, and a resource with few jobs, whose
ticks take a millisecond, takes up a new job a few milliseconds after the last one ended,
not COALESCE after."""
STAGING_TASKS = 16
"""Most jobs of one resource staged in or out at once; the others wait their turn."""
CREDENTIALS_CHECK = 30.0
"""Seconds between reads of the resource's credentials Secret (a rotated one restarts the
worker)."""

FAILURES: tuple[tuple[type[BaseException], Failure], ...] = (
    (RemoteUnavailable, Failure.PASSING),  # the connection backs off by itself
    (CommandTimedOut, Failure.PASSING),
    (executor.RemoteCommandFailed, Failure.PASSING),  # a command or the scheduler failed
    (staging.InputRejected, Failure.INPUT_REJECTED),
    (cwl.InvalidWorkflow, Failure.INVALID_WORKFLOW),
    (staging.OutputRejected, Failure.OUTPUT_REJECTED),
    (OSError, Failure.IO),  # a download or a disk hiccup
    (Exception, Failure.INTERNAL),
)
"""What kind of failure an error in a job's work is: the first entry whose type matches."""


def failure_of(error: BaseException) -> Failure:
    """The kind of failure `error` is (`FAILURES`)."""
    return next(kind for error_type, kind in FAILURES if isinstance(error, error_type))


Credentials = Callable[[], Awaitable[Mapping[str, str] | None]]
"""Reads the resource's credentials Secret now (None: it names none)."""


async def _no_credentials() -> None:
    return None


class ResourceChanged(Exception):
    """The ComputeResource's spec or Secret changed: its worker must start again."""


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
        credentials: Credentials = _no_credentials,
        secret: Mapping[str, str] | None = None,
        fence: FencingToken | None = None,
    ) -> None:
        """`secret` is the credentials Secret's data the worker connects with;
        `credentials` reads it again now and then; `fence` is the fencing token of this
        replica's tenure of the resource (None: the operator works alone)."""
        self.context = context = ResourceContext(
            namespace=namespace, name=name, uid=uid, spec=spec, remote=remote,
            scheduler=scheduler, kube=kube, exchange=exchange, jobs=jobs, remember=remember,
            fence=fence)
        self.namespace, self.name, self.spec, self.remote = namespace, name, spec, remote
        self.wake = context.wake
        self._generation = generation
        self.observed_generation = generation()
        """The ComputeResource's spec generation this worker runs with."""
        self._credentials, self._secret = credentials, secret
        self._credentials_read = time.monotonic()
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._woken_at = float("-inf")
        """When the last tick a wake-up started began (monotonic seconds)."""
        self._tick_seconds = 0.0
        """How long the last tick took (seconds): the next woken one waits for it."""
        self._poll_asked = False
        """Whether `end_watch` asked for a poll now."""
        self._polled_at = float("-inf")
        """When the remote jobs were last polled (monotonic seconds)."""
        self._polling = False
        """Whether the last tick found jobs (or allocations) on the resource to poll."""
        self._api_down = False
        """Whether the last tick failed for want of an answer from the Kubernetes API."""
        self._probe_due = False
        """A job's work lost the connection: the resource itself is probed at the next tick
        (its status says what the resource does, not what one job met)."""
        self.installer = Installer(
            namespace=namespace, resource=name, remote=remote, api=f"{context.base}/api",
            prologue=context.prologue, kube=kube, specialisations=specialisations,
            on_change=lambda: self.stage_in.projects_changed(), fence=context.web_inputs.fence)
        self.status = ResourceStatus(context, self.observed_generation)
        log = RunnerLog(context)
        self.stage_in = StageIn(context, self.installer, Submission(context))
        self.polling = Polling(context, self.status, log)
        self.end_watch = EndWatch(context, self._poll_now)
        self.stage_out = StageOut(context, log)
        self.deletion = Deletion(context)
        self.callbacks = callbacks.Callbacks(context, callbacks.schedule(os.environ))

    # --- the loop --------------------------------------------------------------------------

    async def run(self, stopped: kopf.DaemonStopped) -> None:
        """Tick when a job changes, and when the next poll is due, until stopped, or until
        the ComputeResource's spec or Secret changes (ResourceChanged: a new worker takes
        over)."""
        watching = asyncio.create_task(self.end_watch.run(), name=f"ends-{self.name}")
        try:
            await self.status.probe()
            while not stopped:
                due = self._polled_at + self.spec.refresh - time.monotonic()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(max(0.0, due) if self._polling
                                               else self.spec.refresh):
                        await self.wake.wait()
                if self.wake.is_set() and not self._poll_asked:
                    # One tick for a burst of changes, not one for each.
                    await asyncio.sleep(self._coalesce())
                    self._woken_at = time.monotonic()
                self.wake.clear()
                self._poll_asked = False
                if self._generation() != self.observed_generation:
                    raise ResourceChanged(f"the ComputeResource changed (generation "
                                          f"{self._generation()}); restarting its worker")
                await self._check_credentials()
                began = time.monotonic()
                try:
                    await self.tick()
                except Exception as error:
                    if not contact.unavailable(error):
                        raise
                    # What the tick did not write, the next one decides again from the
                    # watched jobs (each phase change is a compare-and-swap).
                    self._api_failed(error)
                else:
                    self._api_failed(None)
                self._tick_seconds = time.monotonic() - began
        finally:
            watching.cancel()
            for task in self._tasks.values():
                task.cancel()
            await asyncio.gather(watching, *self._tasks.values(), return_exceptions=True)
            await self.callbacks.close()
            await self.installer.close()
            await self.remote.close()

    def _api_failed(self, error: Exception | None) -> None:
        """Log the first tick the Kubernetes API failed, and the first that it served again
        (a stopped or overloaded API server fails every tick meanwhile)."""
        if error is not None and not self._api_down:
            logger.warning("resource %s/%s: the Kubernetes API did not answer (%s: %s); "
                           "trying again at the next tick", self.namespace, self.name,
                           type(error).__name__, error)
        elif error is None and self._api_down:
            logger.info("resource %s/%s: the Kubernetes API answers again", self.namespace,
                        self.name)
        self._api_down = error is not None

    def _poll_now(self) -> None:
        """A run ended (`end_watch`): poll at once, not at the refresh. Such a tick is a
        poll's, not one of changes: what the poll moves on is taken up at once after it."""
        self._polled_at = float("-inf")
        self._poll_asked = True
        self.wake.set()

    def _coalesce(self) -> float:
        """How long a wake-up waits for more changes: what is left, since the last tick a
        wake-up started, of the last tick's time over TICK_SHARE, at most COALESCE (none
        when the resource has been quiet that long, so a new job is taken up at once). The
        ticks of polls come at the refresh and do not count."""
        spacing = min(COALESCE, self._tick_seconds / TICK_SHARE)
        return max(0.0, self._woken_at + spacing - time.monotonic())

    async def _check_credentials(self) -> None:
        """Now and then, read the credentials Secret again: a rotated one restarts the
        worker, which connects with it."""
        if time.monotonic() - self._credentials_read < CREDENTIALS_CHECK:
            return
        self._credentials_read = time.monotonic()
        try:
            current = await self._credentials()
        except Exception as error:
            logger.warning("resource %s/%s: credentials not read again: %s", self.namespace,
                           self.name, error)
            return
        if current != self._secret:
            raise ResourceChanged("the ComputeResource's credentials Secret changed; "
                                  "restarting its worker")

    async def tick(self) -> None:
        """Install what is wanted; advance every job one step; poll the remote ones with
        one command."""
        try:
            await self.installer.tick()
        except Exception:  # a fault in installing must not stop the jobs
            logger.exception("resource %s/%s: installing projects failed", self.namespace,
                             self.name)
        remote_jobs: list[Body] = []
        staged: list[tuple[Body, Callable[[Body], Coroutine[Any, Any, None]]]] = []
        active: set[str] = set()
        claimed = await self.context.transitions.claim(self.context.jobs())
        for body in claimed:
            active.add(key_of(body))
            phase = kube_jobs.phase_of(body)
            decision = decisions.next_work(
                phase, cancel=bool(body["spec"].get("cancel")),
                deleting=bool(body["metadata"].get("deletionTimestamp")))
            if decision.move is not None and phase is not None:
                move = decision.move
                await self.context.transitions.change_phase(body, phase, move.target, move.message,
                                                            move.fields)
            elif decision.work is Work.STAGE_IN:
                staged.append((body, self.stage_in.run))
            elif decision.work is Work.STAGE_OUT:
                staged.append((body, self.stage_out.run))
            elif decision.work is Work.POLL:
                remote_jobs.append(body)
        self._start(staged)
        self.callbacks.start(claimed)
        self._forget_ended(active)
        pilot = self.context.pilot
        self._polling = bool(remote_jobs) or (pilot is not None and bool(pilot.known))
        # At most one poll a refresh: the many changes of many jobs wake the worker far
        # more often than that.
        due = time.monotonic() - self._polled_at >= self.spec.refresh
        if self._probe_due and due and not self._polling:
            self._probe_due, self._polled_at = False, time.monotonic()
            await self.status.probe(survey=False)
        if self._polling and due:
            self._polled_at, self._probe_due = time.monotonic(), False
            try:
                await self.polling.poll(remote_jobs)
                self.end_watch.polled()
            except (RemoteUnavailable, CommandTimedOut) as error:
                await self.status.report(connected=False, error=str(error))
            except executor.RemoteCommandFailed as error:  # the scheduler did not answer
                await self.status.report(connected=True, error=str(error),
                                         reason="SchedulerUnavailable")

    def _start(self, staged: list[tuple[Body, Callable[[Body], Coroutine[Any, Any, None]]]]
               ) -> None:
        """Start the staging work of jobs that have none under way and are not held, up to
        `STAGING_TASKS` at once (a task that ends wakes the worker for the next)."""
        now = time.monotonic()
        for body, work in staged:
            if len(self._tasks) >= STAGING_TASKS:
                return
            key = key_of(body)
            tracking = self.context.tracking.get(key)
            if key in self._tasks or (tracking is not None and tracking.resume_at > now):
                continue
            task = asyncio.create_task(self._guarded(body, work), name=f"job-{key}")
            self._tasks[key] = task
            task.add_done_callback(lambda _, key=key: self._done(key))  # type: ignore[misc]

    def _forget_ended(self, active: set[str]) -> None:
        """Drop what the worker remembers of jobs no longer active (ended, deleted) and
        without work under way: its memory follows the live jobs, not every job run."""
        for key in self.context.tracking.keys() - active - self._tasks.keys():
            del self.context.tracking[key]

    def _done(self, key: str) -> None:
        self._tasks.pop(key, None)
        self.context.carry_on()

    async def _guarded(self, body: Body, work: Callable[[Body], Coroutine[Any, Any, None]]
                       ) -> None:
        """Run a job's work; after an error, do what `decisions.after_error` says."""
        tracking = self.context.tracked(body)
        try:
            await work(body)
        except asyncio.CancelledError:
            raise
        except Exception as error:
            tracking.failures += 1
            await self._after_error(body, error, tracking.failures)
        else:
            tracking.failures = 0

    async def _after_error(self, body: Body, error: Exception, failures: int) -> None:
        """Retry the job's work after a delay, saying why in its status, or end the job."""
        context = self.context
        failure = failure_of(error)
        if isinstance(error, RemoteUnavailable):
            self._probe_due = True
            context.wake_in(self.spec.refresh)
        if failure is Failure.INTERNAL:
            logger.error("unexpected error in a job's work", exc_info=error)
        current = context.newest(body)
        phase = kube_jobs.phase_of(current)
        text = f"{type(error).__name__}: {error}" if failure is Failure.INTERNAL else str(error)
        answer = decisions.after_error(failure, text, failures, phase, refresh=self.spec.refresh)
        if isinstance(answer, Retry):
            logger.warning("job %s: %s", key_of(body), answer.message)
            context.tracked(body).resume_at = time.monotonic() + answer.delay
            context.wake_in(answer.delay)
            await context.transitions.record_message(current, answer.message, reason="Retrying")
            return
        if answer is None or phase is None:
            return
        moved = await context.transitions.change_phase(current, phase, answer.target,
                                                       answer.message, answer.fields)
        if moved and failure in (Failure.INPUT_REJECTED, Failure.INVALID_WORKFLOW):
            metrics.validation_failed(self.namespace, self.name)

    # --- deletion --------------------------------------------------------------------------

    async def delete(self, body: Body, looks: int = 0) -> None:
        """Stop the job wherever it is and remove its remote directory (StillStopping
        while it must wait; `looks` is how many times this was tried before)."""
        task = self._tasks.pop(key_of(body), None)
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        await self.deletion.remove(body, looks)
