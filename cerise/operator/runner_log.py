"""Following a job's runner log: its new lines go to the job log, the steps they start or
end to the job's `status.steps`.

Reading and committing are apart so that the steps ride on the job's one status write of
the tick — a transition's, when there is one — and the job log records the new offset only
after it: after a crash in between, the lines are read again, which leaves the steps as
they are.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from cerise.kube import jobs as kube_jobs
from cerise.model import steps
from cerise.model.steps import Step
from cerise.operator import joblog
from cerise.operator.context import Body, ResourceContext, key_of

CHUNK = 64 << 10
"""Most bytes of the runner's log read at once."""


@dataclass(frozen=True)
class NewLines:
    """What one read of the runner's log found."""

    text: str
    """The complete new lines."""
    size: int
    """Their size in bytes."""
    steps: list[Step] | None
    """The job's steps to write (None: written already)."""

    def fields(self) -> dict[str, Any]:
        """The status fields to write with the job's next status write."""
        return {} if self.steps is None else {"steps": self.steps}


class RunnerLog:
    """Reads one resource's runner logs where each job's last read ended."""

    def __init__(self, context: ResourceContext) -> None:
        self.context = context

    async def read(self, body: Body, size: int | None = None) -> NewLines:
        """The runner's new complete lines and the steps they make; with the log's `size`
        from a poll, nothing is read unless it grew."""
        context = self.context
        tracking = context.tracked(body)
        if tracking.log_offset is None:
            tracking.log_offset = await joblog.runner_offset(
                context.exchange.log_path(key_of(body)))
        if tracking.steps is None:
            tracking.steps = list(body["status"].get("steps") or [])
        complete = b""
        if size is None or size > tracking.log_offset:
            data = await context.remote.read(context.files(body).stderr, tracking.log_offset,
                                             CHUNK)
            complete = data[: data.rfind(b"\n") + 1]
        text = complete.decode(errors="replace")
        new = steps.update(tracking.steps, text.splitlines(), kube_jobs.now())
        if new != tracking.steps:
            tracking.steps, tracking.steps_unwritten = new, True
        return NewLines(text, len(complete), tracking.steps if tracking.steps_unwritten else None)

    async def commit(self, body: Body, lines: NewLines, *, written: bool) -> None:
        """After the job's status write (`written`: it carried the steps): append the lines
        to the job log and record the new offset."""
        tracking = self.context.tracked(body)
        if written and lines.steps is not None:
            tracking.steps_unwritten = False
        if lines.size:
            tracking.log_offset = (tracking.log_offset or 0) + lines.size
            await joblog.runner_output(self.context.exchange.log_path(key_of(body)),
                                       lines.text, tracking.log_offset)

    async def follow(self, body: Body, size: int | None = None) -> None:
        """Read, write the steps if they changed (one write at most), commit."""
        lines = await self.read(body, size)
        written = bool(lines.steps is not None
                       and await self.context.transitions.observe(body, lines.fields()))
        await self.commit(body, lines, written=written)
