"""One status command per refresh for everything in pilot mode, and what it means.

The script prints three sections: the batch scheduler's view of the allocations
(`schedulers.status_script`: the queue, then each allocation's markers); the runs
(`schedulers.status_script` of the `PilotQueue`: every ticket waiting or claimed, then
each run's markers; then `PilotQueue.settled_script`: the runs' tickets that are done or
cancelled); and what each allocation's agent wrote (start, deadline, heartbeat, why it
ended, the tickets it holds), for every allocation directory on the resource. A missing
section or end line (a truncated output), like a failing queue command, raises
`StatusUnavailable` rather than make runs look gone. With 1,000 runs it takes about half
a second on a busy two-core machine.

A run's verdict combines its ticket, its markers and its allocation (`judge`).
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum

from cerise.remote import schedulers
from cerise.remote.failures import StatusUnavailable
from cerise.remote.jobscript import TERMINATED_CODE
from cerise.remote.pilot.queue import Location, PilotQueue, TicketSighting
from cerise.remote.schedulers import JobRef, Observation, RemoteState, Scheduler

RUNS_BEGIN = "--cerise-pilot-runs--"
ALLOCATIONS_BEGIN = "--cerise-pilot-allocations--"
END = "--cerise-pilot-end--"
ALLOCATION_LINE = "=allocation"


class RunVerdict(StrEnum):
    """What a run's sighting means for the operator."""

    WAITING = "waiting"
    """Its ticket is in the queue."""
    RUNNING = "running"
    """An allocation that is not known to be gone holds its ticket."""
    DONE = "done"
    """It ended with an exit code."""
    REQUEUE = "requeue"
    """Its allocation is gone and it had not finished: put it back (`requeue`)."""
    VANISHED = "vanished"
    """No exit code and no ticket in play: cancelled before it started, or lost."""


class EndReason(StrEnum):
    IDLE = "idle"
    TERMINATED = "terminated"


@dataclass(frozen=True)
class AllocationSighting:
    """One allocation: the batch scheduler's view and its agent's own records."""

    remote_id: str
    observation: Observation | None
    """The allocation's batch job, as any batch job polls (its exit code, its agent's log
    size); None for an allocation directory the status was not asked about (adopt it:
    its `remote_id` is read from the directory)."""
    started: int | None = None
    """When it started (epoch seconds); None until its agent ran."""
    deadline: int | None = None
    """When its time is up (epoch seconds); None without a time limit or before its start."""
    cores: int = 0
    host: str = ""
    heartbeat: int | None = None
    """When its agent last looked at the queue (epoch seconds)."""
    cores_in_use: int = 0
    runs: tuple[str, ...] = ()
    """The tickets in its claim directory (run names)."""
    ended: EndReason | None = None
    ended_at: int | None = None

    @property
    def gone(self) -> bool:
        """The batch scheduler no longer runs it (its job ended or left the queue)."""
        return self.observation is not None and self.observation.state in (
            RemoteState.DONE, RemoteState.VANISHED)


@dataclass(frozen=True)
class RunSighting:
    """One run in pilot mode."""

    verdict: RunVerdict
    ticket: TicketSighting
    markers: Observation
    """The run's markers as `schedulers.parse_status` reads them, its ticket standing for
    its place in a queue (waiting, claimed = running, else absent)."""

    @property
    def exit_code(self) -> int | None:
        return self.markers.exit_code

    @property
    def observation(self) -> Observation:
        """The run as if it were a batch job, for the operator's decisions: WAITING,
        RUNNING, DONE (its exit code and markers) or VANISHED. A run to requeue shows as a
        batch job killed with its allocation: DONE with `TERMINATED_CODE` if its job
        script recorded the signal, else VANISHED."""
        seen = self.markers
        if self.verdict is RunVerdict.WAITING:
            return replace(seen, state=RemoteState.WAITING, exit_code=None, ended=None)
        if self.verdict is RunVerdict.RUNNING:
            return replace(seen, state=RemoteState.RUNNING, exit_code=None, ended=None)
        if self.verdict is RunVerdict.VANISHED:
            return replace(seen, state=RemoteState.VANISHED, exit_code=None, ended=None)
        if seen.exit_code is None and self.verdict is RunVerdict.REQUEUE:
            if seen.signal is None:
                return replace(seen, state=RemoteState.VANISHED)
            return replace(seen, state=RemoteState.DONE, exit_code=TERMINATED_CODE)
        return replace(seen, state=RemoteState.DONE)


@dataclass(frozen=True)
class PilotStatus:
    """Everything in pilot mode on one compute resource, from one command."""

    runs: dict[str, RunSighting] = field(default_factory=dict)
    """By run key (`JobRef.key`)."""
    allocations: dict[str, AllocationSighting] = field(default_factory=dict)
    """By allocation name: the ones asked about, and any other directory found."""


def judge(ticket: TicketSighting, exit_code: int | None,
          allocations: Mapping[str, AllocationSighting]) -> RunVerdict:
    """A run's verdict from its ticket, its exit code and its allocation."""
    if ticket.location in (Location.INCOMING, Location.QUEUED):
        return RunVerdict.WAITING
    if ticket.location is Location.CLAIMED:
        holder = allocations.get(ticket.allocation)
        if holder is None or not holder.gone:
            return RunVerdict.RUNNING
        if exit_code is None or exit_code == TERMINATED_CODE:
            return RunVerdict.REQUEUE
        return RunVerdict.DONE  # it ended before its allocation did
    if ticket.location is Location.CANCELLED or exit_code is None:
        return RunVerdict.VANISHED
    return RunVerdict.DONE


_RECORDS = r"""P={root}
for d in "$P"/allocations/*/; do
    [ -d "$d" ] || continue
    d=${{d%/}} n=${{d##*/}}
    id=- agent=- beat=- ended=- runs=
    [ -s "$d/remote_id" ] && read -r id < "$d/remote_id"
    [ -s "$d/agent" ] && read -r agent < "$d/agent"
    [ -s "$d/heartbeat" ] && read -r beat < "$d/heartbeat"
    [ -s "$d/ended" ] && read -r ended < "$d/ended"
    for t in "$P/claimed/$n"/*; do
        [[ -e $t && ${{t##*/}} =~ ^[A-Za-z0-9_-]+$ ]] && runs+=" ${{t##*/}}"
    done
    printf '{mark} %s %s|%s|%s|%s|%s\n' "$n" "$id" "$agent" "$beat" "$ended" "${{runs# }}"
done"""


def status_script(scheduler: Scheduler, queue: PilotQueue, allocations: Sequence[JobRef],
                  runs: Sequence[JobRef]) -> str:
    """The one script of a refresh. `allocations` are keyed by allocation name."""
    parts = [schedulers.status_script(scheduler, allocations) if allocations else "",
             f"echo {RUNS_BEGIN}",
             schedulers.status_script(queue, runs) if runs else "",
             queue.settled_script(runs),
             f"echo {ALLOCATIONS_BEGIN}",
             _RECORDS.format(root=shlex.quote(queue.layout.root), mark=ALLOCATION_LINE),
             f"echo {END}"]
    return "\n".join(parts) + "\n"


def _int(text: str) -> int | None:
    return int(text) if text.isdigit() else None


def _records(text: str) -> dict[str, tuple[str, list[str]]]:
    """Each allocation directory's remote id and its agent's records, by name."""
    found: dict[str, tuple[str, list[str]]] = {}
    for line in text.splitlines():
        head, _, rest = line.partition(" ")
        name, _, rest = rest.partition(" ")
        remote_id, _, rest = rest.partition("|")
        fields = rest.split("|")
        if head == ALLOCATION_LINE and name and len(fields) == 4:
            found[name] = ("" if remote_id == "-" else remote_id, fields)
    return found


def _allocation(remote_id: str, observation: Observation | None,
                fields: list[str]) -> AllocationSighting:
    agent, beat, ended, runs = (field_.split() for field_ in fields)
    agent += ["-"] * (5 - len(agent))
    beat += ["-"] * (3 - len(beat))
    ended += ["-"] * (2 - len(ended))
    reason = ended[0] if ended[0] in set(EndReason) else None
    return AllocationSighting(
        remote_id=remote_id, observation=observation, started=_int(agent[0]),
        deadline=_int(agent[1]) or None, cores=_int(agent[2]) or 0,
        host="" if agent[3] == "-" else agent[3], heartbeat=_int(beat[0]),
        cores_in_use=_int(beat[1]) or 0, runs=tuple(runs),
        ended=EndReason(reason) if reason else None, ended_at=_int(ended[1]))


def parse_status(scheduler: Scheduler, queue: PilotQueue, output: str,
                 allocations: Sequence[JobRef], runs: Sequence[JobRef]) -> PilotStatus:
    """Every allocation and run from `status_script`'s output."""
    batch_text, found_runs, rest = output.partition(f"{RUNS_BEGIN}\n")
    runs_text, found_records, rest = rest.partition(f"{ALLOCATIONS_BEGIN}\n")
    records_text, found_end, _ = rest.partition(f"{END}\n")
    if not (found_runs and found_records and found_end):
        raise StatusUnavailable("pilot: the status output was cut short")
    batch = schedulers.parse_status(scheduler, batch_text, allocations) if allocations else {}
    records = _records(records_text)
    sightings: dict[str, AllocationSighting] = {}
    for job in allocations:
        remote_id, fields = records.get(job.key, (job.remote_id, ["", "", "", ""]))
        sightings[job.key] = _allocation(job.remote_id or remote_id, batch[job.key], fields)
    for name, (remote_id, fields) in records.items():
        if name not in sightings:
            sightings[name] = _allocation(remote_id, None, fields)
    observed = schedulers.parse_status(queue, runs_text, runs) if runs else {}
    tickets = queue.parse_tickets(runs_text, runs)
    return PilotStatus(
        runs={job.key: RunSighting(
            verdict=judge(tickets[job.key], observed[job.key].exit_code, sightings),
            ticket=tickets[job.key], markers=observed[job.key]) for job in runs},
        allocations=sightings,
    )
