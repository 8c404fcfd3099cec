"""Runs pilot mode's scripts over a compute resource's connection.

The effectful half of `cerise.remote.pilot`: build with its pure functions, run on the
`Remote`, parse. A run is submitted and cancelled through `cerise.remote.executor` with
a `PilotQueue` as its scheduler; an allocation's own cancel goes to the batch scheduler
the same way.
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence

from cerise.remote import executor
from cerise.remote.failures import StatusUnavailable
from cerise.remote.jobscript import JobFiles, SubmitResult
from cerise.remote.pilot import agent, layout, requeue, status
from cerise.remote.pilot.agent import AgentSettings
from cerise.remote.pilot.layout import PilotLayout
from cerise.remote.pilot.queue import PilotQueue
from cerise.remote.pilot.requeue import RequeueResult
from cerise.remote.pilot.status import PilotStatus
from cerise.remote.protocol import Remote
from cerise.remote.schedulers import JobRef, Scheduler


def allocation_ref(pilot: PilotLayout, name: str, remote_id: str) -> JobRef:
    """An allocation as the status and the batch scheduler's cancel take it."""
    return JobRef(name, pilot.allocation(name), remote_id)


async def submit_allocation(
    remote: Remote, scheduler: Scheduler, pilot: PilotLayout, name: str,
    settings: AgentSettings, prologue: str = "",
) -> SubmitResult:
    """Submit allocation `name` as a batch job running its agent, at most once (a repeat
    after a crash returns the recorded id, as for any batch job)."""
    files = pilot.allocation(name)
    directories = " ".join(shlex.quote(path) for path in (files.work, *pilot.directories))
    await executor.checked(remote, f"umask 077 && mkdir -p {directories}",
               f"cannot create the directories of allocation {name}")
    await remote.write(layout.agent_path(files),
                       agent.agent_script(pilot, name, settings).encode(), mode=0o700)
    return await executor.submit(remote, scheduler, files,
                                 agent.allocation_request(name, settings),
                                 agent.runner_argv(pilot, name), prologue)


async def poll(
    remote: Remote, scheduler: Scheduler, queue: PilotQueue, allocations: Sequence[JobRef],
    runs: Sequence[JobRef], prologue: str = "",
) -> PilotStatus:
    """Every allocation and run in pilot mode, from one remote command; StatusUnavailable
    (as `executor.poll`) if it cannot be read."""
    script = status.status_script(scheduler, queue, allocations, runs)
    result = await remote.run(f"{prologue}\n{script}")
    if result.exit_status != 0:
        detail = result.stderr.strip()[-1000:] or f"exit status {result.exit_status}"
        raise StatusUnavailable(f"pilot: the status command failed: {detail}")
    return status.parse_status(scheduler, queue, result.stdout, allocations, runs)


async def requeue_run(
    remote: Remote, pilot: PilotLayout, files: JobFiles, allocation: str
) -> RequeueResult:
    """Put a run of a gone allocation back into the queue (see `requeue`)."""
    result = await remote.run(requeue.requeue_script(pilot, files, allocation))
    return requeue.parse_requeue(result.exit_status, result.stdout, result.stderr)


async def remove_allocation(remote: Remote, pilot: PilotLayout, name: str) -> bool:
    """Remove a gone allocation's directories; False while it still holds tickets."""
    output = await executor.checked(remote, agent.removal_script(pilot, name),
                        f"cannot remove allocation {name}")
    return output.strip() == agent.REMOVED_MARK


async def forget_runs(remote: Remote, queue: PilotQueue, runs: Sequence[JobRef]) -> None:
    """Remove the tickets of runs out of play (before their job directories go)."""
    if runs:
        await executor.checked(remote, queue.forget_script(runs), "cannot remove pilot tickets")
