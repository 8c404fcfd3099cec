"""Scheduler `gridengine`: qsub, qstat -xml and qdel of (Son of) Grid Engine 8.

Submit: `qsub -terse -notify -w e -S /bin/bash -N NAME -wd WORK -j y -o LOG -r y
-l h_rt=HH:MM:SS [-pe PE N] [-q QUEUE] [options] job.sh` prints `ID` (`ID.1-10:1` for an
array job); the id is the part before the dot. `-r y`: a job rescheduled (`qmod -rj`, an
execution host that failed) runs its script again; the job shows `R` in its state letters
from then on (`Rq`, then `Rr`), and the rerun finds `RESTARTED=1` (`restart_variable`).
Grid Engine marks the job `Rq` before it signals the run (SIGUSR2 with `-notify`), so the
exit code that run writes is seen with `Rq` and is not the job's end; `R` counts as one
restart (Grid Engine counts none). A pilot allocation is submitted with `-r n`.
`-notify` makes qdel and an exceeded `h_rt` send SIGUSR2 (then SIGKILL after the queue's
`notify` time), which the job script treats like SIGTERM. `-w e` makes qsub refuse a job
no queue could ever run, as configured, whatever the load ("no suitable queues") rather
than queue it forever.
`-S /bin/bash` because queues usually start scripts with /bin/sh, ignoring `#!`. Names
lose the characters Grid Engine refuses and may not start with a digit. A job of more
than one core needs the resource's parallel environment (`-pe`); without one, the submit
is refused and says so rather than run the job on one slot. Memory is `-l NAME=NM` per slot
(the memory divided by the slots, rounded up) with the resource's `memoryResource`, by
default `h_vmem`, which every queue defines. Not `mem_free`: it is only a host's load
value, and `-w e` refuses a job asking for one ("no suitable queues").

Search (after a submit that may have created the job): the same `qstat -u USER -xml`,
matched on `JB_name`.

Status: one `qstat -u USER -xml` of all the user's jobs still in the queue, read with
ElementTree; output that is not qstat's XML makes the status unavailable. `qw`/`hqw` are
waiting; `r`, `t` and the suspended `s`/`S`/`T` running. A job in an error state (`Eqw`:
it could not start, e.g. its directory is gone) never leaves the queue nor starts by
itself: it counts as waiting, with the error reason `qstat -j` gives (asked only for such
jobs of ours) as `never_runs`; a cancel (qdel) removes it.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from xml.etree import ElementTree

from cerise.remote.jobscript import JobFiles
from cerise.remote.schedulers import (
    JobRef,
    QueueEntry,
    QueueState,
    Request,
    StatusUnavailable,
    batch,
)
from cerise.remote.schedulers.batch import BatchSettings

RUNNING_LETTERS = frozenset("rtsST")
WAITING_LETTERS = frozenset("qwh")
ERRORS_BEGIN = "--cerise-job-errors--"
"""Starts the `<id> error reason …` lines of the jobs in an error state."""


def queue_state(state: str) -> QueueState:
    """qstat's state letters (`qw`, `hqw`, `r`, `Eqw`, `dr`…) as a queue state."""
    letters = set(state)
    if "E" in letters:
        return QueueState.WAITING  # held by the error until someone clears or deletes it
    if letters & RUNNING_LETTERS:
        return QueueState.RUNNING
    if letters & WAITING_LETTERS:
        return QueueState.WAITING
    return QueueState.ABSENT


def _listing(output: str) -> ElementTree.Element:
    """qstat's XML document; StatusUnavailable if `output` is not one."""
    try:
        root = ElementTree.fromstring(output)  # noqa: S314 - qstat's output, not user data
    except ElementTree.ParseError:
        root = None
    if root is None or root.tag != "job_info":
        raise StatusUnavailable(
            f"gridengine: qstat printed what Cerise cannot read: {output.strip()[:200]!r}")
    return root


def job_states(output: str) -> dict[str, str]:
    """Each listed job's state letters by id; StatusUnavailable if `output` is not qstat's
    XML."""
    return {
        (entry.findtext("JB_job_number") or "").strip(): (entry.findtext("state") or "").strip()
        for entry in _listing(output).iter("job_list")
    }


def job_by_name(output: str, name: str) -> str | None:
    """The id of the listed job named `name` (the newest, if several); StatusUnavailable if
    `output` is not qstat's XML."""
    found = None
    for entry in _listing(output).iter("job_list"):
        if (entry.findtext("JB_name") or "").strip() == name:
            found = (entry.findtext("JB_job_number") or "").strip() or found
    return found


def job_name(request: Request) -> str:
    """The name a job is submitted under: the characters Grid Engine takes."""
    return batch.job_name(request.name, keep="A-Za-z0-9_.-", limit=255)


def error_reasons(text: str) -> dict[str, str]:
    """`qstat -j`'s error reasons by job id, from the `<id> error reason N: …` lines."""
    reasons: dict[str, str] = {}
    for line in text.splitlines():
        job_id, _, reason = line.partition(" ")
        words = reason.partition(":")[2].strip()
        if job_id and words:
            reasons[job_id] = f"{reasons[job_id]}; {words}" if job_id in reasons else words
    return reasons


def memory(request: Request) -> int:
    """The MiB to ask for per slot: Grid Engine multiplies a memory request (`h_vmem`,
    `h_rss`, a consumable) by the slots a parallel job has on a host."""
    return batch.per_process(request.memory, request.cores)


@dataclass(frozen=True)
class GridEngineScheduler:
    """Son of Grid Engine (and its relatives that keep `qstat -xml`)."""

    settings: BatchSettings = field(default_factory=BatchSettings)
    name = "gridengine"
    restart_variable = "RESTARTED"

    def submit_command(self, files: JobFiles, request: Request) -> str:
        environment = self.settings.parallel_environment
        if request.cores > 1 and not environment:
            message = (f"gridengine: the job asks for {request.cores} cores, but the compute "
                       "resource names no parallel environment (jobs.parallelEnvironment)")
            return f"{batch.command(['echo', message])} >&2; false"
        words = [
            "qsub", "-terse", "-notify", "-w", "e", "-S", "/bin/bash",
            "-N", job_name(request),
            "-wd", files.work,
            "-j", "y", "-o", batch.scheduler_log(files),
            "-r", "y" if request.rerun else "n",
        ]  # fmt: skip
        if request.time_limit > 0:
            words += ["-l", f"h_rt={batch.clock(request.time_limit)}"]
        if request.cores > 1 and environment:
            words += ["-pe", environment, str(request.cores)]
        if request.memory > 0:
            resource = self.settings.memory_resource
            words += ["-l", f"{resource}={memory(request)}M"]
        if self.settings.queue:
            words += ["-q", self.settings.queue]
        words += [*self.settings.options, files.script]
        return f"out=$({batch.command(words)}) && printf '%s\\n' \"${{out%%.*}}\""

    def queue_script(self, jobs: Sequence[JobRef]) -> str:
        ours = shlex.quote(" " + " ".join(batch.job_ids(jobs)) + " ")
        return f"""__out=$(qstat -u "$(id -un)" -xml) || exit
printf '%s\\n' "$__out"
case $__out in *'<state>E'*)
    echo {ERRORS_BEGIN}
    for __id in $(printf '%s\\n' "$__out" | awk -F'[<>]' \\
            '$2 == "JB_job_number" {{id = $3}} $2 == "state" && $3 ~ /E/ {{print id}}'); do
        case {ours} in *" $__id "*) ;; *) continue;; esac
        qstat -j "$__id" 2>/dev/null | while IFS= read -r __line; do
            case $__line in "error reason"*) printf '%s %s\\n' "$__id" "$__line";; esac
        done
    done;;
esac"""

    def parse_queue(self, output: str, jobs: Sequence[JobRef]) -> Mapping[str, QueueEntry]:
        listing, _, errors = output.partition(f"{ERRORS_BEGIN}\n")
        states, reasons = job_states(listing), error_reasons(errors)
        entries: dict[str, QueueEntry] = {}
        for job in jobs:
            word = states.get(job.remote_id)
            if word is None:
                entries[job.key] = QueueEntry(QueueState.ABSENT)
                continue
            why = None
            if "E" in word:
                reason = reasons.get(job.remote_id) or f"see qstat -j {job.remote_id}"
                why = f"Grid Engine holds it in error state {word}: {reason}"
            state = queue_state(word)
            restarted = "R" in word
            entries[job.key] = QueueEntry(
                state, word, why, restarts=int(restarted),
                requeued=restarted and state is QueueState.WAITING)
        return entries

    def cancel_script(self, jobs: Sequence[JobRef]) -> str:
        # qdel fails for jobs that already left; it still deletes the others.
        ids = batch.job_ids(jobs)
        return f"{batch.command(['qdel', *ids])} || true" if ids else "true"

    def search_command(self, files: JobFiles, request: Request) -> str:
        return 'qstat -u "$(id -un)" -xml'

    def parse_search(self, output: str, files: JobFiles, request: Request) -> str | None:
        return job_by_name(output, job_name(request))
