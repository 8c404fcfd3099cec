"""The apiserver's job service: REST requests as WorkflowJob operations.

A job's REST id is its WorkflowJob's object name. The name a client gives is kept in
``spec.name`` and may be any text `cerise.model.names` allows; the object name is derived
from it (lower case, letters, digits and '-') plus a random suffix, so any name the original
Cerise accepted still works. Reads come from the watch-fed cache, which keeps each
namespace's jobs in submission order and counted by phase (`order`, `tally`), and every
write is put into the cache at once, so a client always reads its own writes. A job being
deleted is gone as far as the REST APIs are concerned.
"""

from __future__ import annotations

import asyncio
import logging
import re
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cerise.apiserver import errors
from cerise.apiserver.tenancy import Tenant
from cerise.kube import submission
from cerise.kube.cache import Body
from cerise.kube.jobs import GROUP, VERSION, phase_of
from cerise.model import callbacks, joblines, names, retries
from cerise.model.states import Phase

MAX_WORKFLOW = 262144
"""The longest workflow text a job may carry (the CRD's limit); larger ones go by URL."""
MANAGED_BY = {"app.kubernetes.io/managed-by": "cerise-apiserver"}
_SLUG_DROP = re.compile(r"[^a-z0-9]+")
DELETING = "deleting"
"""The `tally` of a job being deleted."""
NEWEST = ("\uffff", "")
"""A place after every job's (creation time, name)."""
log = logging.getLogger(__name__)


def object_name(name: str | None) -> str:
    """A fresh, valid object name that resembles `name`."""
    slug = _SLUG_DROP.sub("-", (name or "").lower()).strip("-")[:40].strip("-") or "job"
    return f"{slug}-{uuid.uuid4().hex[:12]}"


def check_name(name: str | None) -> None:
    """Refuse a job name that `cerise.model.names` does not allow."""
    problem = None if name is None else names.problem(name)
    if problem is not None:
        raise errors.BadRequest(problem)


def check_workflow(workflow: str) -> None:
    """Refuse a workflow that cannot be a document or a URL of one."""
    if not workflow.strip():
        raise errors.BadRequest("the workflow is empty: give the URL of a CWL workflow or "
                                "the workflow itself")
    if "\x00" in workflow:
        raise errors.BadRequest("the workflow contains a NUL character")
    if len(workflow) > MAX_WORKFLOW:
        raise errors.BadRequest(
            f"the workflow is {len(workflow)} characters long, more than the "
            f"{MAX_WORKFLOW} a job can carry: upload it to the file exchange and give its URL")


def check_callback(url: object) -> None:
    """Refuse a callback URL that `cerise.model.callbacks` does not allow (None: none)."""
    problem = None if url is None else callbacks.url_problem(url)
    if problem is not None:
        raise errors.BadRequest(problem)


def resources(tenant: Tenant) -> list[str]:
    """The names of the namespace's compute resources."""
    return sorted(body["metadata"]["name"]
                  for body in tenant.services.resources.in_namespace(tenant.namespace))


def default_resource(tenant: Tenant) -> str | None:
    """The compute resource jobs go to when they name none, if there is one."""
    default = tenant.services.settings.default_resource
    if default is not None and tenant.namespace == tenant.services.settings.namespace:
        return default
    known = resources(tenant)
    return known[0] if len(known) == 1 else None


def choose_resource(tenant: Tenant, requested: str | None) -> str:
    """The ComputeResource a new job goes to: the one asked for, or the default."""
    known = resources(tenant)
    if requested is not None:
        if requested not in known:
            raise errors.BadRequest(
                f"there is no compute resource {requested[:100]!r} in namespace "
                f"{tenant.namespace!r}; there are: {', '.join(known) or 'none'}")
        return requested
    default = default_resource(tenant)
    if default is not None:
        return default
    if not known:
        raise errors.BadRequest(
            f"namespace {tenant.namespace!r} has no compute resource to run jobs on; an "
            "administrator must create a ComputeResource first")
    raise errors.BadRequest(
        f"namespace {tenant.namespace!r} has several compute resources "
        f"({', '.join(known)}); say which one to use")


async def submit(
    tenant: Tenant, *, name: str | None, workflow: str, input_object: Mapping[str, Any],
    resource: str | None = None, annotations: Mapping[str, str] | None = None,
    job_id: str | None = None, callback_url: str | None = None,
    retry: Mapping[str, Any] | None = None,
) -> Body:
    """Create a job (with its own `retry` settings, if given); return it as stored."""
    check_name(name)
    check_workflow(workflow)
    check_callback(callback_url)
    spec: dict[str, Any] = {"workflow": workflow, "input": dict(input_object),
                            "computeResource": choose_resource(tenant, resource)}
    if retry is not None:
        try:
            retries.parse_policy(retry, "retry")
        except ValueError as error:
            raise errors.BadRequest(str(error)) from None
        spec["retry"] = dict(retry)
    if name is not None:
        spec["name"] = name
    if callback_url is not None:
        spec["callback"] = {"url": callback_url}
    body: Body = {
        "apiVersion": f"{GROUP}/{VERSION}", "kind": "WorkflowJob",
        "metadata": {"name": job_id or object_name(name), "namespace": tenant.namespace,
                     "labels": dict(MANAGED_BY), "annotations": dict(annotations or {})},
        "spec": spec,
    }
    try:
        created = await submission.create(tenant.kube, body)
    except submission.Refused as error:
        raise errors.from_status(error.code, f"the job was refused: {error}") from None
    tenant.services.jobs.remember(created)
    log.info("job submitted to %s", spec["computeResource"], extra=_fields(created))
    return created


def order(body: Body) -> str:
    """What the cache sorts a namespace's jobs by (then by name): their creation time."""
    created: str = body["metadata"].get("creationTimestamp") or ""
    return created


def place(body: Body) -> tuple[str, str]:
    """Where the job is in the cache's order."""
    return order(body), body["metadata"]["name"]


def tally(body: Body) -> str:
    """What the cache counts a namespace's jobs by: their phase, or `DELETING`."""
    return DELETING if _deleting(body) else phase(body).value


def _deleting(body: Body) -> bool:
    return bool(body["metadata"].get("deletionTimestamp"))


def listed(tenant: Tenant) -> list[Body]:
    """The namespace's jobs, oldest first."""
    return [body for body in tenant.services.jobs.in_namespace(tenant.namespace)
            if not _deleting(body)]


def newest(tenant: Tenant, limit: int, before: tuple[str, str] = NEWEST) -> list[Body]:
    """At most `limit` of the namespace's jobs that come before `before`, newest first."""
    found: list[Body] = []
    while len(found) < limit:
        chunk = tenant.services.jobs.after(tenant.namespace, before, limit - len(found),
                                           newest_first=True)
        if not chunk:
            break
        found += [body for body in chunk if not _deleting(body)]
        before = place(chunk[-1])
    return found


def counts(tenant: Tenant) -> dict[Phase, int]:
    """How many of the namespace's jobs are in each phase."""
    return {Phase(key): count for key, count in
            tenant.services.jobs.tallied(tenant.namespace).items() if key != DELETING}


def find(tenant: Tenant, job_id: str) -> Body:
    """The job called `job_id`, or NotFound."""
    body = tenant.services.jobs.get(tenant.namespace, job_id)
    if body is None or _deleting(body):
        raise errors.NotFound(f"there is no job {job_id[:100]!r}")
    return body


async def cancel(tenant: Tenant, job_id: str) -> Body:
    """Ask for the job to be cancelled; return it."""
    find(tenant, job_id)
    try:
        patched = await submission.cancel(tenant.kube, tenant.namespace, job_id)
    except submission.Refused as error:
        raise errors.from_status(error.code, f"the job cannot be cancelled: {error}") from None
    tenant.services.jobs.remember(patched)
    log.info("cancel requested", extra=_fields(patched))
    return patched


async def delete(tenant: Tenant, job_id: str) -> None:
    """Delete the job (the operator stops it and removes its files first)."""
    body = find(tenant, job_id)
    try:
        await submission.delete(tenant.kube, tenant.namespace, job_id)
    except submission.Refused as error:
        raise errors.from_status(error.code, f"the job cannot be deleted: {error}") from None
    deleting = {**body, "metadata": {**body["metadata"], "deletionTimestamp": "deleting"}}
    tenant.services.jobs.remember(deleting)
    log.info("job deleted", extra=_fields(body))


def _fields(body: Body) -> dict[str, str]:
    """The log fields that name a job."""
    return {"job": body["metadata"]["name"], "namespace": body["metadata"]["namespace"]}


def phase(body: Body) -> Phase:
    """The job's phase (Submitted until the operator has seen it)."""
    return phase_of(body) or Phase.SUBMITTED


async def log_text(tenant: Tenant, body: Body) -> str:
    """The job's log: Cerise's messages and the runner's (empty before the first line),
    ending with why the job ended once it has (`joblines.as_read`)."""
    path = tenant.exchange.log_path(body["metadata"]["uid"])
    return joblines.as_read(await asyncio.to_thread(_read_text, path), body.get("status"))


def _read_text(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except FileNotFoundError:
        return ""
