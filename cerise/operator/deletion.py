"""Deleting a job: stop it wherever it is, then remove its remote directory.

Called by the job's finalizer (`cerise.operator.registry`), again after each
`StillStopping` until it is done, so no handler waits in a loop. A job that may have been
submitted without its id in its status (a submit in flight when the delete came, or one
cut short) is first looked up in its directory, waiting a while for a submit in flight,
and then, if none recorded an id, on the scheduler by its name. A remote job is cancelled
and looked at again until it is gone, as `cerise.model.decisions` says.
"""

from __future__ import annotations

from cerise.kube import jobs as kube_jobs
from cerise.model import decisions, states
from cerise.model.observations import SubmitOutcome
from cerise.operator import metrics
from cerise.operator.allocations import is_pilot_run
from cerise.operator.context import Body, ResourceContext, key_of
from cerise.operator.polling import cancel
from cerise.remote import executor
from cerise.remote.pilot import executor as pilot_executor
from cerise.remote.schedulers import JobRef, Scheduler


class StillStopping(Exception):
    """The job is not yet gone from the resource: try the deletion again after `delay`."""

    def __init__(self, message: str, delay: float) -> None:
        super().__init__(message)
        self.delay = delay


class Deletion:
    """Removes one resource's deleted jobs from it."""

    def __init__(self, context: ResourceContext) -> None:
        self.context = context

    def _scheduler(self, remote_id: str) -> Scheduler:
        pilot = self.context.pilot
        return pilot.queue if pilot is not None and is_pilot_run(remote_id) else (
            self.context.scheduler)

    async def remove(self, body: Body, looks: int) -> None:
        """Stop the job and remove its remote directory; `looks` is how many times this
        deletion was tried before (StillStopping while it must wait)."""
        context = self.context
        key, files = key_of(body), context.files(body)
        status = body.get("status") or {}
        remote_id, phase = status.get("remoteJobId") or "", kube_jobs.phase_of(body)
        if decisions.submit_unsettled(phase, remote_id):
            pilot = context.pilot
            found = await executor.submission(
                context.remote, pilot.queue if pilot is not None else context.scheduler, files,
                context.request(body), context.prologue, wait_seconds=0)
            delay = decisions.after_submission_lookup(found.outcome, looks)
            if delay is not None:
                raise StillStopping("a submit of the job is still under way", delay)
            if found.outcome is SubmitOutcome.UNKNOWN:  # waited enough: was it cut short
                found = await executor.search(  # after the scheduler took the job?
                    context.remote, context.scheduler, files, context.request(body),
                    context.prologue) or found
            remote_id = found.remote_id
        ref = JobRef(key, files, remote_id)
        if remote_id and phase not in states.FINAL:
            await cancel(context, [ref])
            with metrics.scheduler_command(context.namespace, context.name, "status"):
                observed = await executor.poll(context.remote, self._scheduler(remote_id),
                                               [ref], context.prologue)
            delay = decisions.after_stop_check(observed[key].state, looks)
            if delay is not None:
                raise StillStopping(f"remote job {remote_id} is still stopping", delay)
        if context.pilot is not None and is_pilot_run(remote_id):
            await pilot_executor.forget_runs(context.remote, context.pilot.queue, [ref])
        await executor.remove_job_dir(context.remote, files)
        context.tracking.pop(key, None)
