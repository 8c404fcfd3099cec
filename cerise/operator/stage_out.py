"""Staging a job out: `Finished` → `StagingOut` → outputs to the file exchange → the final
phase, from the runner's exit code and log (`cerise.model.results`,
`cerise.model.decisions.finish_message`), with what the runs cost
(`cerise.operator.accounting`); a cancel meanwhile keeps what was collected.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from cerise.kube import jobs as kube_jobs
from cerise.model import decisions, results, steps
from cerise.model.decisions import Move
from cerise.model.states import Phase
from cerise.operator import metrics
from cerise.operator.accounting import RunAccounting
from cerise.operator.context import Body, ResourceContext, key_of
from cerise.operator.progress import ProgressWriter
from cerise.operator.runner_log import CHUNK, RunnerLog
from cerise.remote import staging


class StageOut:
    """Collects one resource's finished jobs' outputs."""

    def __init__(self, context: ResourceContext, log: RunnerLog) -> None:
        self.context, self.log = context, log
        self.accounting = RunAccounting(context)

    async def run(self, body: Body) -> None:
        """Advance a job in `Finished`, `StagingOut` or `StagingOutCR` to its end."""
        if kube_jobs.phase_of(body) not in (Phase.FINISHED, Phase.STAGING_OUT,
                                            Phase.STAGING_OUT_CR):
            return
        # What the runs cost is read meanwhile, with the other jobs ending now.
        measuring = asyncio.create_task(self.accounting.measure(body))
        try:
            await self._collect(body, measuring)
        finally:
            measuring.cancel()

    async def _collect(self, body: Body, measuring: asyncio.Task[dict[str, Any] | None]
                       ) -> None:
        context = self.context
        phase = kube_jobs.phase_of(body)
        if phase is Phase.FINISHED:
            lines = await self.log.read(body)  # the last steps ride on this transition
            moved = await context.transitions.change_phase(body, phase, Phase.STAGING_OUT,
                                                           "collecting outputs", lines.fields())
            if moved is None:
                return
            await self.log.commit(body, lines, written=True)
            body, phase = moved, Phase.STAGING_OUT
        else:
            await self.log.follow(body)
        assert phase is not None
        files = context.files(body)
        meta = body["metadata"]
        started = time.monotonic()
        async with ProgressWriter(context.kube, namespace=meta["namespace"], name=meta["name"],
                                  direction="out", written=context.remember) as progress:
            output = await staging.stage_out(context.remote, files, context.exchange,
                                             key_of(body), progress=progress)
            # The last progress rides on the final transition, not on a write of its own.
            fields: dict[str, Any] = {**await progress.hand_over(body.get("status") or {}),
                                      "output": output}
        metrics.staging(context.namespace, context.name, "out", progress.done,
                        time.monotonic() - started)
        cost = await measuring
        if cost is not None:
            fields["accounting"] = cost
        if phase is Phase.STAGING_OUT_CR:
            self._count(await context.transitions.change_phase(
                body, phase, Phase.CANCELLED, "cancelled; partial outputs kept", fields))
            return
        end = context.tracked(body).log_offset or 0
        tail = await context.remote.read(files.stderr, max(0, end - CHUNK), 2 * CHUNK)
        log_tail = tail.decode(errors="replace")
        final, message = decisions.finish_message(
            *results.final_phase(body["status"].get("exitCode"), log_tail),
            end_reason=body["status"].get("endReason"), failed_step=steps.failure(log_tail))
        self._count(await context.transitions.carry_out(body, phase,
                                                        Move(final, message, fields)))

    def _count(self, ended: Body | None) -> None:
        """Count the runs' cost in the metrics on the transition that recorded it (once:
        a job in a final phase is never staged out again)."""
        figures = ((ended or {}).get("status") or {}).get("accounting")
        if figures:
            metrics.run_accounted(self.context.namespace, self.context.name, figures)
