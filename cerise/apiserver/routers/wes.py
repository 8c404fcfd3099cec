"""GA4GH WES 1.1 under ``/ga4gh/wes/v1``: runs are WorkflowJobs.

`POST /runs` stores the `workflow_attachment` files in the exchange under
``input/wes-runs/<run id>/``, resolves a relative `workflow_url` and relative or
client-side (``file://``, as wes-client sends) locations in `workflow_params` onto
them, and creates the job; the request itself is kept in an annotation so that
`GET /runs/{id}` can show it. `workflow_engine_parameters` takes two keys,
`compute_resource`, `callback_url` (POSTed the run's summary when it ends) and `retry`
(an object: the job's `spec.retry`). Tasks are the workflow's steps, from the job's
``status.steps``. Errors are WES ErrorResponses (``{msg, status_code}``).
"""

from __future__ import annotations

import asyncio
import json
import shutil
from collections.abc import Mapping
from pathlib import Path, PurePosixPath
from typing import Annotated, Any
from urllib.parse import quote, unquote, urljoin, urlsplit

from fastapi import APIRouter, Query, Request
from fastapi import Path as PathParam
from pydantic import BaseModel, Field
from starlette.datastructures import UploadFile

import cerise
from cerise.apiserver import errors, history, json_bodies, workflowjobs
from cerise.apiserver.tenancy import ReadTenant, Tenant, WriteTenant
from cerise.kube.cache import Body as JobBody
from cerise.kube.jobs import GROUP
from cerise.model import accounting, callbacks, locations, names, states

router = APIRouter(tags=["GA4GH WES 1.1"])

REQUEST_ANNOTATION = f"{GROUP}/wes-request"
TAGS_ANNOTATION = f"{GROUP}/wes-tags"
CWL_VERSIONS = ("v1.0", "v1.1", "v1.2")
ENGINE_PARAMETERS = {"compute_resource", "callback_url", "retry"}
ENGINES = {"cwltool", "cwl-runner"}
ATTACHMENTS = "wes-runs"
MAX_PAGE = 1000

RunId = Annotated[str, PathParam(description="The run's id.", max_length=253)]
PageSize = Annotated[int | None, Query(ge=1, le=MAX_PAGE, description="Runs per page.")]
PageToken = Annotated[str | None, Query(max_length=1024,
                                        description="`next_page_token` of the page before.")]


class RunIdResponse(BaseModel):
    """A run's id."""

    run_id: str


class RunStatus(BaseModel):
    """A run's id and state."""

    run_id: str
    state: states.WesState


class RunSummary(RunStatus):
    """A run in a list."""

    start_time: str | None = None
    end_time: str | None = None
    tags: dict[str, str] = Field(default_factory=dict)


class RunListResponse(BaseModel):
    """A page of runs, newest first."""

    runs: list[RunSummary]
    next_page_token: str


class Log(BaseModel):
    """What a run or task did."""

    name: str | None = None
    cmd: list[str] | None = None
    start_time: str | None = None
    end_time: str | None = None
    stdout: str | None = None
    stderr: str | None = None
    exit_code: int | None = None
    system_logs: list[str] | None = None


class RunLogEntry(Log):
    """The run's own log: WES's Log, with what its runs cost once it ended (an extension,
    also a line of `system_logs` that any WES client shows)."""

    accounting: dict[str, Any] | None = Field(
        None, description="`elapsedSeconds`, `cpuSeconds`, `maxRssBytes`, `cores`, "
                          "`coreHours` and `source` (`sacct`, `jobscript`, `pilot`).")


class TaskLog(Log):
    """One step of a run's workflow."""

    id: str
    name: str
    tes_uri: str | None = None


class TaskListResponse(BaseModel):
    """A page of a run's tasks."""

    task_logs: list[TaskLog]
    next_page_token: str


class RunLog(BaseModel):
    """Everything about a run."""

    run_id: str
    request: dict[str, Any]
    state: states.WesState
    run_log: RunLogEntry
    task_logs_url: str
    task_logs: list[TaskLog] | None = None
    outputs: dict[str, Any]


@router.get("/service-info", summary="About this WES service")
async def service_info(tenant: ReadTenant) -> dict[str, Any]:
    """The GA4GH service-info 1.0 fields and WES 1.1's."""
    counts = {state.value: 0 for state in states.WesState}
    for phase, count in (await history.counts(tenant)).items():
        counts[states.wes_state(phase).value] += count
    default_resource = workflowjobs.default_resource(tenant) or ""
    return {
        "id": "dev.cerise.wes", "name": "Cerise",
        "type": {"group": "org.ga4gh", "artifact": "wes", "version": "1.1.0"},
        "description": "Runs CWL workflows built from a specialisation's installed steps on "
                       "HPC compute resources.",
        "organization": {"name": "Cerise", "url": "https://github.com/MD-Studio/cerise"},
        "version": cerise.__version__,
        "environment": "production",
        "workflow_type_versions": {"CWL": {"workflow_type_version": list(CWL_VERSIONS)}},
        "supported_wes_versions": ["1.1.0", "1.0.0"],
        "supported_filesystem_protocols": ["http", "https"],
        "workflow_engine_versions": {"cwltool": {"workflow_engine_version": []}},
        "default_workflow_engine_parameters": [
            {"name": "compute_resource", "type": "string", "default_value": default_resource},
            {"name": "callback_url", "type": "string", "default_value": ""}],
        "system_state_counts": counts,
        "auth_instructions_url": "https://github.com/MD-Studio/cerise",
        "tags": {"namespace": tenant.namespace, "exchange": tenant.exchange.url},
    }


@router.get("/runs", summary="List runs")
async def list_runs(tenant: ReadTenant, page_size: PageSize = None,
                    page_token: PageToken = None) -> RunListResponse:
    """Runs the caller may see, newest first, a page at a time."""
    size = page_size or 100
    after = history.token_place(page_token) if page_token else None
    page = await history.page(tenant, after=after, limit=size + 1)
    more, page = len(page) > size, page[:size]
    return RunListResponse(
        runs=[RunSummary(run_id=body["metadata"]["name"], state=_state(body),
                         start_time=_start(body), end_time=_end(body), tags=_tags(body))
              for body in page],
        next_page_token=history.page_token(workflowjobs.place(page[-1])) if more else "")


@router.post("/runs", summary="Run a workflow")
async def run_workflow(tenant: WriteTenant, request: Request) -> RunIdResponse:
    """Start a run from a multipart form (WES RunRequest fields and attachments)."""
    try:
        form = await request.form()
    except Exception as error:  # the multipart parser's errors have no common base
        raise errors.BadRequest(f"the request is not a valid multipart form: {error}") from None
    fields = {key: value for key, value in form.multi_items() if isinstance(value, str)}
    uploads = [value for key, value in form.multi_items()
               if key == "workflow_attachment" and not isinstance(value, str)]
    wanted = _run_request(fields)
    run_id = workflowjobs.object_name(PurePosixPath(urlsplit(wanted["workflow_url"]).path).stem)
    folder = tenant.exchange.root / "input" / ATTACHMENTS / run_id
    names = await _save_attachments(uploads, folder)
    base = f"{tenant.exchange.url}/input/{ATTACHMENTS}/{run_id}/"
    try:
        workflow = _workflow_location(wanted["workflow_url"], names, base)
        params = _relocated(wanted["workflow_params"], names, base)
        await workflowjobs.submit(
            tenant, name=wanted["workflow_url"], workflow=workflow, input_object=params,
            resource=wanted["workflow_engine_parameters"].get("compute_resource"),
            callback_url=wanted["workflow_engine_parameters"].get("callback_url"),
            annotations={REQUEST_ANNOTATION: json.dumps(wanted),
                         TAGS_ANNOTATION: json.dumps(wanted["tags"])},
            job_id=run_id, retry=wanted["workflow_engine_parameters"].get("retry"))
    except BaseException:
        await asyncio.to_thread(shutil.rmtree, folder, True)
        raise
    return RunIdResponse(run_id=run_id)


@router.get("/runs/{run_id}", summary="A run's log")
async def get_run_log(tenant: ReadTenant, run_id: RunId) -> RunLog:
    """A run with its request, state, log URLs, outputs and tasks URL."""
    body = await history.find(tenant, run_id)
    status = body.get("status") or {}
    log_url = f"{tenant.base_url}/jobs/{run_id}/log"
    return RunLog(
        run_id=run_id, request=_request(body), state=_state(body),
        run_log=RunLogEntry(
            name=body["spec"].get("name") or run_id, start_time=_start(body),
            end_time=_end(body), stdout=log_url, stderr=log_url,
            exit_code=status.get("exitCode"), system_logs=_system_logs(status),
            accounting=status.get("accounting")),
        task_logs_url=f"{_wes_url(tenant)}/runs/{run_id}/tasks",
        outputs=status.get("output") or {},
    )


def _system_logs(status: Mapping[str, Any]) -> list[str]:
    """The run's status message, and what its runs cost once it ended."""
    lines = [status["message"]] if status.get("message") else []
    if status.get("accounting"):
        lines.append(f"accounting: {accounting.describe(status['accounting'])}")
    return lines


@router.get("/runs/{run_id}/status", summary="A run's state")
async def get_run_status(tenant: ReadTenant, run_id: RunId) -> RunStatus:
    """Just the run's state."""
    return RunStatus(run_id=run_id, state=_state(await history.find(tenant, run_id)))


@router.post("/runs/{run_id}/cancel", summary="Cancel a run")
async def cancel_run(tenant: ReadTenant, run_id: RunId) -> RunIdResponse:
    """Cancel the run: its remote job is stopped, and it ends CANCELED."""
    await history.cancel(tenant, run_id)
    return RunIdResponse(run_id=run_id)


@router.get("/runs/{run_id}/tasks", summary="A run's tasks")
async def list_tasks(tenant: ReadTenant, run_id: RunId, page_size: PageSize = None,
                     page_token: PageToken = None) -> TaskListResponse:
    """The workflow's steps, in the order they started."""
    tasks = _tasks(await history.find(tenant, run_id))
    try:
        start = int(page_token) if page_token else 0
    except ValueError:
        raise errors.BadRequest("the page_token is not one this service gave out") from None
    page = tasks[start:start + (page_size or 100)]
    more = start + len(page) < len(tasks)
    return TaskListResponse(task_logs=page,
                            next_page_token=str(start + len(page)) if more else "")


@router.get("/runs/{run_id}/tasks/{task_id}", summary="One task of a run")
async def get_task(tenant: ReadTenant, run_id: RunId, task_id: str) -> TaskLog:
    """One step of the run's workflow."""
    for task in _tasks(await history.find(tenant, run_id)):
        if task.id == task_id:
            return task
    raise errors.NotFound(f"run {run_id[:100]!r} has no task {task_id[:100]!r}")


def _wes_url(tenant: Tenant) -> str:
    return f"{tenant.base_url}/ga4gh/wes/v1"


def _state(body: JobBody) -> states.WesState:
    preempted = (body.get("status") or {}).get("preempted") is True
    return states.wes_state(workflowjobs.phase(body), preempted=preempted)


def _start(body: JobBody) -> str | None:
    start: str | None = body["metadata"].get("creationTimestamp")
    return start


def _end(body: JobBody) -> str | None:
    end: str | None = (body.get("status") or {}).get("finishedAt")
    return end


def _tags(body: JobBody) -> dict[str, str]:
    raw = (body["metadata"].get("annotations") or {}).get(TAGS_ANNOTATION)
    try:
        tags = json.loads(raw) if raw else {}
    except ValueError:
        return {}
    return {str(key): str(value) for key, value in tags.items()} if isinstance(tags, dict) else {}


def _request(body: JobBody) -> dict[str, Any]:
    """The run request as submitted, or as it would have been for a job made otherwise."""
    raw = (body["metadata"].get("annotations") or {}).get(REQUEST_ANNOTATION)
    if raw:
        try:
            found = json.loads(raw)
            if isinstance(found, dict):
                return found
        except ValueError:
            pass
    workflow = body["spec"]["workflow"]
    return {"workflow_params": body["spec"].get("input") or {}, "workflow_type": "CWL",
            "workflow_type_version": "v1.2",
            "workflow_url": workflow if "\n" not in workflow else "",
            "tags": _tags(body), "workflow_engine_parameters": {
                "compute_resource": body["spec"]["computeResource"],
                **({"callback_url": url} if (url := callbacks.callback_url(body)) else {})}}


def _tasks(body: JobBody) -> list[TaskLog]:
    """The steps as tasks. A step the runner never saw end (it was cancelled or killed)
    ends when its job did, in the job's final phase."""
    status = body.get("status") or {}
    phase = workflowjobs.phase(body)
    found = []
    for step in status.get("steps") or []:
        state, end = step.get("state", "Running"), step.get("endTime")
        if state == "Running" and phase in states.FINAL:
            state, end = phase.value, status.get("finishedAt")
        exit_code = {"Success": 0, "PermanentFailure": 1, "TemporaryFailure": 1}.get(state)
        found.append(TaskLog(id=step["name"], name=step["name"], start_time=step.get("startTime"),
                             end_time=end, exit_code=exit_code,
                             system_logs=[f"state: {state}"]))
    return found


def _json_object(fields: Mapping[str, str], key: str) -> dict[str, Any]:
    raw = fields.get(key)
    if raw is None or not raw.strip():
        return {}
    value = json_bodies.parse(raw, key)
    if not isinstance(value, dict):
        raise errors.BadRequest(f"{key} must be a JSON object")
    return value


def _run_request(fields: Mapping[str, str]) -> dict[str, Any]:
    """The checked RunRequest fields of the form."""
    workflow_url = fields.get("workflow_url", "").strip()
    if not workflow_url:
        raise errors.BadRequest("workflow_url is missing: give the workflow's URL, or the "
                                "name of an attached workflow file")
    if not fields.get("workflow_params", "").strip():
        raise errors.BadRequest("workflow_params is missing: give the workflow's input object "
                                "as JSON ({} if it takes no inputs)")
    workflow_type = fields.get("workflow_type", "CWL").strip()
    if workflow_type.upper() != "CWL":
        raise errors.BadRequest(f"workflow_type {workflow_type[:50]!r} is not supported; "
                                "this service runs CWL")
    version = fields.get("workflow_type_version", "").strip()
    if version and version not in CWL_VERSIONS:
        raise errors.BadRequest(f"workflow_type_version {version[:50]!r} is not supported; "
                                f"use one of {', '.join(CWL_VERSIONS)}")
    engine = fields.get("workflow_engine", "").strip()
    if engine and engine.lower() not in ENGINES:
        raise errors.BadRequest(f"workflow_engine {engine[:50]!r} is not supported; runs use "
                                "the compute resource's cwltool")
    engine_parameters = _json_object(fields, "workflow_engine_parameters")
    unknown = sorted(set(engine_parameters) - ENGINE_PARAMETERS)
    if unknown:
        raise errors.BadRequest(
            f"unknown workflow_engine_parameters {', '.join(map(repr, unknown))}; the "
            f"known ones are {', '.join(sorted(ENGINE_PARAMETERS))}")
    resource = engine_parameters.get("compute_resource")
    if resource is not None and not isinstance(resource, str):
        raise errors.BadRequest("workflow_engine_parameters.compute_resource must be a string")
    callback = engine_parameters.get("callback_url")
    problem = None if callback is None else callbacks.url_problem(callback)
    if problem is not None:
        raise errors.BadRequest(f"workflow_engine_parameters.callback_url: {problem}")
    if not isinstance(engine_parameters.get("retry", {}), dict):
        raise errors.BadRequest("workflow_engine_parameters.retry must be a JSON object")
    tags = _json_object(fields, "tags")
    if not all(isinstance(value, str) for value in tags.values()):
        raise errors.BadRequest("tags must map strings to strings")
    _check_text(workflow_url, tags)
    return {"workflow_params": _json_object(fields, "workflow_params"),
            "workflow_type": "CWL", "workflow_type_version": version or "v1.2",
            "workflow_url": workflow_url, "tags": tags,
            "workflow_engine_parameters": engine_parameters,
            **({"workflow_engine": engine} if engine else {}),
            **({"workflow_engine_version": fields["workflow_engine_version"]}
               if fields.get("workflow_engine_version") else {})}


def _check_text(workflow_url: str, tags: Mapping[str, str]) -> None:
    """Refuse a workflow_url (the run's name) or tag that would break logs and line-based
    readers (see `cerise.model.names`)."""
    problems = [names.problem(workflow_url, "workflow_url", max_length=None)]
    for key, value in tags.items():
        problems += [names.problem(key, "a tag's name", max_length=None),
                     names.problem(value, f"tag {key[:50]!r}", max_length=None)]
    found = next((problem for problem in problems if problem is not None), None)
    if found is not None:
        raise errors.BadRequest(found)


def _attachment_name(filename: str | None) -> str:
    name = (filename or "").replace("\\", "/")
    parts = [part for part in name.split("/") if part not in ("", ".")]
    if not parts or ".." in parts or name.startswith("/") or "\x00" in name:
        raise errors.BadRequest(f"the attachment name {name[:100]!r} is not a relative path "
                                "inside the run (no '..', not absolute)")
    return "/".join(parts)


async def _save_attachments(uploads: list[UploadFile], folder: Path) -> list[str]:
    """Store the attachments under `folder`; return their relative names."""
    names = [_attachment_name(upload.filename) for upload in uploads]

    def save() -> None:
        for name, upload in zip(names, uploads, strict=True):
            target = folder.joinpath(*name.split("/"))
            target.parent.mkdir(parents=True, exist_ok=True)
            upload.file.seek(0)
            with target.open("wb") as out:
                shutil.copyfileobj(upload.file, out, 1 << 20)

    await asyncio.to_thread(save)
    return names


def _workflow_location(workflow_url: str, names: list[str], base: str) -> str:
    if urlsplit(workflow_url).scheme:
        return workflow_url
    wanted = "/".join(part for part in workflow_url.split("/") if part not in ("", "."))
    if wanted in names:
        return urljoin(base, quote(wanted))
    raise errors.BadRequest(
        f"workflow_url {workflow_url[:200]!r} is neither an absolute URL nor the name of an "
        f"attachment (attached: {', '.join(names) or 'nothing'})")


def _relocated(value: Any, names: list[str], base: str) -> Any:
    """`value` with File/Directory locations moved onto the attachments where they match,
    and relative ones resolved against the attachments."""
    def move(location: str) -> str | None:
        found = _attachment_for(location, names)
        if found is not None:
            return urljoin(base, quote(found))
        return location if urlsplit(location).scheme else urljoin(base, quote(location))

    return locations.moved(value, move)


def _attachment_for(location: str, names: list[str]) -> str | None:
    """The attachment a location names: the same relative path, or the longest attachment
    whose path ends the location's (a client-side path) or that the location ends."""
    parts = urlsplit(location)
    if parts.scheme not in ("", "file"):
        return None
    path = unquote(parts.path)
    matches = [name for name in names if path == name or path.endswith("/" + name)
               or (not path.startswith("/") and name.endswith("/" + path))]
    return max(matches, key=len, default=None)
