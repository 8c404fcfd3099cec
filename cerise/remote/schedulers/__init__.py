"""Batch schedulers as plug-ins: pure builders of shell text and parsers of its output.

A scheduler module builds three things — the submit command, ONE status script for all
jobs of a compute resource, and the cancel script — and parses the status output. The
executor (the operator's poller) runs them over the resource's shared connection.

Whatever the scheduler, a job's end is read from its markers (see
`cerise.remote.jobscript`): queues forget finished jobs, and accounting may be off. The
status script therefore reports the queue's view of the jobs, then whether the queue
command worked (its exit status and its own words, on a line of its own; it is given
`QUEUE_TIMEOUT` seconds), then every job's markers, then an end line. An outage is never
mistaken for jobs that left the queue: if the queue command failed, timed out or printed
what its plug-in cannot read, or the output was cut short, `parse_status` raises
`StatusUnavailable` and says nothing of any job — not even of those with an exit code,
which the next good poll reports.

The script reads the markers before it asks the queue: a scheduler that requeues a job (a
preemption) records the requeue before it signals the job, so the queue's answer is never
older than an exit code that signal made the job script write, and `observe` can tell such
an exit code from the job's end. A job that ends in between is seen gone without an exit
code, which the next poll finds.

A submit that fails is a refusal (the scheduler will never take the job as asked: it said
why) unless its words are those of a passing failure (`PASSING_SUBMIT_FAILURES`: the
controller is down or slow), after which submitting again may work. Such a failure may
have created the job all the same (a time-out after the scheduler took it): before
submitting again, the executor looks for it by its name, with a `Searching` scheduler's
`search_command` and `parse_search` (`cerise.remote.jobscript` says when).
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Protocol, runtime_checkable

from cerise.model.observations import Observation as Observation
from cerise.model.observations import RemoteState as RemoteState
from cerise.remote.failures import StatusUnavailable as StatusUnavailable
from cerise.remote.jobscript import TERMINATED_CODE, JobFiles, SubmitOutcome, SubmitResult


class QueueState(StrEnum):
    """What the scheduler says of a job."""

    WAITING = "waiting"
    RUNNING = "running"
    ABSENT = "absent"
    """Not (or no longer) in the queue."""


@dataclass(frozen=True)
class JobRef:
    """A submitted job as the poller knows it."""

    key: str
    """A stable identifier of the job (its Kubernetes UID), also used in its job name."""
    files: JobFiles
    remote_id: str


@dataclass(frozen=True)
class QueueEntry:
    """What a queue says of one job, beyond its state."""

    state: QueueState
    word: str = ""
    """The scheduler's own word for the state (`PENDING`, `TIMEOUT`, `Eqw`…)."""
    never_runs: str | None = None
    """For a waiting job: the scheduler's words when it holds the job for a reason that
    cannot clear by itself (a request beyond a partition's limits, an error state)."""
    timed_out: bool = False
    """The scheduler says the job was ended by its time limit (Slurm's `TIMEOUT`)."""
    out_of_memory: str | None = None
    """The scheduler's words when it says the job ran out of memory (Slurm's
    `OUT_OF_MEMORY`); never guessed from an exit status."""
    restarts: int = 0
    """How many times the scheduler has requeued the job to run its script again (Slurm's
    restart count, after a preemption); 0 where the scheduler does not requeue."""
    requeued: bool = False
    """The scheduler holds the job to run its script again and has not started it yet
    (Grid Engine's `Rq`, which counts no restarts): no exit code is the job's end."""


@dataclass(frozen=True)
class Request:
    """What a job asks of the scheduler."""

    name: str
    cores: int = 0
    time_limit: int = 0
    """Seconds; 0 for the scheduler's default."""
    memory: int = 0
    """MiB for the node that runs the runner (CWL's `ramMin`); 0 for the scheduler's
    default."""
    rerun: bool = True
    """Whether a scheduler that preempts by requeuing may run the job's script again
    (`Requeueing`); not for a pilot allocation, whose runs Cerise itself requeues."""


class Scheduler(Protocol):
    """The contract every scheduler module fulfils."""

    name: str

    def submit_command(self, files: JobFiles, request: Request) -> str:
        """Shell text that submits `files.script` and prints only the scheduler's id."""
        ...

    def queue_script(self, jobs: Sequence[JobRef]) -> str:
        """Shell text printing the queue's view of `jobs` (one command for all of them).
        It exits non-zero, with the scheduler's words on stderr, if the queue cannot say."""
        ...

    def parse_queue(
        self, output: str, jobs: Sequence[JobRef]
    ) -> Mapping[str, QueueState | QueueEntry]:
        """The queue's view of each job (by key) from `queue_script`'s output; raises
        StatusUnavailable if the output is not what the queue command prints."""
        ...

    def cancel_script(self, jobs: Sequence[JobRef]) -> str:
        """Shell text that stops `jobs`, queued or running."""
        ...


@runtime_checkable
class Directing(Protocol):
    """A scheduler that also takes options as directives in the job script (`#PBS`)."""

    def directives(self, files: JobFiles, request: Request) -> Sequence[str]:
        """Comment lines for the top of the job script."""
        ...


@runtime_checkable
class Requeueing(Protocol):
    """A scheduler that may run a job's script again (a preemption) and says so."""

    restart_variable: str
    """The environment variable in which a rerun job script finds how many times the job
    was requeued (`QueueEntry.restarts` of the run)."""


@runtime_checkable
class Searching(Protocol):
    """A scheduler that can find a job by the name it was submitted under."""

    def search_command(self, files: JobFiles, request: Request) -> str:
        """Shell text listing the user's jobs named as `request`'s; it exits non-zero, with
        the scheduler's words on stderr, if the scheduler cannot say."""
        ...

    def parse_search(self, output: str, files: JobFiles, request: Request) -> str | None:
        """The id of the job named as `request`'s in `search_command`'s output, or None;
        StatusUnavailable if the output is not what the command prints."""
        ...


QUEUE_LINE = "--cerise-queue--"
"""Starts the line with the queue command's exit status and its words."""
MARKERS_BEGIN = "--cerise-markers--"
END_LINE = "--cerise-end--"
QUEUE_TIMEOUT = 60
"""Seconds the queue command may take (squeue takes ~15 s to give up on a stopped
controller); the remote command as a whole has longer."""
WORDS_LIMIT = 1000
"""Characters of the scheduler's words kept in a message."""


_READ_FUNCTION = """__cerise_read() {
    __cv=- __cw=-
    { read -r __cv __cw _ < "$1"; } 2>/dev/null
    __cv=${__cv:--} __cw=${__cw:--}
}"""
"""Reads the first two words of marker file $1 into $__cv $__cw (`-` if absent) with
builtins only: a poll of many jobs starts no process per job."""
QUEUE_END = "__CERISE_QUEUE_END__"
"""Ends the here-document holding the queue script (no size limit, unlike an argument)."""


def markers_script(jobs: Sequence[JobRef]) -> str:
    """Shell text printing, after `MARKERS_BEGIN`, `m <key> <exit code> <started> <signal>
    <signalled at> <restart>` for each job (`-` for what is missing; the restart is that of
    the run that wrote the exit code), then `f <size> <mtime> <path>` for each runner log
    and exit code marker that exists.

    The jobs are data for one loop, not a command each: bash copies a function's body
    recursively, and the connection runs every script as a function.
    """
    lines = [f"echo {MARKERS_BEGIN}", _READ_FUNCTION]
    if jobs:
        q = shlex.quote
        data = " ".join(f"{q(job.key)} {q(job.files.exit_code)} {q(job.files.started)} "
                        f"{q(job.files.terminated)}" for job in jobs)
        paths = " ".join(q(path) for job in jobs
                         for path in (job.files.stderr, job.files.exit_code))
        lines.append(f"""while IFS= read -r -d '' __k && IFS= read -r -d '' __code &&
        IFS= read -r -d '' __started && IFS= read -r -d '' __terminated; do
    __cerise_read "$__code"; __c=$__cv __r=$__cw
    __cerise_read "$__started"; __s=$__cv
    __cerise_read "$__terminated"
    printf 'm %s %s %s %s %s %s\\n' "$__k" "$__c" "$__s" "$__cv" "$__cw" "$__r"
done < <(printf '%s\\0' {data})
printf '%s\\0' {paths} | xargs -0 -r stat -c 'f %s %Y %n' -- 2>/dev/null || true""")
    return "\n".join(lines)


def status_script(
    scheduler: Scheduler, jobs: Sequence[JobRef], timeout: int = QUEUE_TIMEOUT
) -> str:
    """The one script run per poll of a compute resource: the queue, whether it answered,
    the markers (read first: see the module's docstring), the end line."""
    limit = int(timeout)
    queue = scheduler.queue_script(jobs)
    if f"\n{QUEUE_END}\n" in f"\n{queue}\n":
        raise ValueError(f"a queue script may not hold the line {QUEUE_END}")
    return f"""__cerise_markers=$(
{markers_script(jobs)}
)
{{ __cerise_err=$(timeout -k 5 {limit} bash -s 2>&1 1>&3 3>&- <<'{QUEUE_END}'
{queue}
{QUEUE_END}
); }} 3>&1
__cerise_status=$?
case $__cerise_status in 124|137) __cerise_err="no answer within {limit} s. $__cerise_err";; esac
__cerise_err=${{__cerise_err//[$'\\n\\r\\t']/ }}
printf '\\n%s %s %s\\n' {QUEUE_LINE} "$__cerise_status" "${{__cerise_err:0:{WORDS_LIMIT}}}"
printf '%s\\n' "$__cerise_markers"
echo {END_LINE}
"""


@dataclass(frozen=True)
class Markers:
    """What a job's marker files say (see `cerise.remote.jobscript`)."""

    exit_code: int | None = None
    started: int | None = None
    signal: str | None = None
    signalled_at: int | None = None
    run: int = 0
    """The restart of the run that wrote the exit code (0 for the first run)."""


def _number(text: str) -> int | None:
    return int(text) if text.lstrip("-").isdigit() else None


def parse_status(
    scheduler: Scheduler, output: str, jobs: Sequence[JobRef]
) -> dict[str, Observation]:
    """Every job's observation from `status_script`'s output; StatusUnavailable if the
    output says nothing reliable (see the module's docstring)."""
    queue_text, found, rest = output.rpartition(f"\n{QUEUE_LINE} ")
    status_line, _, rest = rest.partition("\n")
    status, _, words = status_line.partition(" ")
    if not found or not status.isdigit():
        raise StatusUnavailable(f"{scheduler.name}: the status output was cut short")
    if int(status) != 0:
        words = words.strip()[:WORDS_LIMIT] or "no message"
        raise StatusUnavailable(
            f"{scheduler.name}: the queue command failed (exit status {status}): {words}")
    marker_text, found_end, _ = rest.removeprefix(f"{MARKERS_BEGIN}\n").partition(
        f"{END_LINE}\n")
    if not rest.startswith(f"{MARKERS_BEGIN}\n") or not found_end:
        raise StatusUnavailable(f"{scheduler.name}: the status output was cut short")
    queue = scheduler.parse_queue(queue_text.removeprefix("\n"), jobs)
    markers: dict[str, Markers] = {}
    stats: dict[str, tuple[int, int]] = {}
    for line in marker_text.splitlines():
        kind, _, fields = line.partition(" ")
        if kind == "m":
            key, code, started, signal, at, run = (*fields.split(" "), *[""] * 6)[:6]
            markers[key] = Markers(_number(code), _number(started),
                                    signal if signal not in ("", "-") else None, _number(at),
                                    max(_number(run) or 0, 0))
        elif kind == "f":
            size, mtime, path = (*fields.split(" ", 2), "", "", "")[:3]
            if size.isdigit() and mtime.isdigit():
                stats[path] = (int(size), int(mtime))
    missing = [job.key for job in jobs if job.key not in markers]
    if missing:
        raise StatusUnavailable(f"{scheduler.name}: the status output lacks job {missing[0]}")
    observed = {}
    for job in jobs:
        entry = queue.get(job.key, QueueState.ABSENT)
        found_markers = markers[job.key]
        log_size = stats.get(job.files.stderr, (0, 0))[0]
        ended = stats.get(job.files.exit_code, (0, 0))[1] or None
        observed[job.key] = observe(entry if isinstance(entry, QueueEntry) else QueueEntry(entry),
                                    found_markers, log_size=log_size, ended=ended)
    return observed


def observe(entry: QueueEntry, markers: Markers | None = None, *, log_size: int = 0,
            ended: int | None = None) -> Observation:
    """Combine the queue's word and the markers into one observation.

    An exit code means the job is done — unless the scheduler has requeued the job since
    the run that wrote it (a preemption) and holds it, waiting or running, for a rerun:
    then that run's exit code and signal are not the job's. A job gone from the queue
    after its job script recorded a signal is done too, terminated (`TERMINATED_CODE`): it
    was killed before it could record its exit code (a scheduler's KILL after its grace).
    """
    markers = markers or Markers()
    rerun = entry.requeued or entry.restarts > markers.run
    if rerun and entry.state is not QueueState.ABSENT:
        markers = Markers(started=markers.started)  # the earlier run's end is not the job's
    seen = Observation(RemoteState.VANISHED, log_size=log_size, started=markers.started,
                       signal=markers.signal, signalled_at=markers.signalled_at,
                       timed_out=entry.timed_out, out_of_memory=entry.out_of_memory,
                       restarts=entry.restarts)
    if markers.exit_code is not None:
        return replace(seen, state=RemoteState.DONE, exit_code=markers.exit_code, ended=ended)
    if entry.state is QueueState.WAITING:
        return replace(seen, state=RemoteState.WAITING, never_runs=entry.never_runs)
    if entry.state is QueueState.RUNNING:
        return replace(seen, state=RemoteState.RUNNING)
    if markers.signal is not None:
        return replace(seen, state=RemoteState.DONE, exit_code=TERMINATED_CODE)
    return seen


PASSING_SUBMIT_FAILURES = tuple(re.compile(pattern, re.IGNORECASE) for pattern in (
    # Slurm (sbatch, and the Torque wrappers that run it)
    r"unable to contact slurm controller",
    r"socket timed out on send/recv",
    r"slurm temporarily unable to accept job",
    r"zero bytes were transmitted or received",
    r"slurm backup controller in standby mode",
    # Grid Engine (qsub)
    r"unable to contact qmaster",
    r"commlib error",
    r"failed receiving gdi request",
    r"unable to send message to qmaster",
    # Torque/PBS (qsub)
    r"cannot connect to (pbs )?server",
    r"pbs_iff: cannot (connect|read reply)",
    # any of them, and the host itself
    r"^submit exited with status \d+$",  # said nothing: see `jobscript.parse_submit`
    r"connection (refused|timed out|reset)",
    r"resource temporarily unavailable",
    r"try again later",
))
"""Words of a submit failure that may pass: the scheduler is down, slow or busy."""


def judge_submit(result: SubmitResult) -> SubmitResult:
    """A failed submit as REFUSED (the scheduler's words say it will never take the job) or
    FAILED (a passing failure, or no words at all: submitting again may work)."""
    if result.outcome is not SubmitOutcome.FAILED or any(
            pattern.search(result.detail) for pattern in PASSING_SUBMIT_FAILURES):
        return result
    return replace(result, outcome=SubmitOutcome.REFUSED)
