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
import base64
import binascii
import bisect
import heapq
import json
import logging
from collections import Counter
from collections.abc import AsyncIterator

from cerise.apiserver import errors, workflowjobs
from cerise.apiserver.tenancy import Tenant
from cerise.archive import published, records
from cerise.archive.store import Archive, Cursor, Unavailable
from cerise.kube.cache import Body
from cerise.model.states import Phase

log = logging.getLogger(__name__)
CHUNK = 1000
"""Jobs read from the archive, and handed out, at a time when listing them all."""


def _archive(tenant: Tenant) -> Archive | None:
    return tenant.services.archive


async def chunks(tenant: Tenant, size: int | None = None) -> AsyncIterator[list[Body]]:
    """Every job of the namespace, live and archived, oldest first, in lists of at most
    `size` (`CHUNK`), reading the archive `size` jobs at a time.

    Should the archive fail midway, the rest of the live jobs follow (and the log says so).
    """
    size = size or CHUNK
    live = workflowjobs.listed(tenant)
    archive = _archive(tenant)
    done = 0  # live jobs handed out
    after: Cursor | None = None
    while archive is not None:
        try:
            archived = await archive.page(tenant.namespace, after=after, limit=size,
                                          newest_first=False)
        except Unavailable as error:
            log.warning("listing live jobs only: %s", error)
            break
        last = len(archived) < size
        if last:
            end = len(live)
        else:
            after = records.order(archived[-1])
            # a job both live and archived sits at the same place in both lists, so
            # the live jobs up to the archived chunk's last are all it needs to meet
            end = bisect.bisect_right(live, after, lo=done, key=records.order)
        merged = _merged(live[done:end], archived, newest_first=False)
        done = end
        for start in range(0, len(merged), size):
            yield merged[start:start + size]
        if last:
            return
    for start in range(done, len(live), size):
        yield live[start:start + size]


async def page(tenant: Tenant, *, after: Cursor | None, limit: int,
               newest_first: bool = True) -> list[Body]:
    """Up to `limit` jobs of the namespace past `after`, newest first (or oldest first)."""
    if newest_first:
        live = workflowjobs.newest(tenant, limit, after or workflowjobs.NEWEST)
    else:
        live = workflowjobs.listed(tenant)
        start = 0 if after is None else bisect.bisect_right(live, after, key=records.order)
        live = live[start:start + limit]
    archive = _archive(tenant)
    if archive is None:
        return live[:limit]
    try:
        archived = await archive.page(tenant.namespace, after=after, limit=limit,
                                      newest_first=newest_first)
    except Unavailable as error:
        log.warning("listing live jobs only: %s", error)
        return live[:limit]
    return _merged(live, archived, newest_first=newest_first)[:limit]


def page_token(place: Cursor) -> str:
    """A page token for the jobs past `place`."""
    return base64.urlsafe_b64encode(json.dumps(list(place)).encode()).decode()


def token_place(page_token: str) -> Cursor:
    """The place a page token stands for, or BadRequest."""
    try:
        first, second = json.loads(base64.urlsafe_b64decode(page_token.encode()))
        if isinstance(first, str) and isinstance(second, str):
            return first, second
    except (ValueError, TypeError, binascii.Error):
        pass
    raise errors.BadRequest("the page_token is not one this service gave out")


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
