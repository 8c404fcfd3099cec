"""A run's ticket: what an agent needs to know to run it, as lines of `field=value`.

Written by the hand-over (`queue.PilotQueue.submit_command`), rewritten by a requeue, read
by the agents and the status script with `read`, never sourced. Fields:

    job_script=<path>         the run's job script (`jobscript.job_script`)
    output=<path>             where the job script's own output goes (`scheduler.txt`)
    lock=<path>               the run's `run.lock`, held while any of its processes lives
    cores=<n>                 cores the run takes from its allocation (at least 1)
    time_limit=<seconds>      0: none asked; otherwise the agent stops the run after it,
                              and never starts it in an allocation with less time left
    attempt=<n>               1 at the hand-over, + 1 per requeue
    died_in=<alloc> …         the allocations the run was running in when they ended
    name=<job name>           for people reading the queue
    order=<epoch ns>          when the run was first queued: a waiting ticket is
                              `queue/<order>.<run>`, so a glob lists the oldest first
    queued=<epoch.ns>         when the ticket (last) entered the queue
    ended=<alloc> <epoch> <status>   appended by the agent when the run ended
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence

from cerise.remote.jobscript import JobFiles
from cerise.remote.pilot import layout
from cerise.remote.schedulers import Request, batch


class InvalidTicket(ValueError):
    """A value that a ticket line cannot hold."""


def ticket_lines(files: JobFiles, request: Request) -> list[str]:
    """The ticket of a new run, without its `queued` time (the shell adds it)."""
    for value, what in ((files.job_dir, "job directory"), (request.name, "job name")):
        if "\n" in value or "\r" in value:
            raise InvalidTicket(f"the {what} {value!r} contains a line break")
    return [
        f"job_script={files.script}",
        f"output={batch.scheduler_log(files)}",
        f"lock={layout.run_lock(files)}",
        f"cores={max(1, int(request.cores))}",
        f"time_limit={max(0, int(request.time_limit))}",
        "attempt=1",
        "died_in=",
        f"name={request.name}",
    ]


ORDER = "__cerise_order"
"""The shell variable in which `write_ticket` leaves the new ticket's `order`."""


def write_ticket(path: str, lines: Sequence[str]) -> str:
    """Shell text writing `lines`, and the current time as `order=` and `queued=`, to
    `path`; the order is left in $ORDER for the ticket's name in the queue."""
    words = " ".join(shlex.quote(line) for line in lines)
    return (f'__cerise_now=$(date +%s.%N) && {ORDER}=${{__cerise_now/./}} && '
            f"{{ printf '%s\\n' {words} && printf 'order=%s\\nqueued=%s\\n' "
            f'"${ORDER}" "$__cerise_now"; }} > {shlex.quote(path)}')
