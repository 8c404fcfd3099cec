"""Staging a job in: validate its workflow, refuse what the resource can never run, send its
inputs, then hand it to `cerise.operator.submission`.

`Submitted` → the workflow is loaded and checked against the installed steps (nothing
touches the remote side before), and the request against the resource
(`cerise.model.admission`) → `StagingIn`, or `PermanentFailure` with the reason. A job
whose workflow uses a project being installed waits in `Submitted`, saying so.
`StagingIn` → stage (idempotent) → submit; a job back in `StagingIn` for another attempt
with more time or memory (`cerise.model.retries`) is submitted again without staging.
Errors are the worker's to judge (`cerise.model.decisions.after_error`).
"""

from __future__ import annotations

import time
from collections.abc import Mapping

from cerise.kube import jobs as kube_jobs
from cerise.model import admission, cwl, specialisation
from cerise.model.decisions import Move
from cerise.model.specialisation import StepUse
from cerise.model.states import Phase
from cerise.operator import metrics
from cerise.operator.context import Body, ResourceContext
from cerise.operator.installer import Installer
from cerise.operator.progress import ProgressWriter
from cerise.operator.submission import Submission
from cerise.operator.workflows import Checked, JobInput, load_job, workflow_text
from cerise.remote import installed, staging
from cerise.remote.jobscript import JobFiles
from cerise.remote.schedulers import Request


class StageIn:
    """Validates, stages and submits one resource's new jobs."""

    def __init__(self, context: ResourceContext, installer: Installer,
                 submission: Submission) -> None:
        self.context, self.installer, self.submission = context, installer, submission
        self._installed: Mapping[str, str] | None = None
        self._checked = Checked()

    def projects_changed(self) -> None:
        """The installed projects changed: read their steps again when next needed."""
        self._installed = None
        self.context.wake.set()

    async def installed_steps(self, refresh: bool = False) -> Mapping[str, str]:
        """The files of the installed steps (`<project>/<path>.cwl` and what they import)
        → their text."""
        if self._installed is None or refresh:
            self._installed = await installed.step_documents(self.context.remote,
                                                             f"{self.context.base}/api")
        return self._installed

    async def _load(self, body: Body) -> JobInput:
        context = self.context
        try:
            return await load_job(body["spec"], context.exchange, await self.installed_steps(),
                                  context.web_inputs.fence, self._checked)
        except cwl.InvalidWorkflow:
            # A step may have been installed since we last looked.
            return await load_job(body["spec"], context.exchange,
                                  await self.installed_steps(refresh=True),
                                  context.web_inputs.fence, self._checked)

    def _request(self, body: Body, job: JobInput) -> Request:
        """What a job asks of the scheduler: its workflow's cores and memory, and the time
        limit of its spec or else its workflow's."""
        resources = cwl.required_resources(job.workflow)
        return self.context.request(body, resources.cores, resources.time_limit,
                                    resources.memory)

    async def run(self, body: Body) -> None:
        """Advance a job in `Submitted`, `StagingIn` or `StagingInCR` as far as it goes."""
        context = self.context
        phase = kube_jobs.phase_of(body)
        job: JobInput | None = None
        if phase is Phase.SUBMITTED:
            job = await self._admit(body)
            if job is None:
                return
            moved = await context.transitions.change_phase(body, phase, Phase.STAGING_IN,
                                                           "staging inputs")
            if moved is None:
                return
            body, phase = moved, Phase.STAGING_IN
        files = context.files(body)
        if phase is Phase.STAGING_IN_CR:
            await self.submission.settle_cancelled(body, files)
            return
        if phase is not Phase.STAGING_IN:
            return
        tracking = context.tracked(body)
        if tracking.request is None and files.attempt > 1:  # a retry: staged already
            tracking.request = self._request(body, job or await self._load(body))
        elif tracking.request is None:  # staged already when only the submit had to wait
            tracking.request = await self._stage(body, files, job or await self._load(body))
        latest = context.newest(body)
        if kube_jobs.phase_of(latest) is not Phase.STAGING_IN or latest["spec"].get("cancel"):
            context.wake.set()  # cancelled or deleted meanwhile: the next tick settles it
            return
        await self.submission.submit(latest, files, tracking.request)

    async def _admit(self, body: Body) -> JobInput | None:
        """A new job's workflow, if it may be staged now; None if it waits for a project
        or was refused (its refusal written)."""
        context = self.context
        if await self._waits_for_projects(body):
            return None
        try:
            job = await self._load(body)
            staging.plan(job.references, context.exchange, context.files(body),
                         workflow_url=job.workflow_url)
            request = self._request(body, job)
        except cwl.InvalidWorkflow as error:
            move = Move(Phase.PERMANENT_FAILURE, await self._explained(body, error))
            if await context.transitions.change_phase(body, Phase.SUBMITTED, move.target,
                                                      move.message):
                metrics.validation_failed(context.namespace, context.name)
            return None
        refusal = admission.refusal(context.spec, request.cores, request.time_limit,
                                    request.memory)
        if refusal is not None:  # the resource can never give what the job asks
            await context.transitions.change_phase(body, Phase.SUBMITTED, Phase.PERMANENT_FAILURE,
                                                   refusal)
            return None
        return job

    async def _stage(self, body: Body, files: JobFiles, job: JobInput) -> Request:
        """Send the job's inputs, workflow and input object; what it asks of the scheduler."""
        context = self.context
        plan = staging.plan(job.references, context.exchange, files,
                            workflow_url=job.workflow_url)
        meta = body["metadata"]
        started = time.monotonic()
        async with ProgressWriter(context.kube, namespace=meta["namespace"], name=meta["name"],
                                  direction="in", written=context.remember) as progress:
            report = await staging.stage_in(context.remote, files, plan.transfers,
                                            context.exchange, web_inputs=context.web_inputs,
                                            cache=context.input_cache, progress=progress)
        metrics.staging(context.namespace, context.name, "in", report.bytes_sent,
                        time.monotonic() - started)
        translated = cwl.translate_workflow(job.workflow, api_base=f"{context.base}/api")
        document = plan.apply(translated, cwl.Origin.WORKFLOW)
        inputs = plan.apply(job.input_object, cwl.Origin.INPUT_OBJECT)
        await context.remote.write(files.workflow, cwl.to_json(document).encode())
        await context.remote.write(files.input, cwl.to_json(inputs).encode())
        return self._request(body, job)

    async def _projects_used(self, body: Body) -> dict[str, StepUse]:
        tracking = self.context.tracked(body)
        if tracking.projects is None:
            try:
                text = await workflow_text(body["spec"].get("workflow") or "",
                                           self.context.exchange,
                                           self.context.web_inputs.fence)
            except cwl.InvalidWorkflow:
                text = ""
            tracking.projects = specialisation.projects_used(text)
        return tracking.projects

    async def _waits_for_projects(self, body: Body) -> bool:
        """Hold a new job while a project its workflow uses is being installed (the
        installer wakes the worker when that changes)."""
        waiting = self.installer.waiting()
        if not waiting:
            return False
        held = {p: waiting[p] for p in await self._projects_used(body) if p in waiting}
        if not held:
            return False
        context = self.context
        context.tracked(body).resume_at = time.monotonic() + context.spec.refresh
        context.wake_in(context.spec.refresh)
        await context.transitions.record_message(
            body, specialisation.waiting_message(held, context.name), reason="WaitingForProject")
        return True

    async def _explained(self, body: Body, error: cwl.InvalidWorkflow) -> str:
        """The job's failure message; a step of a project that is not here says why."""
        installed_projects = self.installer.projects()
        for project, use in (await self._projects_used(body)).items():
            if project not in installed_projects:
                return specialisation.missing_project(
                    project, use, installed_projects, self.installer.failures(),
                    self.context.name)
        return str(error)
