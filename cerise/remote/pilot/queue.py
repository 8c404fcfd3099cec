"""The runs' side of pilot mode as a scheduler plug-in (`schedulers.Scheduler`).

So that a run in pilot mode is submitted, polled and cancelled by the same code as a
batch job (`cerise.remote.executor`):

* submit = the hand-over: the ticket is written as `queue/.<run>` and renamed to
  `queue/<order>.<run>` (a rename is atomic on POSIX file systems and NFS: agents, which
  glob `queue/*` and so skip dot files, see a whole ticket or none; the glob lists the
  oldest first). `jobscript.submit_script` wraps it in its submit lock and records
  `pilot:<run>` as the id, so a repeated submit never queues a run twice.
* queue = every ticket in flight, from one listing of the queue and the claims (the
  script does not grow with the runs): waiting (`incoming`, `queued`) or taken by an
  allocation (`claimed`, as running); any other run is absent, so that its markers
  decide as for any batch job. `settled_script` adds the runs' tickets out of play
  (`done`, `cancelled`); a run with none is `nowhere`.
* cancel = a queued ticket is moved to `cancelled/` (it never starts; the run then polls
  as vanished, like a cancelled queued batch job); a ticket already taken gets a request
  in `cancel/`, on which its agent stops that run only, which then records 143.

Where a ticket is alone does not tell whether a run must be requeued: that needs the
allocations' state too (`cerise.remote.pilot.status`).
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum

from cerise.remote.jobscript import JobFiles
from cerise.remote.pilot import layout, tickets
from cerise.remote.pilot.layout import PilotLayout
from cerise.remote.schedulers import JobRef, QueueState, Request

TICKET_LINE = "=ticket"
"""Starts each ticket's line in the scripts' output (no other line does)."""


class Location(StrEnum):
    """Where a run's ticket is."""

    INCOMING = "incoming"
    """Being written into the queue."""
    QUEUED = "queued"
    CLAIMED = "claimed"
    DONE = "done"
    CANCELLED = "cancelled"
    """Taken out of the queue by a cancel before any agent took it."""
    NOWHERE = "nowhere"


QUEUE_STATES = {
    Location.INCOMING: QueueState.WAITING,
    Location.QUEUED: QueueState.WAITING,
    Location.CLAIMED: QueueState.RUNNING,
}


@dataclass(frozen=True)
class TicketSighting:
    """Where a run's ticket is, and what it says."""

    location: Location
    allocation: str = ""
    """The allocation that holds the ticket (`claimed`) or ran the run (`done`)."""
    attempt: int = 0
    """1 for the first run, + 1 per requeue; 0 if unknown (no ticket, or it moved)."""
    died_in: tuple[str, ...] = ()
    queued_at: float | None = None
    """When the ticket last entered the queue (the remote clock, epoch seconds)."""


def _words(jobs: Sequence[JobRef]) -> str:
    return " ".join(shlex.quote(layout.run_name(job.files)) for job in jobs)


# Fills $queued: run → its waiting ticket, from one listing of the queue (a glob per run
# would read the directory once per run).
_WAITING = r"""declare -A queued
for t in "$P"/queue/*; do
    r=${t##*/} r=${r#*.}
    [[ -e $t && $r =~ ^[A-Za-z0-9_-]+$ ]] && queued[$r]=$t
done"""

# Prints a `=ticket` line for ticket $t of run $r at $loc (allocation $a), reading it with
# `read` only: its lines are data, never code.
_REPORT = r"""report() {
    local line attempt=- died=- when=-
    while IFS= read -r line; do
        case $line in
            attempt=*) attempt=${line#*=} ;;
            died_in=?*) died=${line#*=} died=${died// /,} ;;
            queued=*) when=${line#*=} ;;
            ended=*) a=${line#*=} a=${a%% *} ;;
        esac
    done 2>/dev/null < "$t"
    printf '%s %s %s %s %s %s %s\n' "$mark" "$r" "$loc" "$a" "$attempt" "$died" "$when"
}"""

# Every ticket in flight, from one listing each of the queue and the claims (so the script
# does not grow with the runs asked about).
_IN_FLIGHT = r"""for t in "$P"/queue/.[!.]* "$P"/queue/* "$P"/claimed/*/*; do
    r=${t##*/} r=${r#*.} a=-
    [[ -e $t && $r =~ ^[A-Za-z0-9_-]+$ ]] || continue  # a name the operator wrote
    case $t in
        */queue/.*) loc=incoming ;;
        */queue/*) loc=queued ;;
        *) loc=claimed a=${t%/*} a=${a##*/} ;;
    esac
    report
done"""

# The asked runs' tickets out of play, looked up after the listing above: a ticket moving
# on (queue → claimed → done) is seen somewhere.
_SETTLED = r"""for r in {names}; do
    a=-
    for loc in done cancelled; do
        t=$P/$loc/$r
        if [ -e "$t" ]; then report; break; fi
    done
done"""


def _number(text: str) -> int:
    return int(text) if text.isdigit() else 0


def _time(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


@dataclass(frozen=True)
class PilotQueue:
    """The queue of runs on one compute resource, in the shape of a scheduler."""

    layout: PilotLayout
    name = "pilot"

    def submit_command(self, files: JobFiles, request: Request) -> str:
        q = shlex.quote
        run = layout.run_name(files)
        writing = f"{self.layout.queue}/.{run}"
        lines = tickets.ticket_lines(files, request)
        directories = " ".join(q(path) for path in self.layout.directories)
        # The pilot directory is made private; what is inside inherits that.
        return (f"mkdir -p -m 700 {q(self.layout.root)} && mkdir -p {directories} && "
                f"{tickets.write_ticket(writing, lines)} && "
                f'mv {q(writing)} {q(self.layout.queue)}/"${tickets.ORDER}".{q(run)} && '
                f"printf '%s\\n' {q(layout.remote_id(files))}")

    def _prelude(self) -> str:
        return f"P={shlex.quote(self.layout.root)} mark={TICKET_LINE}\n{_REPORT}\n"

    def queue_script(self, jobs: Sequence[JobRef]) -> str:
        """Every ticket waiting or claimed, whichever runs `jobs` are."""
        return self._prelude() + _IN_FLIGHT

    def settled_script(self, jobs: Sequence[JobRef]) -> str:
        """The tickets of `jobs` that are done or cancelled (run after `queue_script`)."""
        if not jobs:
            return "true"
        return self._prelude() + _SETTLED.format(names=_words(jobs))

    def parse_tickets(self, output: str, jobs: Sequence[JobRef]) -> dict[str, TicketSighting]:
        """Each run's ticket (by key) from the output of `queue_script`, then
        `settled_script`; a later line of a run wins; `nowhere` if none."""
        seen: dict[str, TicketSighting] = {}
        for line in output.splitlines():
            fields = line.split(" ")
            if fields[0] != TICKET_LINE or len(fields) != 7:
                continue
            _, run, where, allocation, attempt, died, queued = fields
            try:
                location = Location(where)
            except ValueError:
                continue
            seen[run] = TicketSighting(
                location=location,
                allocation="" if allocation == "-" else allocation,
                attempt=_number(attempt),
                died_in=() if died == "-" else tuple(died.split(",")),
                queued_at=_time(queued),
            )
        nowhere = TicketSighting(Location.NOWHERE)
        return {job.key: seen.get(layout.run_name(job.files), nowhere) for job in jobs}

    def parse_queue(self, output: str, jobs: Sequence[JobRef]) -> Mapping[str, QueueState]:
        return {key: QUEUE_STATES.get(ticket.location, QueueState.ABSENT)
                for key, ticket in self.parse_tickets(output, jobs).items()}

    def cancel_script(self, jobs: Sequence[JobRef]) -> str:
        if not jobs:
            return "true"
        q = shlex.quote
        return f"""P={q(self.layout.root)}
mkdir -p "$P/cancelled" "$P/cancel" || exit
{_WAITING}
for r in {_words(jobs)}; do
    t=${{queued[$r]:-}}
    [ -n "$t" ] && mv "$t" "$P/cancelled/$r" 2>/dev/null || : > "$P/cancel/$r" || exit
done"""

    def forget_script(self, jobs: Sequence[JobRef]) -> str:
        """Shell text removing the tickets and cancel requests of runs that are out of play
        (done, cancelled or never started), e.g. before their job directories are removed.
        A ticket an allocation holds is left to its agent and a requeue."""
        if not jobs:
            return "true"
        return f"""P={shlex.quote(self.layout.root)}
{_WAITING}
for r in {_words(jobs)}; do
    rm -f -- ${{queued[$r]:+"${{queued[$r]}}"}} "$P/queue/.$r" "$P/done/$r" "$P/cancelled/$r" \\
        "$P/cancel/$r"
done"""
