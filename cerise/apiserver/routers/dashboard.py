"""The web dashboard at ``/``: the jobs, a job's page, the compute resources.

Pages are shells that hold no job data. A small script (``static/dashboard.js``) fills
them with HTML fragments rendered here, polls those for changes, follows a job's log from
an offset, and cancels and deletes through the jobs API. The fragments need the same read
access as the jobs API. In cluster mode the script sends ``Authorization: Bearer`` with
the token the person pasted into its sign-in form (kept in the tab's sessionStorage
only), or a proxy in front adds the header; see docs/rest-api.md. Not in the OpenAPI
schema.
"""

from __future__ import annotations

import asyncio
import datetime
import hashlib
import json
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

import jinja2
from fastapi import APIRouter, Query, Request, Response
from fastapi import Path as PathParam
from fastapi.responses import FileResponse, HTMLResponse, PlainTextResponse
from fastapi.templating import Jinja2Templates

from cerise.apiserver import errors, history, tenancy, workflowjobs
from cerise.apiserver.settings import AuthMode
from cerise.apiserver.tenancy import ReadTenant
from cerise.kube.cache import Body, version
from cerise.model import accounting, names, states
from cerise.model.states import Phase, RestState

router = APIRouter(include_in_schema=False)

_PACKAGE = Path(__file__).resolve().parent.parent
TEMPLATES = Jinja2Templates(env=jinja2.Environment(
    loader=jinja2.FileSystemLoader(_PACKAGE / "templates"), autoescape=True,
    undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True))
STATIC = _PACKAGE / "static"
STATIC_TYPES = {"dashboard.js": "text/javascript", "dashboard.css": "text/css",
                "cerise.svg": "image/svg+xml"}
PAGE_HEADERS = {
    # Scripts and styles come only from static/: no inline code, so an injected tag is inert.
    "Content-Security-Policy": (
        "default-src 'self'; object-src 'none'; base-uri 'none'; "
        "form-action 'self'; frame-ancestors 'none'"),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}
FRAGMENT_HEADERS = {**PAGE_HEADERS, "Cache-Control": "no-store"}
LOG_OFFSET = "X-Log-Offset"
LIST_LIMIT = 100
"""Jobs the list shows unless asked for all."""
ALL_LIMIT = 1000
"""Jobs the list shows when asked for all: a longer table takes seconds to render and is no
use to read; `cerise list` and ``GET /jobs`` list every job."""
_STARTED = uuid.uuid4().hex
"""Part of every ETag, so that a new version of the templates is never taken for an old."""

JobId = Annotated[str, PathParam(max_length=253)]
ShowAll = Annotated[bool, Query(alias="all")]

_TONES = {
    RestState.WAITING: "waiting", RestState.RUNNING: "running", RestState.SUCCESS: "success",
    RestState.CANCELLED: "cancelled", RestState.PERMANENT_FAILURE: "failed",
    RestState.TEMPORARY_FAILURE: "failed", RestState.SYSTEM_ERROR: "failed",
}
_LABELS = {
    RestState.PERMANENT_FAILURE: "Permanent failure",
    RestState.TEMPORARY_FAILURE: "Temporary failure", RestState.SYSTEM_ERROR: "System error",
}
_DETAILS = {
    Phase.SUBMITTED: "being checked", Phase.STAGING_IN: "staging inputs in",
    Phase.WAITING: "queued", Phase.FINISHED: "collecting outputs",
    Phase.STAGING_OUT: "staging outputs out",
}
_SUMMARY = (("running", "active"), ("success", "succeeded"), ("failed", "failed"),
            ("cancelled", "cancelled"))
_STEP_TONES = {"Running": "running", "Success": "success", "Skipped": "cancelled"}


@dataclass(frozen=True)
class StepView:
    """One step of a job, as its page shows it."""

    name: str
    tone: str
    label: str
    started: str
    duration: str


@dataclass(frozen=True)
class OutputView:
    """One value of a job's output object: a link to a file, or a plain value."""

    name: str
    label: str
    url: str | None = None
    size: str = ""


@dataclass(frozen=True)
class JobView:
    """A job as the dashboard shows it."""

    id: str
    name: str
    state: str
    """The REST state (what cerise-client and the tests read)."""
    label: str
    tone: str
    detail: str
    phase: str
    resource: str
    created: str
    finished: str
    duration: str
    message: str
    final: bool
    cancellable: bool
    steps: list[StepView]
    steps_ended: int
    outputs: list[OutputView]
    cost: str = ""
    """What its runs cost (`cerise.model.accounting.describe`), once it ended."""


@dataclass(frozen=True)
class ResourceView:
    """A compute resource and how the operator finds it."""

    name: str
    scheduler: str
    host: str
    tone: str
    connection: str
    last_error: str
    last_poll: str
    projects: list[tuple[str, str]]


def parse_time(stamp: str | None) -> datetime.datetime | None:
    """A Kubernetes timestamp as a datetime (None for none or garbage)."""
    try:
        return datetime.datetime.fromisoformat(stamp) if stamp else None
    except ValueError:
        return None


def show_time(stamp: str | None) -> str:
    """A timestamp for people: ``2025-01-31 14:05:09 UTC``."""
    moment = parse_time(stamp)
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC") if moment else ""


def duration(start: str | None, end: str | None) -> str:
    """How long from `start` to `end`, e.g. ``1 min 5 s`` (empty unless both are known)."""
    begun, ended = parse_time(start), parse_time(end)
    if begun is None or ended is None:
        return ""
    seconds = max(0, round((ended - begun).total_seconds()))
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    if hours:
        return f"{hours} h {minutes} min"
    return f"{minutes} min {seconds} s" if minutes else f"{seconds} s"


def file_size(size: object) -> str:
    """A byte count for people: ``812 B``, ``1.4 kB``, ``3.0 MB``."""
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        return ""
    if size < 1000:
        return f"{size} B"
    amount = float(size)
    for unit in ("kB", "MB", "GB"):
        amount /= 1000
        if amount < 1000:
            return f"{amount:.1f} {unit}"
    return f"{amount / 1000:.1f} TB"


def outputs(output: Mapping[str, Any]) -> list[OutputView]:
    """The output object as rows: every File and Directory (in arrays and listings too)
    with a link, any other value as JSON."""
    return [row for name, value in output.items() for row in _output_rows(name, value, "")]


def _output_rows(name: str, value: object, within: str) -> Iterator[OutputView]:
    if isinstance(value, list):
        for item in value:
            yield from _output_rows(name, item, within)
        return
    if not (isinstance(value, dict) and value.get("class") in ("File", "Directory")):
        yield OutputView(name, json.dumps(value, ensure_ascii=False))
        return
    location = str(value.get("location") or "")
    basename = str(value.get("basename") or location.rstrip("/").rsplit("/", 1)[-1])
    label = within + basename
    # Only the exchange's own http(s) URLs become links, never e.g. javascript:.
    url = location if location.startswith(("http://", "https://")) else None
    yield OutputView(name, label + ("/" if value["class"] == "Directory" else ""), url,
                     file_size(value.get("size")))
    for secondary in value.get("secondaryFiles") or []:
        yield from _output_rows(name, secondary, within)
    for entry in value.get("listing") or []:
        yield from _output_rows(name, entry, f"{label}/")


def _steps(status: Mapping[str, Any], final: bool) -> list[StepView]:
    found = []
    for step in status.get("steps") or []:
        state = str(step.get("state", ""))
        tone, label = _STEP_TONES.get(state, "failed"), state
        if state == "Running" and final:
            # A killed runner logs no end for its steps (docs/job-states.md).
            tone, label = "stopped", "Did not finish"
        found.append(StepView(
            name=str(step.get("name", "")), tone=tone, label=label,
            started=show_time(step.get("startTime")),
            duration=duration(step.get("startTime"), step.get("endTime"))))
    return found


def _detail(phase: Phase, steps: list[StepView]) -> str:
    """What a job that is not final is doing, in a few words."""
    if phase is not Phase.RUNNING:
        return _DETAILS.get(phase, "")
    running = [step.name for step in steps if step.tone == "running"]
    if running:
        return f"step {', '.join(running[-2:])}"
    return "" if steps else "starting"


def tone(phase: Phase) -> str:
    """The colour a job in `phase` is shown in."""
    return "cancelled" if phase in states.CANCELLING else _TONES[states.rest_state(phase)]


def job_view(body: Body) -> JobView:
    """What the dashboard shows of a WorkflowJob."""
    spec, status, meta = body["spec"], body.get("status") or {}, body["metadata"]
    phase = workflowjobs.phase(body)
    state = states.rest_state(phase)
    final = phase in states.FINAL
    cancelling = phase in states.CANCELLING
    steps = _steps(status, final)
    return JobView(
        id=meta["name"], name=names.printable(spec.get("name") or meta["name"]),
        state=state.value,
        label="Cancelling" if cancelling else _LABELS.get(state, state.value),
        tone=tone(phase),
        detail="" if final or cancelling else _detail(phase, steps),
        phase=phase.value, resource=spec.get("computeResource", ""),
        created=meta.get("creationTimestamp") or "",
        finished=status.get("finishedAt") or "",
        duration=duration(meta.get("creationTimestamp"), status.get("finishedAt")),
        message=status.get("message") or "", final=final,
        cancellable=states.cancel_target(phase) is not None,
        steps=steps, steps_ended=sum(step.tone in ("success", "cancelled") for step in steps),
        outputs=outputs(status.get("output") or {}),
        cost=accounting.describe(status["accounting"]) if status.get("accounting") else "",
    )


def summary(counts: Mapping[Phase, int]) -> list[tuple[str, str, int]]:
    """(tone, label, count) for every kind of job there is, from the jobs in each phase."""
    # Waiting jobs count as active too: the pill has the colour of running ones.
    tones: Counter[str] = Counter()
    for phase, count in counts.items():
        tones[tone(phase).replace("waiting", "running")] += count
    return [(kind, label, tones[kind]) for kind, label in _SUMMARY if tones[kind]]


def resource_view(body: Body) -> ResourceView:
    """What the dashboard shows of a ComputeResource."""
    spec, status = body.get("spec") or {}, body.get("status") or {}
    jobs = spec.get("jobs") or {}
    tone, connection = "waiting", "Not contacted yet"
    if status.get("connected") is True:
        tone, connection = "success", "Connected"
    elif status.get("connected") is False:
        tone, connection = "failed", "Not connected"
    port = jobs.get("port")
    host = ("this machine" if jobs.get("protocol") == "local"
            else str(jobs.get("host", "")) + (f":{port}" if port and port != 22 else ""))
    return ResourceView(
        name=body["metadata"]["name"], scheduler=jobs.get("scheduler") or "none", host=host,
        tone=tone, connection=connection, last_error=status.get("lastError") or "",
        last_poll=status.get("lastPoll") or "",
        projects=[(str(project.get("name", "")), str(project.get("version", "")))
                  for project in status.get("installedProjects") or []],
    )


def _page(request: Request, template: str, **context: object) -> HTMLResponse:
    """A page shell for the namespace in the path; it needs no credentials to load."""
    settings = tenancy.services(request).settings
    root = request.scope.get("root_path", "").rstrip("/")
    namespace = request.path_params.get("namespace")
    base = root if namespace is None else f"{root}/ns/{quote(namespace, safe='')}"
    return TEMPLATES.TemplateResponse(request, template, {
        "root": root, "base": base, "namespace": namespace or settings.namespace,
        "cluster": settings.auth is AuthMode.KUBERNETES, **context,
    }, headers=PAGE_HEADERS)


def _versions(bodies: list[Body]) -> str:
    """What identifies the versions of `bodies`."""
    return "|".join(f"{body['metadata']['name']}@{version(body)}" for body in bodies)


async def _fragment(request: Request, template: str, shown: str,
                    context: Callable[[], dict[str, object]]) -> Response:
    """`template` rendered with `context()`, or 304 if the client has it already. A
    fragment depends only on the objects it shows and the request (ages are the script's
    work), so `shown`, which changes when they do, makes its ETag; an unchanged poll
    renders nothing. Rendering runs off the event loop (a table of every job is slow), so
    `context` must read only what its caller took from the cache."""
    digest = hashlib.sha256(f"{_STARTED}|{request.url.path}?{request.url.query}|{shown}"
                            .encode()).hexdigest()[:32]
    headers = {**FRAGMENT_HEADERS, "ETag": f'"{digest}"'}
    if request.headers.get("if-none-match") == headers["ETag"]:
        return Response(status_code=304, headers=headers)
    return await asyncio.to_thread(
        lambda: TEMPLATES.TemplateResponse(request, template, context(), headers=headers))


@router.get("/", response_class=HTMLResponse)
async def jobs_page(request: Request, show_all: ShowAll = False) -> HTMLResponse:
    """The jobs and the compute resources."""
    return _page(request, "jobs.html", show_all=show_all)


@router.get("/ui/jobs/{job_id}", response_class=HTMLResponse)
async def job_page(request: Request, job_id: JobId) -> HTMLResponse:
    """One job: its state, steps, outputs and log."""
    return _page(request, "job.html", job_id=job_id)


@router.get("/ui/fragments/jobs", response_class=HTMLResponse)
async def jobs_fragment(
    request: Request, tenant: ReadTenant, show_all: ShowAll = False,
) -> Response:
    """The jobs table, newest first: the newest `LIST_LIMIT`, or `ALL_LIMIT` if `show_all`."""
    revision = tenant.services.jobs.revision(tenant.namespace)
    counts = await history.counts(tenant)
    shown = await history.page(tenant, after=None,
                               limit=ALL_LIMIT if show_all else LIST_LIMIT)
    return await _fragment(request, "_jobs.html", f"jobs@{revision}", lambda: {
        "jobs": [job_view(body) for body in shown], "total": sum(counts.values()),
        "summary": summary(counts), "base": tenant.prefix, "show_all": show_all})


@router.get("/ui/fragments/jobs/{job_id}", response_class=HTMLResponse)
async def job_fragment(request: Request, tenant: ReadTenant, job_id: JobId) -> Response:
    """A job's state, steps and outputs."""
    body = await history.find(tenant, job_id)
    return await _fragment(request, "_job.html", _versions([body]), lambda: {"job": job_view(body)})


@router.get("/ui/fragments/jobs/{job_id}/log", response_class=PlainTextResponse)
async def log_fragment(
    tenant: ReadTenant, job_id: JobId, offset: Annotated[int, Query(ge=0)] = 0,
) -> PlainTextResponse:
    """The job log's complete lines from byte `offset` on; the header `X-Log-Offset` says
    where the next request starts. The log is append-only and bounded, so this is cheap."""
    body = await history.find(tenant, job_id)
    path = tenant.exchange.log_path(body["metadata"]["uid"])
    data = await asyncio.to_thread(_read_lines, path, offset)
    return PlainTextResponse(data.decode(errors="replace"), headers={
        **FRAGMENT_HEADERS, LOG_OFFSET: str(offset + len(data))})


def _read_lines(path: Path, offset: int) -> bytes:
    try:
        with path.open("rb") as log:
            log.seek(offset)
            data = log.read()
    except FileNotFoundError:
        return b""
    return data[: data.rfind(b"\n") + 1]


@router.get("/ui/fragments/resources", response_class=HTMLResponse)
async def resources_fragment(request: Request, tenant: ReadTenant) -> Response:
    """The namespace's compute resources."""
    found = sorted(tenant.services.resources.in_namespace(tenant.namespace),
                   key=lambda body: str(body["metadata"]["name"]))
    return await _fragment(request, "_resources.html", _versions(found), lambda: {
        "resources": [resource_view(body) for body in found]})


@router.get("/ui/static/{name}")
async def static(name: str) -> FileResponse:
    """The dashboard's script, style sheet and icon."""
    media_type = STATIC_TYPES.get(name)
    if media_type is None:
        raise errors.NotFound(f"there is no file {name[:100]!r}")
    return FileResponse(STATIC / name, media_type=media_type,
                        headers={"Cache-Control": "no-cache"})
