"""Scheduler `slurm`: sbatch, squeue and scancel.

Submit: `sbatch --parsable` prints `ID` or `ID;CLUSTER`; the id is the part before `;`.
The job script's output (not the runner's) goes to `scheduler.txt` in the job directory,
stderr included. `--requeue`: a job preempted where the site preempts by requeuing
(`PreemptMode=REQUEUE`) is requeued and runs its script again rather than being cancelled,
whatever the site's `JobRequeue` default (an option `--no-requeue` turns that off again).
Its rerun knows its restart from `SLURM_RESTART_COUNT` (`restart_variable`) and says so
in its markers; squeue's restart count of the job, larger than that of the run that wrote
an exit code, says that exit code is not the job's end (`schedulers.observe`): Slurm
counts the restart before it signals the preempted run (squeue in its TERM trap says
COMPLETING with the new count). A user's scancel, the time limit and an end of the script
are never requeued. A pilot allocation
(`Request.rerun` false) is submitted with `--no-requeue`: Cerise requeues its runs.

Search (after a submit that may have created the job): `squeue --name NAME -o '%i|%j'`
of the user's jobs in all states.

Status: one `squeue` of all the user's jobs in all states, with the pending reason and
the restart count (`-O`, as `-o` has no letter for it; each field ends with `|`). Not
`-j <ids>`: a single unknown id (records expire `MinJobAge` after the end) makes it fail
with "Invalid job id specified". Finished states (COMPLETED, FAILED, CANCELLED, TIMEOUT…)
and unknown ones count as absent, so the markers decide; TIMEOUT also says the time limit
ended the job, OUT_OF_MEMORY that its memory did (Slurm says so only where its task plugin
enforces memory with cgroups; squeue lists a finished job for `MinJobAge`, 300 s by
default, so a poll sees the word). A pending job whose reason cannot clear by itself
(`NEVER_RUNS`: beyond its partition's limits, impossible constraints, a dependency that
can never be met, a per-job QOS or association limit) carries the reason as `never_runs`.
Reasons that clear (Resources, Priority, ReqNodeNotAvail: a node down or reserved for
maintenance) do not. Slurm also gives PartitionNodeLimit and PartitionConfig while nodes
it would need are down, drained or powered off, so after squeue one `sinfo` lists the node
states: while any node is unavailable those two reasons count as clearing (the job waits,
and fails once every node is back and the reason stays). A line squeue would not print
makes the status unavailable.

Limits: Slurm keeps time limits in whole minutes and rounds up; it stops a job at its
limit with SIGTERM (then SIGKILL after KillWait), checking about every 30 s. Cores become
nodes, tasks and CPUs per task as `batch.node_shape` says; options are appended and may
override. Memory (MiB) is `--mem`, per node: the runner's node gets it (with memory not
a consumable resource, Slurm still refuses more than a node's RealMemory). With
`EnforcePartLimits` a request beyond the partition's limits is refused at
submit ("More processors requested than permitted"); without, it pends forever with a
reason of `NEVER_RUNS`.
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

WAITING_STATES = frozenset({
    "PENDING", "CONFIGURING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "RESV_DEL_HOLD",
})
RUNNING_STATES = frozenset({
    "RUNNING", "COMPLETING", "SUSPENDED", "STOPPED", "SIGNALING", "STAGE_OUT", "RESIZING",
})


NEVER_RUNS = {
    "PartitionTimeLimit": "its time limit is beyond its partition's",
    "PartitionNodeLimit": "it asks for more nodes than its partition has or allows",
    "PartitionConfig": "no node of its partition has what it asks for",
    "BadConstraints": "its constraints can never be met",
    "DependencyNeverSatisfied": "a job it depends on can no longer end as required",
    "InvalidAccount": "its account is not valid",
    "InvalidQOS": "its QOS is not valid",
}
"""Pending reasons that do not clear by themselves, with what they mean."""
UNTIL_NODES_RETURN = frozenset({"PartitionNodeLimit", "PartitionConfig"})
"""Reasons of `NEVER_RUNS` that Slurm also gives while nodes are unavailable."""
NODES_BEGIN = "--- cerise: node states"
"""The line between squeue's output and sinfo's node states (`%T`)."""
UNAVAILABLE_NODES = frozenset({
    "down", "drained", "draining", "drain", "fail", "failing", "maint", "future", "unknown",
    "reboot_issued", "reboot_requested", "power_down", "powered_down", "powering_down",
    "powering_up", "planned", "inval", "perfctrs", "blocked",
})
"""sinfo's base node states in which a node cannot take jobs now but may again."""
NODE_FLAGS = "*~#!%$@^-+"
"""sinfo's state suffixes; every one but `+` (a multi-state) means the node is not fully
available (not responding, powered off or on the way, maintenance, reboot, planned)."""
PER_JOB_LIMIT = re.compile(r"(Assoc|QOS)Max\w*PerJob\w*|QOSMin\w+")
"""Reasons naming a per-job limit of an association or QOS (not a per-user one, which
clears as other jobs end)."""
LINE = re.compile(r"\s*([^|\s]+)\s*\|\s*([A-Z_]+)\s*\|(.*)\|\s*(\d+)\s*\|?")
"""`JobID:|,State:|,Reason:|,RestartCnt:|`: id, state, reason, restart count (squeue may
pad a field with spaces)."""
QUEUE_FORMAT = "JobID:|,State:|,Reason:|,RestartCnt:|"
"""squeue's `-O` fields: with a suffix and no size, squeue 22.05 adds no padding."""
NAMED_LINE = re.compile(r"([^|\s]+)\|(.*)")
"""`%i|%j`: id, name (a search by name)."""


def never_runs(reason: str, *, nodes_unavailable: bool = False) -> str | None:
    """Slurm's words for a pending reason that cannot clear by itself, else None; with
    `nodes_unavailable`, the reasons of `UNTIL_NODES_RETURN` may clear."""
    if nodes_unavailable and reason in UNTIL_NODES_RETURN:
        return None
    meaning = NEVER_RUNS.get(reason)
    if meaning is None and PER_JOB_LIMIT.fullmatch(reason):
        meaning = "it asks for more than a per-job limit of its account or QOS allows"
    return f"Slurm holds it with reason {reason}: {meaning}" if meaning else None


def node_unavailable(state: str) -> bool:
    """Whether sinfo's `%T` state of a node means it cannot take jobs now."""
    base = state.rstrip(NODE_FLAGS).lower()
    return base in UNAVAILABLE_NODES or any(flag in state[len(base):] for flag in
                                            NODE_FLAGS.replace("+", ""))


def slurm_time(seconds: int) -> str:
    """A time limit as sbatch's `D-HH:MM:SS`."""
    days, rest = divmod(max(0, int(seconds)), 86400)
    return f"{days}-{batch.clock(rest)}"


def queue_state(state: str) -> QueueState:
    """squeue's long state name (`%T`) as a queue state."""
    if state in WAITING_STATES:
        return QueueState.WAITING
    if state in RUNNING_STATES:
        return QueueState.RUNNING
    return QueueState.ABSENT


@dataclass(frozen=True)
class SlurmScheduler:
    """Slurm through its own commands."""

    settings: BatchSettings = field(default_factory=BatchSettings)
    name = "slurm"
    restart_variable = "SLURM_RESTART_COUNT"

    def submit_command(self, files: JobFiles, request: Request) -> str:
        words = [
            "sbatch", "--parsable", "--requeue" if request.rerun else "--no-requeue",
            f"--job-name={request.name}",
            f"--chdir={files.work}",
            f"--output={batch.scheduler_log(files)}",
        ]  # fmt: skip
        if request.time_limit > 0:
            words.append(f"--time={slurm_time(request.time_limit)}")
        if self.settings.queue:
            words.append(f"--partition={self.settings.queue}")
        if request.cores > 0:
            shape = batch.node_shape(request.cores, self.settings)
            words += [
                f"--nodes={shape.nodes}",
                f"--ntasks-per-node={shape.tasks_per_node}",
                f"--cpus-per-task={shape.cpus_per_task}",
            ]
        if request.memory > 0:
            words.append(f"--mem={int(request.memory)}M")
        words += [*self.settings.options, files.script]
        return f"out=$({batch.command(words)}) && printf '%s\\n' \"${{out%%;*}}\""

    def queue_script(self, jobs: Sequence[JobRef]) -> str:
        return (f"squeue -u \"$(id -un)\" -h -t all -O '{QUEUE_FORMAT}' && "
                f"{{ echo '{NODES_BEGIN}'; sinfo -h -o '%T' 2>/dev/null || true; }}")

    def parse_queue(self, output: str, jobs: Sequence[JobRef]) -> Mapping[str, QueueEntry]:
        entries: dict[str, QueueEntry] = {}
        output, _, states = output.partition(f"{NODES_BEGIN}\n")
        nodes_unavailable = any(node_unavailable(state) for state in states.split())
        for line in output.splitlines():
            if not line.strip():
                continue
            match = LINE.fullmatch(line.strip())
            if match is None:
                raise StatusUnavailable(
                    f"slurm: squeue printed what Cerise cannot read: {line[:200]!r}")
            job_id, word, reason, restarts = match.groups()
            reason = reason.strip()
            state = queue_state(word)
            entries[job_id] = QueueEntry(
                state, word, never_runs(reason, nodes_unavailable=nodes_unavailable)
                if state is QueueState.WAITING else None,
                timed_out=word == "TIMEOUT", out_of_memory=(
                    "Slurm reports OUT_OF_MEMORY" if word == "OUT_OF_MEMORY" else None),
                restarts=int(restarts))
        absent = QueueEntry(QueueState.ABSENT)
        return {job.key: entries.get(job.remote_id, absent) for job in jobs}

    def cancel_script(self, jobs: Sequence[JobRef]) -> str:
        # scancel exits 0 for finished and unknown ids, so a failure is a real one.
        ids = batch.job_ids(jobs)
        return batch.command(["scancel", *ids]) if ids else "true"

    def search_command(self, files: JobFiles, request: Request) -> str:
        return (f"squeue -u \"$(id -un)\" -h -t all "
                f"{batch.command(['--name', request.name, '-o', '%i|%j'])}")

    def parse_search(self, output: str, files: JobFiles, request: Request) -> str | None:
        return search_result(output, request.name)


def search_result(output: str, name: str) -> str | None:
    """The id of the job named `name` in a search's `%i|%j` lines (the newest, if several)."""
    found = None
    for line in output.splitlines():
        if not line.strip():
            continue
        match = NAMED_LINE.fullmatch(line.strip())
        if match is None:
            raise StatusUnavailable(f"slurm: squeue printed what Cerise cannot read: "
                                    f"{line[:200]!r}")
        if match.group(2) == name:
            found = match.group(1)
    return found
