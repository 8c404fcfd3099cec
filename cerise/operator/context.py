"""What the parts of one resource worker share: the resource, its connection and scheduler,
the API client, the file exchange, and what the worker remembers of each job between ticks.

Made once per worker (`cerise.operator.worker`) and handed to each part — stage-in,
submission, polling, stage-out, deletion and the resource's own status — so that none of
them needs another.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from lightkube import AsyncClient

from cerise.model import compute, retries
from cerise.model.compute import ResourceSpec
from cerise.model.decisions import Memory
from cerise.model.exchange import Exchange
from cerise.model.leases import FencingToken
from cerise.model.specialisation import StepUse
from cerise.model.steps import Step
from cerise.model.submissions import SubmitBudget
from cerise.operator.allocations import Allocations
from cerise.operator.transitions import Transitions
from cerise.remote import staging
from cerise.remote.jobscript import JobFiles
from cerise.remote.protocol import Remote
from cerise.remote.schedulers import Request, Scheduler

Body = dict[str, Any]


def key_of(body: Body) -> str:
    """A job's key: its UID, which also names its remote directory and batch job."""
    return str(body["metadata"]["uid"])


@dataclass
class Tracking:
    """What the worker remembers of a job between ticks (lost on restart: harmless)."""

    memory: Memory = field(default_factory=Memory)
    """What the decisions keep (`cerise.model.decisions`)."""
    log_offset: int | None = None
    failures: int = 0
    """Failed tries at the job's work in a row."""
    resume_at: float = 0.0
    """No work for the job before this time (monotonic seconds): a retry's delay, or a
    submit cap's window."""
    steps: list[Step] | None = None
    """The job's `status.steps` as its log says."""
    steps_unwritten: bool = False
    """Whether `steps` has changed since it was last written."""
    projects: dict[str, StepUse] | None = None
    """The projects the job's workflow uses (read only when it matters)."""
    request: Request | None = None
    """What the job asks of the scheduler, once it is staged."""


class ResourceContext:
    """One ComputeResource's connection, scheduler and settings, and its jobs' tracking."""

    def __init__(
        self, *, namespace: str, name: str, uid: str, spec: ResourceSpec, remote: Remote,
        scheduler: Scheduler, kube: AsyncClient, exchange: Exchange,
        jobs: Callable[[], list[Body]], remember: Callable[[Body], None],
        fence: FencingToken | None = None,
    ) -> None:
        """`fence`: the fencing token of this replica's tenure of the resource's Lease."""
        self.namespace, self.name, self.uid, self.spec = namespace, name, uid, spec
        self.remote, self.scheduler, self.kube, self.exchange = remote, scheduler, kube, exchange
        self.jobs, self.remember = jobs, remember
        """The resource's active jobs, newest copies; keeping a body the worker wrote."""
        self.wake = asyncio.Event()
        """Set to have the worker tick soon."""
        self.tracking: dict[str, Tracking] = {}
        self.web_inputs = compute.web_inputs(spec, os.environ)
        self.input_cache = (staging.InputCache(self.base, spec.cache_max_bytes)
                            if spec.cache_max_bytes else None)
        self.prologue = compute.prologue(spec.environment)
        self.transitions = Transitions(kube, remember=remember,
                                       log_path=lambda body: exchange.log_path(key_of(body)),
                                       changed=self.carry_on, fence=fence)
        self.budget = SubmitBudget(spec.submit_limits)
        self.pilot = None if spec.pilot is None else Allocations(
            namespace=namespace, resource=name, spec=spec.pilot, remote=remote,
            scheduler=scheduler, base=self.base, prologue=self.prologue, budget=self.budget)
        """Pilot mode's allocations, when it is on: runs go to their queue, not the scheduler."""

    @property
    def base(self) -> str:
        """The resource's Cerise directory."""
        return compute.base_path(self.spec, self.remote.username)

    def files(self, body: Body) -> JobFiles:
        """The job's files on the resource, of its current attempt: where its status says,
        or where they go."""
        status = body.get("status") or {}
        return JobFiles(status.get("workDir") or f"{self.base}/jobs/{key_of(body)}",
                        attempt=int(status.get("attempt") or 1))

    def tracked(self, body: Body) -> Tracking:
        """What the worker remembers of the job (a fresh record the first time)."""
        return self.tracking.setdefault(key_of(body), Tracking())

    def newest(self, body: Body) -> Body:
        """The newest copy of a job this worker has."""
        key = key_of(body)
        return next((b for b in self.jobs() if key_of(b) == key), body)

    def request(self, body: Body, cores: int = 0, time_limit: int = 0,
                memory: int = 0) -> Request:
        """What the job asks of the scheduler; its name derives from its UID and attempt, so
        a search after an ambiguous submit finds it."""
        attempt = int((body.get("status") or {}).get("attempt") or 1)
        return Request(name=retries.run_name(key_of(body), attempt), cores=cores,
                       time_limit=int(body["spec"].get("timeLimit") or time_limit),
                       memory=memory)

    def carry_on(self) -> None:
        """Have the worker tick soon: its own work moved a job on (a transition, a staging
        task ended), so the job's next step is ready now."""
        self.wake.set()

    def wake_in(self, delay: float) -> None:
        """Have the worker tick again after `delay` seconds."""
        asyncio.get_running_loop().call_later(max(0.0, delay), self.wake.set)
