"""What an ended run cost, read for one resource's stage-outs (`cerise.model.accounting`).

A job whose outputs are collected asks `RunAccounting.measure` for its figures; the jobs
that ask within `COALESCE` seconds of each other are read with ONE remote command (their
attempts' own measurements and, on Slurm, one `sacct` for all of them). A Slurm job whose
record sacct has not closed yet (its controller tells slurmdbd a moment after the job
script ends) is asked about again every `SETTLE_INTERVAL` seconds, with the others still
waiting, for up to `SETTLE_LIMIT` seconds; then its own figures stand. Where sacct says
accounting is off, it is not asked again for `DISABLED_RECHECK` seconds.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field, replace
from typing import Any

from cerise.model import accounting
from cerise.operator import metrics
from cerise.operator.allocations import is_pilot_run
from cerise.operator.context import Body, ResourceContext, key_of
from cerise.remote import accounting as remote_accounting
from cerise.remote.accounting import Measured

logger = logging.getLogger(__name__)

COALESCE = 0.005
"""Seconds the first job to ask waits for others to ask with it: the jobs a poll saw end
start their stage-out in the same tick of the worker, and ask within a few passes of the
event loop. Short, as a job's final transition waits for its answer."""
SETTLE_INTERVAL = 1.0
SETTLE_LIMIT = 30.0
DISABLED_RECHECK = 600.0

Status = dict[str, Any] | None


@dataclass
class _Asking:
    job: Measured
    pilot: bool
    since: float
    answer: asyncio.Future[Status] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future())


def measured(body: Body, context: ResourceContext) -> tuple[Measured, bool]:
    """What to read of the job's runs, and whether they ran in pilot mode."""
    status = body.get("status") or {}
    current = context.files(body)
    files = [replace(current, attempt=number) for number in range(1, current.attempt + 1)]
    remote_id = str(status.get("remoteJobId") or "")
    pilot = is_pilot_run(remote_id)
    ids: list[str] = []
    if context.scheduler.name == "slurm" and not pilot:
        earlier = {int(attempt.get("number") or 0): str(attempt.get("remoteJobId") or "")
                   for attempt in status.get("attempts") or []}
        ids = [earlier.get(number, "") for number in range(1, current.attempt)] + [remote_id]
    return Measured(key_of(body), [run.accounting for run in files], ids), pilot


class RunAccounting:
    """Reads the figures of one resource's ended runs, many jobs at once."""

    def __init__(self, context: ResourceContext) -> None:
        self.context = context
        self._asking: dict[str, _Asking] = {}
        self._reader: asyncio.Task[None] | None = None
        self._sacct_off_until = float("-inf")

    async def measure(self, body: Body) -> Status:
        """The job's `status.accounting` (None: nothing measured its runs)."""
        job, pilot = measured(body, self.context)
        asking = _Asking(job, pilot, time.monotonic())
        self._asking[job.key] = asking
        if self._reader is None or self._reader.done():
            self._reader = asyncio.create_task(self._read(), name="run-accounting")
        try:
            return await asking.answer
        finally:
            if self._asking.get(job.key) is asking:
                del self._asking[job.key]

    async def _read(self) -> None:
        """Read for every job asking, until none is left."""
        pause = COALESCE
        while self._asking:
            await asyncio.sleep(pause)
            pause = SETTLE_INTERVAL
            asking = [ask for ask in self._asking.values() if not ask.answer.done()]
            if not asking:
                continue
            sacct_on = time.monotonic() >= self._sacct_off_until
            jobs = [ask.job if sacct_on else replace(ask.job, sacct_ids=()) for ask in asking]
            context = self.context
            try:
                with metrics.scheduler_command(context.namespace, context.name, "accounting"):
                    result = await remote_accounting.read(context.remote, jobs,
                                                          context.prologue)
            except Exception as error:
                for ask in asking:
                    if not ask.answer.done():
                        ask.answer.set_exception(error)
                continue
            if result.sacct_disabled:
                self._sacct_off_until = time.monotonic() + DISABLED_RECHECK
            elif not result.sacct_answered and any(job.sacct_ids for job in jobs):
                logger.info("resource %s/%s: sacct did not answer (%s); runs keep their own "
                            "figures", self.context.namespace, self.context.name,
                            result.sacct_words or "no words")
            now = time.monotonic()
            for ask, job in zip(asking, jobs, strict=True):
                records = ([result.sacct.get(job_id) if job_id else _NO_RECORD
                            for job_id in job.sacct_ids]
                           if job.sacct_ids and result.sacct_answered else None)
                settled = accounting.settle(
                    result.measured.get(job.key, ()), records, pilot=ask.pilot,
                    give_up=now - ask.since >= SETTLE_LIMIT)
                if settled is not None and not ask.answer.done():
                    ask.answer.set_result(settled.status)


_NO_RECORD = accounting.SacctJob(accounting.Figures(), final=True)
"""An attempt without a Slurm id: nothing to wait for."""
