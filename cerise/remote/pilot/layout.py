"""Where pilot mode keeps its tickets and allocations on the compute resource, and their names.

A run is named after its job directory (`<base>/jobs/<job uid>/` → `<job uid>`), so the
operator finds its ticket from the `JobFiles` it already has. Run and allocation names
end up in file names and in the lines of the status output, so they are restricted to
letters, digits, `_` and `-`: no dot, which separates a waiting ticket's order from its
run (`queue/<order>.<run>`) and marks a ticket still being written (`queue/.<run>`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from cerise.remote.jobscript import JobFiles

REMOTE_ID_PREFIX = "pilot:"
"""A handed-over run's "scheduler id" is this prefix and its ticket name."""

_NAME = re.compile(r"[A-Za-z0-9_-]+")


class InvalidName(ValueError):
    """A run or allocation name that cannot be a file name in the pilot layout."""


def checked_name(name: str, what: str) -> str:
    """`name` if it can name a ticket or an allocation, else InvalidName saying why."""
    if not _NAME.fullmatch(name) or len(name) > 200:
        raise InvalidName(f"{what} name {name!r}: only letters, digits, '_' and '-', "
                          "at most 200 characters")
    return name


def run_name(files: JobFiles) -> str:
    """The name of a run's ticket: its job directory's last component."""
    return checked_name(files.job_dir.rstrip("/").rsplit("/", 1)[-1], "run")


def remote_id(files: JobFiles) -> str:
    """The id the hand-over records for a run (its `remote_id` marker)."""
    return f"{REMOTE_ID_PREFIX}{run_name(files)}"


@dataclass(frozen=True)
class PilotLayout:
    """The absolute paths of pilot mode's files on one compute resource."""

    root: str
    """`<base>/pilot`."""

    @classmethod
    def under(cls, base: str) -> PilotLayout:
        """The layout below a compute resource's base directory."""
        return cls(f"{base.rstrip('/')}/pilot")

    def _path(self, *parts: str) -> str:
        return "/".join((self.root.rstrip("/"), *parts))

    @property
    def queue(self) -> str:
        return self._path("queue")

    @property
    def claimed_root(self) -> str:
        return self._path("claimed")

    def claimed(self, allocation: str) -> str:
        return self._path("claimed", checked_name(allocation, "allocation"))

    @property
    def done(self) -> str:
        return self._path("done")

    @property
    def cancelled(self) -> str:
        return self._path("cancelled")

    @property
    def cancel(self) -> str:
        return self._path("cancel")

    @property
    def allocations(self) -> str:
        return self._path("allocations")

    def allocation(self, name: str) -> JobFiles:
        """The allocation's job directory (an ordinary batch job's)."""
        return JobFiles(self._path("allocations", checked_name(name, "allocation")))

    @property
    def directories(self) -> tuple[str, ...]:
        """The directories every script may assume (made by the hand-over and the agent)."""
        return (self.queue, self.claimed_root, self.done, self.cancelled, self.cancel,
                self.allocations)


def run_lock(files: JobFiles) -> str:
    """The lock a run's processes hold while any of them lives (see `agent`)."""
    return f"{files.job_dir.rstrip('/')}/run.lock"


def agent_path(allocation: JobFiles) -> str:
    """Where an allocation's agent script is written."""
    return f"{allocation.job_dir.rstrip('/')}/agent.sh"


def allocation_record(allocation: JobFiles, record: str) -> str:
    """One of the agent's own files in its allocation's directory (agent, heartbeat, ended)."""
    return f"{allocation.job_dir.rstrip('/')}/{record}"
