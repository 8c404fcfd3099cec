"""Pilot mode for one resource worker: its allocations, the one status command for them and
their runs, and requests for new allocations as the work asks.

The worker hands runs over to the queue (`queue`, used as the scheduler of a run's
submit and cancel) and asks `poll` for every pilot run's state; this module keeps what it
knows of the allocations between refreshes (recovered from the resource's file system
after a restart), ends with what `cerise.model.pilot` decides, and says what the
resource's status shows of them.
"""

from __future__ import annotations

import datetime
import logging
import secrets
import time
from collections.abc import Sequence
from typing import Any

from cerise.model import pilot as decisions
from cerise.model.observations import RemoteState, SubmitOutcome
from cerise.model.pilot import Allocation, AllocationState, PilotSpec
from cerise.model.submissions import SubmitBudget
from cerise.operator import metrics
from cerise.remote import executor
from cerise.remote.jobscript import JobFiles
from cerise.remote.pilot import executor as pilot_executor
from cerise.remote.pilot.agent import AgentSettings
from cerise.remote.pilot.layout import PilotLayout
from cerise.remote.pilot.queue import PilotQueue
from cerise.remote.pilot.requeue import RequeueResult
from cerise.remote.pilot.status import AllocationSighting, PilotStatus, RunVerdict
from cerise.remote.protocol import Remote
from cerise.remote.schedulers import JobRef, Scheduler

logger = logging.getLogger(__name__)

REMOTE_ID_PREFIX = "pilot:"
"""How the remote id of a run handed to the pilot queue begins."""


def is_pilot_run(remote_id: str) -> bool:
    """Whether a job with this remote id was handed to the pilot queue (not a batch job)."""
    return remote_id.startswith(REMOTE_ID_PREFIX)


class Allocations:
    """The allocations of one compute resource in pilot mode."""

    def __init__(self, *, namespace: str, resource: str, spec: PilotSpec, remote: Remote,
                 scheduler: Scheduler, base: str, prologue: str, budget: SubmitBudget) -> None:
        self.namespace, self.resource, self.spec = namespace, resource, spec
        self.remote, self.scheduler, self.prologue, self.budget = (
            remote, scheduler, prologue, budget)
        self.layout = PilotLayout.under(base)
        self.queue = PilotQueue(self.layout)
        """The runs' scheduler: submitting a run hands it over to the queue."""
        self.known: dict[str, str] = {}
        """Allocation name → its batch scheduler id."""
        self.seen: dict[str, AllocationSighting] = {}
        self.problem = ""
        """Why allocations cannot be had (a refused submit), for the resource's status."""
        self._settings = AgentSettings(cores=spec.cores, time_limit=spec.time_limit,
                                       idle=spec.idle, margin=spec.margin)

    async def poll(self, runs: Sequence[JobRef]) -> PilotStatus:
        """Every allocation and the pilot `runs`, from one remote command; allocations found
        on the resource that this worker did not know of (after a restart) are adopted."""
        refs = [pilot_executor.allocation_ref(self.layout, name, remote_id)
                for name, remote_id in self.known.items()]
        with metrics.scheduler_command(self.namespace, self.resource, "status"):
            status = await pilot_executor.poll(self.remote, self.scheduler, self.queue, refs,
                                               runs, self.prologue)
        for name, sighting in status.allocations.items():
            if name not in self.known and sighting.remote_id:
                self.known[name] = sighting.remote_id
        self.seen = {name: s for name, s in status.allocations.items() if name in self.known}
        return status

    async def requeue(self, files: JobFiles, allocation: str) -> RequeueResult:
        """Put a run of a gone allocation back into the queue."""
        return await pilot_executor.requeue_run(self.remote, self.layout, files, allocation)

    async def follow(self, status: PilotStatus) -> None:
        """After a poll: remove ended allocations that hold nothing; request one more if the
        waiting runs want it and the scheduler's caps allow."""
        for name, sighting in list(self.seen.items()):
            if sighting.gone and not sighting.runs and \
                    await pilot_executor.remove_allocation(self.remote, self.layout, name):
                self.known.pop(name, None)
                self.seen.pop(name, None)
        waiting = sum(run.verdict is RunVerdict.WAITING for run in status.runs.values())
        allocations = [Allocation(name, _state(s)) for name, s in self.seen.items()]
        if not decisions.allocations_wanted(self.spec, allocations, waiting):
            return
        now = time.monotonic()
        active = sum(a.state is not AllocationState.ENDED for a in allocations)
        if self.budget.refusal(now, active) is not None:
            return
        self.budget.record(now)
        name = f"{int(time.time())}-{secrets.token_hex(3)}"
        with metrics.scheduler_command(self.namespace, self.resource, "submit"):
            result = await pilot_executor.submit_allocation(
                self.remote, self.scheduler, self.layout, name, self._settings, self.prologue)
        if result.outcome is SubmitOutcome.SUBMITTED:
            self.known[name] = result.remote_id
            self.problem = ""
            logger.info("resource %s/%s: allocation %s submitted as %s", self.namespace,
                        self.resource, name, result.remote_id)
        elif result.outcome is SubmitOutcome.REFUSED:
            self.problem = f"the scheduler refused pilot mode's allocation: {result.detail}"
        else:  # a passing failure: asked again at the next refresh
            logger.warning("resource %s/%s: allocation not submitted: %s", self.namespace,
                           self.resource, result.detail)

    async def cancel(self, runs: Sequence[JobRef]) -> None:
        """Stop pilot runs: queued ones never start, running ones are stopped by their agent."""
        with metrics.scheduler_command(self.namespace, self.resource, "cancel"):
            await executor.cancel(self.remote, self.queue, runs, self.prologue)

    def status_fields(self) -> dict[str, Any]:
        """What the resource's status shows of the allocations."""
        items = [{"name": name, "id": s.remote_id, "state": _state(s).value, "cores": s.cores,
                  "coresInUse": s.cores_in_use, "runs": len(s.runs),
                  **({"endsAt": _timestamp(s.deadline)} if s.deadline else {})}
                 for name, s in sorted(self.seen.items())]
        return {"allocations": items, "allocationSummary": summary(items)}


def summary(items: Sequence[dict[str, Any]]) -> str:
    """The allocations for people: `1 running (6/8 cores), 1 queued`."""
    running = [i for i in items if i["state"] == AllocationState.RUNNING.value]
    queued = sum(i["state"] == AllocationState.QUEUED.value for i in items)
    parts = []
    if running:
        used = sum(i["coresInUse"] for i in running)
        parts.append(f"{len(running)} running ({used}/{sum(i['cores'] for i in running)} cores)")
    if queued:
        parts.append(f"{queued} queued")
    return ", ".join(parts) or "none"


def _state(sighting: AllocationSighting) -> AllocationState:
    seen = sighting.observation
    if sighting.gone or sighting.ended is not None:
        return AllocationState.ENDED
    if seen is None:  # adopted after a restart: polled from the next refresh on
        return AllocationState.RUNNING if sighting.started else AllocationState.QUEUED
    return AllocationState.RUNNING if seen.state is RemoteState.RUNNING else AllocationState.QUEUED


def _timestamp(epoch: int) -> str:
    return datetime.datetime.fromtimestamp(epoch, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
