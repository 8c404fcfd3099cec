"""The original Cerise jobs API, as the published cerise-client 0.3.1 speaks it.

`POST /jobs` answers 201 with the job, `DELETE /jobs/{id}` 204, cancel 200 with the job;
`name`, `workflow` and `input` are echoed as submitted; unknown ids answer 404 (the
original answered 500 for some). Beyond the original: an optional `compute_resource`, and
an optional `callback_url` that is POSTed the job's summary when it ends, and
`retry` (the WorkflowJob's `spec.retry`: retrying a run out of time or memory with more);
a job shows what its runs cost once it ended (`accounting`, null before; the client ignores
it).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Sequence
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Path, Query, Request, Response
from fastapi.responses import PlainTextResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from cerise.apiserver import errors, history, json_bodies, workflowjobs
from cerise.apiserver.tenancy import ReadTenant, Tenant, WriteTenant
from cerise.archive import records
from cerise.kube.cache import Body as JobBody
from cerise.model import callbacks, states

router = APIRouter(tags=["Cerise jobs"])

DEFAULT_PAGE = 100
MAX_PAGE = 1000
JobId = Annotated[str, Path(description="The job's id, as `POST /jobs` returned it.",
                            max_length=253)]


class JobDescription(BaseModel):
    """A job to run: a CWL workflow and its input object."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(None, description="A name for the job; need not be unique.")
    workflow: str = Field(description="The URL of a CWL workflow (e.g. uploaded to the file "
                                      "exchange), or the workflow document itself.")
    input: dict[str, Any] = Field(default_factory=dict,
                                  description="The CWL input object.")
    compute_resource: str | None = Field(
        None, description="The ComputeResource to run on (an extension of the original API; "
                          "the service's default when absent).")
    callback_url: str | None = Field(
        None, max_length=callbacks.MAX_URL,
        description="An http(s) URL to POST the job's summary to, signed, when it ends (an "
                    "extension of the original API).")
    retry: dict[str, Any] | None = Field(
        None, description="How a run its time limit or memory ended is retried with more "
                          "(`attempts`, `timeFactor`, `memoryFactor`, `maxTimeSeconds`, "
                          "`maxMemoryMiB`), within the ComputeResource's `retry`; an extension "
                          "of the original API.")


class Job(BaseModel):
    """A job as the Cerise API shows it."""

    id: str
    name: str
    workflow: str
    input: dict[str, Any]
    state: states.RestState
    output: dict[str, Any]
    log: str
    accounting: dict[str, Any] | None = Field(
        None, description="What the job's runs cost, once it ended (an extension): "
                          "`elapsedSeconds`, `cpuSeconds`, `maxRssBytes`, `cores`, "
                          "`coreHours` and who measured them, `source` (`sacct`, "
                          "`jobscript`, `pilot`).")


def present(tenant: Tenant, body: JobBody) -> Job:
    """The REST view of a WorkflowJob."""
    return Job(**_fields(tenant.base_url, body))


def _fields(base_url: str, body: JobBody) -> dict[str, Any]:
    spec, status = body["spec"], body.get("status") or {}
    job_id = body["metadata"]["name"]
    return {"id": job_id, "name": spec.get("name", ""), "workflow": spec["workflow"],
            "input": spec.get("input") or {},
            "state": states.rest_state(workflowjobs.phase(body)),
            "output": status.get("output") or {}, "log": f"{base_url}/jobs/{job_id}/log",
            "accounting": status.get("accounting")}


def _items(base_url: str, bodies: Sequence[JobBody]) -> bytes:
    """The jobs as the comma-separated items of a JSON array."""
    # One dumps per job: a single call would hold the GIL, and so stall the event loop,
    # for the whole list.
    return b",".join(
        json.dumps(_fields(base_url, body), ensure_ascii=False, separators=(",", ":")).encode()
        for body in bodies)


async def _streamed(tenant: Tenant) -> AsyncIterator[bytes]:
    """Every job as one JSON array, a chunk of jobs at a time."""
    # Rendered off the event loop (the cache replaces a job's body on a change, never
    # alters one, so reading them there is safe).
    opening = b"["
    async for bodies in history.chunks(tenant):
        yield opening + await asyncio.to_thread(_items, tenant.base_url, bodies)
        opening = b","
    yield b"]" if opening == b"," else b"[]"


PageSize = Annotated[int | None, Query(ge=1, le=MAX_PAGE, description=(
    "Jobs per page (an extension): answer one page, and a `Link` header to the next."))]
PageToken = Annotated[str | None, Query(max_length=1024, description=(
    "Where the page starts (an extension): from the `Link` header of the page before."))]


@router.get("/jobs", summary="List jobs", response_model=list[Job],
            responses={400: {"description": "The page_token is not one this service gave."}})
async def list_jobs(tenant: ReadTenant, page_size: PageSize = None,
                    page_token: PageToken = None) -> Response:
    """Every job of the namespace, oldest first; or, given `page_size` or `page_token`, a
    page of them, with a `Link` header (`rel="next"`) to the next page unless it is the
    last."""
    if page_size is None and page_token is None:
        return StreamingResponse(_streamed(tenant), media_type="application/json")
    size = page_size or DEFAULT_PAGE
    after = history.token_place(page_token) if page_token else None
    found = await history.page(tenant, after=after, limit=size + 1, newest_first=False)
    more, found = len(found) > size, found[:size]
    content = b"[" + await asyncio.to_thread(_items, tenant.base_url, found) + b"]"
    headers = {}
    if more:
        query = urlencode({"page_size": size,
                           "page_token": history.page_token(records.order(found[-1]))})
        headers["Link"] = f'<{tenant.base_url}/jobs?{query}>; rel="next"'
    return Response(content, media_type="application/json", headers=headers)


@router.post(
    "/jobs", status_code=201, summary="Submit a job",
    responses={400: {"description": "The job is invalid; do not retry it unchanged."},
               415: {"description": "The body is not `application/json`."}},
    # Parsed by hand, to answer 400 (what cerise-client reads as "invalid job"), not 422.
    openapi_extra={"requestBody": {"required": True, "content": {
        "application/json": {"schema": JobDescription.model_json_schema()}}}},
)
async def submit_job(tenant: WriteTenant, request: Request, response: Response) -> Job:
    """Create a job; it starts in state Waiting."""
    # A browser form or no-cors fetch cannot send application/json without asking first.
    kind = request.headers.get("content-type", "").partition(";")[0].strip().lower()
    if kind != "application/json":
        raise errors.UnsupportedMediaType(
            "send the job description as JSON, with 'Content-Type: application/json'")
    found = _description(await request.body())
    created = await workflowjobs.submit(
        tenant, name=found.name, workflow=found.workflow, input_object=found.input,
        resource=found.compute_resource, callback_url=found.callback_url,
        retry=found.retry)
    job = present(tenant, created)
    response.headers["Location"] = f"{tenant.base_url}/jobs/{job.id}"
    return job


def _description(raw: bytes) -> JobDescription:
    """The job description, or BadRequest: cerise-client reads only 400 as "invalid job"."""
    data = json_bodies.parse(raw or b"null", "the request body")
    if not isinstance(data, dict):
        raise errors.BadRequest("the request body must be a JSON object with 'workflow', "
                                "and optionally 'name' and 'input'")
    if data.get("workflow") is None:
        raise errors.BadRequest("the job has no workflow: give the URL of a CWL workflow")
    try:
        return JobDescription.model_validate(data)
    except ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in item['loc']) or 'body'}: {item['msg']}"
            for item in error.errors())
        raise errors.BadRequest(f"the job description is invalid: {problems}") from None


@router.get("/jobs/{job_id}", summary="Get a job")
async def get_job(tenant: ReadTenant, job_id: JobId) -> Job:
    """One job."""
    return present(tenant, await history.find(tenant, job_id))


@router.delete("/jobs/{job_id}", status_code=204, summary="Delete a job")
async def delete_job(tenant: ReadTenant, job_id: JobId) -> Response:
    """Cancel the job if it runs, then remove it with its files and outputs."""
    await history.delete(tenant, job_id)
    return Response(status_code=204)


@router.post("/jobs/{job_id}/cancel", summary="Cancel a job")
async def cancel_job(tenant: ReadTenant, job_id: JobId) -> Job:
    """Ask for the job to be cancelled; its state becomes Cancelled once nothing runs."""
    return present(tenant, await history.cancel(tenant, job_id))


@router.get("/jobs/{job_id}/log", response_class=PlainTextResponse, summary="A job's log")
async def get_log(tenant: ReadTenant, job_id: JobId) -> str:
    """Cerise's messages about the job and the remote runner's log, as text."""
    return await workflowjobs.log_text(tenant, await history.find(tenant, job_id))
