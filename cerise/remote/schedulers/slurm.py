"""Scheduler `slurm`: sbatch, squeue and scancel.

Submit: `sbatch --parsable` prints `ID` or `ID;CLUSTER`; the id is the part before `;`.
The job script's output (not the runner's) goes to `scheduler.txt` in the job directory,
stderr included. `--no-requeue`: a requeued job would run its script again after the TERM
trap had already written the `exit_code` that the poller takes as the end.

Status: one `squeue` of all the user's jobs in all states. Not `-j <ids>`: a single
unknown id (records expire `MinJobAge` after the end) makes it fail with "Invalid job id
specified". Finished states (COMPLETED, FAILED, CANCELLED, TIMEOUT…) and unknown ones
count as absent, so the `exit_code` marker decides. A failing squeue (controller down or
timed out) fails the poll rather than making every job look gone.

Limits: Slurm keeps time limits in whole minutes and rounds up. Cores become nodes, tasks
and CPUs per task as `batch.node_shape` says; options are appended and may override.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from cerise.remote.jobscript import JobFiles
from cerise.remote.schedulers import JobRef, QueueState, Request, batch
from cerise.remote.schedulers.batch import BatchSettings

WAITING_STATES = frozenset({
    "PENDING", "CONFIGURING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "RESV_DEL_HOLD",
})
RUNNING_STATES = frozenset({
    "RUNNING", "COMPLETING", "SUSPENDED", "STOPPED", "SIGNALING", "STAGE_OUT", "RESIZING",
})


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

    def submit_command(self, files: JobFiles, request: Request) -> str:
        words = [
            "sbatch", "--parsable", "--no-requeue",
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
        words += [*self.settings.options, files.script]
        return f"out=$({batch.command(words)}) && printf '%s\\n' \"${{out%%;*}}\""

    def queue_script(self, jobs: Sequence[JobRef]) -> str:
        return "squeue -u \"$(id -un)\" -h -t all -o '%i|%T' || exit"

    def parse_queue(self, output: str, jobs: Sequence[JobRef]) -> Mapping[str, QueueState]:
        states: dict[str, QueueState] = {}
        for line in output.splitlines():
            job_id, separator, state = line.strip().partition("|")
            if separator:
                states[job_id] = queue_state(state)
        return {job.key: states.get(job.remote_id, QueueState.ABSENT) for job in jobs}

    def cancel_script(self, jobs: Sequence[JobRef]) -> str:
        # scancel exits 0 for finished and unknown ids, so a failure is a real one.
        ids = batch.job_ids(jobs)
        return batch.command(["scancel", *ids]) if ids else "true"
