"""Writing a job's status: a transition (the compare-and-swap, its Event and its job log
line), a message saying why it is held, or observed facts.

The one place a phase changes, for the registry (a new job's first phase) and the
workers. A transition that loses its compare-and-swap is not an error: another writer (a
cancel through the REST API, say) got there first, and the caller decides again from the
newer job — or, for a step that must not be lost (a submitted job, collected outputs),
`carry_out` re-reads the job and follows a cancel that won the race.

A worker of a resource held through its Lease writes under that tenure's fencing token:
`claim` puts the token in a job's `status.fence` before the worker acts on the job, and
every later write of the worker tests it, so that none lands once another replica has
taken the resource over (`cerise.kube.leases`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, cast

import kopf
from lightkube import ApiError, AsyncClient

from cerise.kube import jobs as kube_jobs
from cerise.kube import leases as kube_leases
from cerise.kube import objects
from cerise.kube.jobs import TransitionConflict
from cerise.model import decisions, joblines, leases
from cerise.model.decisions import Move
from cerise.model.leases import FencingToken
from cerise.model.states import Phase
from cerise.operator import joblog, metrics

logger = logging.getLogger(__name__)

Body = dict[str, Any]


class Transitions:
    """Writes transitions of jobs and tells the operator's cache and workers of them."""

    def __init__(self, kube: AsyncClient, *, remember: Callable[[Body], None],
                 log_path: Callable[[Body], Path], changed: Callable[[], None] = lambda: None,
                 fence: FencingToken | None = None) -> None:
        """`fence`: the token every write but a new job's first one carries (None: the
        operator works alone)."""
        self.kube, self.fence = kube, fence
        self._remember, self._log_path, self._changed = remember, log_path, changed

    async def claim(self, bodies: list[Body]) -> list[Body]:
        """The jobs to act on under this tenure: as they are if their fence is ours already
        (or nothing is fenced, or they have no phase yet), with our fence written over an
        older one; not those fenced by a newer tenure, nor those that changed since they
        were read (the next tick decides again)."""
        if self.fence is None:
            return bodies
        ours: list[Body] = []
        older: list[Body] = []
        for body in bodies:
            current = FencingToken.from_status((body.get("status") or {}).get("fence"))
            answer = leases.claim(current, self.fence)
            if answer is leases.Claim.HELD or kube_jobs.phase_of(body) is None:
                ours.append(body)
            elif answer is leases.Claim.WRITE:
                older.append(body)
            else:
                logger.warning("job %s: fenced by a newer tenure (%s) than ours (%s); left "
                               "alone", body["metadata"].get("uid"), current, self.fence)
        written = await asyncio.gather(*(self._claim(body, self.fence) for body in older))
        return ours + [body for body in written if body is not None]

    async def _claim(self, body: Body, fence: FencingToken) -> Body | None:
        try:
            new = await kube_leases.claim_job(self.kube, body, fence)
        except kube_leases.FenceRefused:
            self._changed()
            return None
        self._remember(new)
        return new

    async def change_phase(
        self, body: Body, source: Phase | None, target: Phase, message: str,
        fields: Mapping[str, Any] | None = None,
    ) -> Body | None:
        """CAS `source` → `target` (a new job, `source` None, is guarded by its
        resourceVersion); the new body, or None if another writer got there first."""
        meta = body["metadata"]
        try:
            new = await kube_jobs.transition(
                self.kube, namespace=meta["namespace"], name=meta["name"], source=source,
                target=target, message=message, fields=fields,
                resource_version=meta["resourceVersion"] if source is None else None,
                generation=meta.get("generation"), fence=None if source is None else self.fence)
        except TransitionConflict:
            self._changed()
            return None
        new_body: Body = new.to_dict()  # type: ignore[no-untyped-call]
        self._remember(new_body)
        metrics.transition(meta["namespace"], body["spec"]["computeResource"], source, target)
        level = joblines.level(target)
        kopf.event(cast(kopf.Body, body), type="Warning" if level == "ERROR" else "Normal",
                   reason=target.value,
                   message=f"{source.value if source else 'new'} → {target.value}: {message}")
        await joblog.message(self._log_path(body), level, f"{target.value}: {message}")
        self._changed()
        return new_body

    async def carry_out(self, body: Body, source: Phase, move: Move) -> Body | None:
        """`move` from `source`; if a cancel won the race meanwhile, its cancel-path twin."""
        new = await self.change_phase(body, source, move.target, move.message, move.fields)
        if new is not None:
            return new
        meta = body["metadata"]
        latest = await objects.get_job(self.kube, meta["namespace"], meta["name"])
        if latest is None:
            return None
        phase = kube_jobs.phase_of(latest)
        follow = decisions.after_lost_race(move, source, phase)
        if follow is None or phase is None:
            return None
        return await self.change_phase(latest, phase, follow.target, follow.message, follow.fields)

    async def record_message(self, body: Body, message: str, *, reason: str,
                             fields: Mapping[str, Any] | None = None) -> None:
        """Say why a job is held where it is, in its status message (written with
        `fields`), an Event and its log (once: not again while the message stays the
        same)."""
        if (body.get("status") or {}).get("message") == message:
            return
        if await self.observe(body, {**(fields or {}), "message": message}):
            kopf.event(cast(kopf.Body, body), type="Normal", reason=reason, message=message)
            await joblog.message(self._log_path(body), "INFO", message)

    async def observe(self, body: Body, fields: Mapping[str, Any]) -> bool:
        """Merge observed facts (no phase change, so no compare-and-swap) into the job's
        status; False if that failed (the next tick tries again)."""
        meta = body["metadata"]
        try:
            new = await kube_jobs.patch_status(self.kube, namespace=meta["namespace"],
                                               name=meta["name"], status=fields,
                                               fence=self.fence, current=body.get("status"))
        except (ApiError, TransitionConflict) as error:
            logger.warning("job %s: %s not written: %s", meta.get("uid"),
                           ", ".join(fields), error)
            return False
        self._remember(new.to_dict())  # type: ignore[no-untyped-call]
        return True
