"""One history: the namespace's live jobs (the watch-fed cache) and its archived ones (the
archive), merged in one order with the same ids.

An archived job is shown as the WorkflowJob it was (`cerise.archive.records`), so every
door presents it as it presented the live one. A job both live and archived (the moment
between its archiving and its deletion) is shown once, live. Without an archive
(CERISE_ARCHIVE_URL unset) this is the live jobs alone. While the archive cannot be
reached, lists hold the live jobs only (and the log says so) and an archived job answers
503: the history is late, not lost.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
from collections import Counter

from cerise.apiserver import errors, workflowjobs
from cerise.apiserver.tenancy import Tenant
from cerise.archive import published, records
from cerise.archive.store import Archive, Cursor, Unavailable
from cerise.kube.cache import Body
from cerise.model.states import Phase

log = logging.getLogger(__name__)
CHUNK = 1000
"""Archived jobs read per query when listing them all."""


def _archive(tenant: Tenant) -> Archive | None:
    return tenant.services.archive


async def listed(tenant: Tenant) -> list[Body]:
    """Every job of the namespace, live and archived, oldest first."""
    live = workflowjobs.listed(tenant)
    archive = _archive(tenant)
    if archive is None:
        return live
    archived: list[Body] = []
    after: Cursor | None = None
    try:
        while True:
            chunk = await archive.page(tenant.namespace, after=after, limit=CHUNK,
                                       newest_first=False)
            archived += chunk
            if len(chunk) < CHUNK:
                break
            after = records.order(chunk[-1])
    except Unavailable as error:
        log.warning("listing live jobs only: %s", error)
        return live
    return _merged(live, archived, newest_first=False)


async def page(tenant: Tenant, *, after: Cursor | None, limit: int) -> list[Body]:
    """Up to `limit` jobs of the namespace past `after`, newest first."""
    live = workflowjobs.newest(tenant, limit, after or workflowjobs.NEWEST)
    archive = _archive(tenant)
    if archive is None:
        return live[:limit]
    try:
        archived = await archive.page(tenant.namespace, after=after, limit=limit,
                                      newest_first=True)
    except Unavailable as error:
        log.warning("listing live jobs only: %s", error)
        return live[:limit]
    return _merged(live, archived, newest_first=True)[:limit]


async def counts(tenant: Tenant) -> dict[Phase, int]:
    """How many of the namespace's jobs, live and archived, are in each phase."""
    live = workflowjobs.counts(tenant)
    archive = _archive(tenant)
    if archive is None:
        return live
    try:
        archived = await archive.counts(tenant.namespace)
    except Unavailable as error:
        log.warning("counting live jobs only: %s", error)
        return live
    # a job archived a moment ago and not yet pruned is counted twice, briefly
    return dict(Counter(live) + Counter({Phase(key): n for key, n in archived.items()}))


def _merged(live: list[Body], archived: list[Body], *, newest_first: bool) -> list[Body]:
    """Both lists (each in order) as one, a job in both shown live."""
    uids = {body["metadata"]["uid"] for body in live}
    rest = [body for body in archived if body["metadata"]["uid"] not in uids]
    return list(heapq.merge(live, rest, key=records.order, reverse=newest_first))


async def find(tenant: Tenant, job_id: str) -> Body:
    """The job called `job_id`, live or archived, or NotFound."""
    try:
        return workflowjobs.find(tenant, job_id)
    except errors.NotFound:
        archive = _archive(tenant)
        if archive is None:
            raise
    try:
        body = await archive.get(tenant.namespace, job_id)
    except Unavailable:
        raise errors.Unavailable(
            f"job {job_id[:100]!r} is not running now and the archive of finished jobs "
            "cannot be reached; try again later") from None
    if body is None:
        raise errors.NotFound(f"there is no job {job_id[:100]!r}")
    return body


async def delete(tenant: Tenant, job_id: str) -> None:
    """Delete the job: a live one through Kubernetes (the operator cleans up), an archived
    one here (its row, then its outputs and log)."""
    archive = _archive(tenant)
    try:
        live = workflowjobs.find(tenant, job_id)
    except errors.NotFound:
        if archive is None:
            raise
    else:
        await workflowjobs.delete(tenant, job_id)
        if archive is not None:  # it may have been archived a moment ago
            try:
                await archive.remove(tenant.namespace, live["metadata"]["uid"])
            except Unavailable as error:
                log.warning("job %s deleted, its archive row (if any) not: %s", job_id, error)
        return
    body = await find(tenant, job_id)
    await tenant.require("delete")
    try:
        await archive.remove(tenant.namespace, body["metadata"]["uid"])
    except Unavailable:
        raise errors.Unavailable(
            "the archive of finished jobs cannot be reached; try again later") from None
    await asyncio.to_thread(published.remove, tenant.exchange, body["metadata"]["uid"])
    log.info("archived job deleted", extra={"job": job_id, "namespace": tenant.namespace})


async def cancel(tenant: Tenant, job_id: str) -> Body:
    """Ask for the job to be cancelled; an archived job has ended, and stays as it is."""
    try:
        workflowjobs.find(tenant, job_id)
    except errors.NotFound:
        return await find(tenant, job_id)
    return await workflowjobs.cancel(tenant, job_id)
