"""Scheduler `torque`: qsub, qstat -f and qdel, for Torque/PBS and Slurm's Torque wrappers.

Written against both: Slurm's Perl wrappers (`slurm-wlm-torque`, tested) and real Torque
(by its documentation). What works on both:

* Submit: `qsub -N NAME -j oe -o LOG -r n -l walltime=HH:MM:SS,nodes=N:ppn=P [-q QUEUE]
  job.sh`, and the resource's options as a `#PBS` directive in the job script. No `-d`
  (the wrappers reject it; the job script `cd`s itself), no stdin script, no
  `DD:HH:MM:SS` walltime. Names are cut to 15 letters and digits (POSIX and older
  Torque). The output is the id: `123` (wrappers) or `123.server` (Torque). The wrappers
  print their errors on stdout; the submit moves them to stderr.
* Status: one `qstat -f ID…` for the jobs polled, read by `Job Id:` and `job_state`.
  Exit status 153 means some (Torque) or all (wrappers) ids are unknown, which is normal
  for finished jobs; any other failure, or a line qstat would not print, makes the status
  unavailable. Ids match on the part before the first dot, as `qstat` may print the
  server's full name. Neither says why a queued job waits, so an impossible request is
  caught before submitting (`cerise.model.limits`) or refused by qsub, not seen pending.
* Search (after a submit that may have created the job): `qstat -f` of all jobs, matched
  on `Job_Name` (cut as at submit).
* Cancel: `qdel ID…`, whose exit status is ignored: both fail for finished jobs.

Limits: the wrappers' qsub rebuilds the sbatch command as shell text and runs it through
`/bin/sh`, so a value holding shell syntax on qsub's command line would run as a command
there. The resource's options therefore never go on it: they are a `#PBS` directive line
in the job script, which qsub (Torque) or sbatch (the wrappers) read as data, each word
double-quoted if it holds a blank, quote, backslash or `#`. Being directives, they cannot
override what the command line sets (name, output, walltime, nodes, queue). The values
that do go on the command line are limited to `SAFE` characters: the queue, and the job's
paths (a base path with spaces is refused with a message). `ppn` is the cores per node;
the slots setting does not apply. Memory is `mem=Nmb`: Torque's whole job, which the
wrappers pass on as sbatch's `--mem` (per node); not `pmem`, which Torque enforces on each
process and so would hold the runner to a share.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

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

UNKNOWN_JOB = 153
"""qstat's exit status for an unknown job id (PBSE_UNKJOBID 15001, modulo 256)."""

NAME_LENGTH = 15

WAITING_STATES = frozenset("QWHT")
"""Queued, waiting for its start time, held, in transit."""
RUNNING_STATES = frozenset("RES")
"""Running, exiting, suspended. C (completed) and the wrappers' U (unknown) are absent."""


def queue_state(state: str) -> QueueState:
    """A `job_state` letter as a queue state."""
    if state in WAITING_STATES:
        return QueueState.WAITING
    if state in RUNNING_STATES:
        return QueueState.RUNNING
    return QueueState.ABSENT


def short_id(job_id: str) -> str:
    """`123` of `123.server.example.org`."""
    return job_id.strip().split(".", 1)[0]


SAFE = re.compile(r"[A-Za-z0-9_@%+=:,./-]+")
"""Characters that mean the same to a shell as to qsub: all a value on qsub's command line
may hold on this backend."""


PLAIN_WORD = re.compile(r"[^\s\"'\\#]+")
"""A directive word that needs no quotes."""


def _check(what: str, value: str) -> str:
    if not SAFE.fullmatch(value):
        raise ValueError(
            f"{what} {value[:100]!r} holds characters that Slurm's Torque wrappers would pass "
            "to a shell; on the torque scheduler only letters, digits and _@%+=:,./- are "
            "allowed")
    return value


def directive_word(word: str) -> str:
    """`word` as qsub and sbatch read it from a `#PBS` line: as is, or double-quoted with
    backslashes before `"` and `\\`. A control character (a newline would end the
    directive and start a command) is refused."""
    if any(ord(char) < 32 or ord(char) == 127 for char in word):
        raise ValueError(f"the scheduler option {word[:100]!r} holds a control character "
                         "(a line break, a tab); the torque scheduler cannot pass it")
    if PLAIN_WORD.fullmatch(word):
        return word
    escaped = word.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


def job_name(request: Request) -> str:
    """The name a job is submitted under: at most `NAME_LENGTH` letters and digits."""
    return batch.job_name(request.name, keep="A-Za-z0-9", limit=NAME_LENGTH)


def job_by_name(output: str, name: str) -> str | None:
    """The id of the job named `name` in `qstat -f`'s output of all jobs (the newest, if
    several); StatusUnavailable for a line qstat would not print."""
    found, current = None, ""
    for line in output.splitlines():
        text = line.strip()
        if text.startswith("Job Id:"):
            current = text.removeprefix("Job Id:").strip()
        elif text and not line[:1].isspace():
            raise StatusUnavailable(
                f"torque: qstat printed what Cerise cannot read: {line[:200]!r}")
        elif current and text.startswith("Job_Name") and text.partition("=")[2].strip() == name:
            found = current
    return found


@dataclass(frozen=True)
class TorqueScheduler:
    """Torque/PBS, or Slurm behind its Torque wrappers."""

    settings: BatchSettings = field(default_factory=BatchSettings)
    name = "torque"

    def __post_init__(self) -> None:
        if self.settings.queue:
            _check("the queue", self.settings.queue)
        for option in self.settings.options:
            directive_word(option)

    def directives(self, files: JobFiles, request: Request) -> list[str]:
        """The resource's options as one `#PBS` line (none without options)."""
        if not self.settings.options:
            return []
        return ["#PBS " + " ".join(directive_word(word) for word in self.settings.options)]

    def submit_command(self, files: JobFiles, request: Request) -> str:
        _check("the job directory", files.job_dir)
        name = job_name(request)
        words = ["qsub", "-N", name, "-j", "oe", "-o", batch.scheduler_log(files), "-r", "n"]
        resources = []
        if request.time_limit > 0:
            resources.append(f"walltime={batch.clock(request.time_limit)}")
        if request.cores > 0:
            shape = batch.node_shape(request.cores, self.settings)
            resources.append(f"nodes={shape.nodes}:ppn={shape.cores_per_node}")
        if request.memory > 0:
            resources.append(f"mem={int(request.memory)}mb")
        if resources:
            words += ["-l", ",".join(resources)]
        if self.settings.queue:
            words += ["-q", self.settings.queue]
        words.append(files.script)
        return (
            f"if out=$({batch.command(words)}); then printf '%s\\n' \"$out\"; "
            "else printf '%s\\n' \"$out\" >&2; false; fi"
        )

    def queue_script(self, jobs: Sequence[JobRef]) -> str:
        ids = batch.job_ids(jobs)
        if not ids:
            return "true"
        return (
            f"{batch.command(['qstat', '-f', *ids])}\n"
            f'status=$?; [ "$status" -eq 0 ] || [ "$status" -eq {UNKNOWN_JOB} ] '
            '|| exit "$status"'
        )

    def parse_queue(self, output: str, jobs: Sequence[JobRef]) -> Mapping[str, QueueEntry]:
        entries: dict[str, QueueEntry] = {}
        current = ""
        for line in output.splitlines():
            text = line.strip()
            if text.startswith("Job Id:"):
                current = short_id(text.removeprefix("Job Id:"))
            elif text and not line[:1].isspace():
                # Attributes (and their continuation lines) are indented.
                raise StatusUnavailable(
                    f"torque: qstat printed what Cerise cannot read: {line[:200]!r}")
            elif current and text.startswith("job_state"):
                word = text.partition("=")[2].strip()
                entries[current] = QueueEntry(queue_state(word), word)
        absent = QueueEntry(QueueState.ABSENT)
        return {job.key: entries.get(short_id(job.remote_id), absent) for job in jobs}

    def cancel_script(self, jobs: Sequence[JobRef]) -> str:
        ids = batch.job_ids(jobs)
        return f"{batch.command(['qdel', *ids])} || true" if ids else "true"

    def search_command(self, files: JobFiles, request: Request) -> str:
        return "qstat -f"

    def parse_search(self, output: str, files: JobFiles, request: Request) -> str | None:
        return job_by_name(output, job_name(request))
