"""What the batch schedulers (slurm, torque, gridengine) share: settings, shapes, names.

Pure helpers for the three scheduler modules. A job asks for a number of cores; a batch
system wants nodes and processes. `node_shape` spreads the cores over as few nodes as the
resource's `coresPerNode` allows, evenly, and splits each node's share into at most
`slotsPerNode` processes (MPI slots) of one or more cores each. The runner itself runs on
the first node only; the other nodes are there for what it starts (MPI).
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterable
from dataclasses import dataclass

from cerise.model.compute import ResourceSpec
from cerise.remote.jobscript import JobFiles
from cerise.remote.schedulers import JobRef


@dataclass(frozen=True)
class BatchSettings:
    """A compute resource's settings for its batch scheduler."""

    queue: str | None = None
    cores_per_node: int = 32
    slots_per_node: int = 1
    parallel_environment: str | None = None
    """Grid Engine only: the PE that grants a job more than one slot."""
    memory_resource: str = "h_vmem"
    """Grid Engine only: the complex that memory is asked for with."""
    options: tuple[str, ...] = ()
    """Extra submit options, one word each, appended after ours (so they may override)."""

    @classmethod
    def from_spec(cls, spec: ResourceSpec) -> BatchSettings:
        return cls(
            queue=spec.queue,
            cores_per_node=spec.cores_per_node,
            slots_per_node=spec.slots_per_node,
            parallel_environment=spec.parallel_environment,
            memory_resource=spec.memory_resource,
            options=spec.scheduler_options,
        )


@dataclass(frozen=True)
class NodeShape:
    """How a job's cores are laid out: `nodes` times `tasks_per_node` times `cpus_per_task`."""

    nodes: int
    tasks_per_node: int
    cpus_per_task: int

    @property
    def cores_per_node(self) -> int:
        return self.tasks_per_node * self.cpus_per_task


def node_shape(cores: int, settings: BatchSettings) -> NodeShape:
    """The smallest even layout of at least `cores` cores (one core if none are asked for)."""
    cores = max(1, cores)
    nodes = -(-cores // max(1, settings.cores_per_node))
    per_node = -(-cores // nodes)
    tasks = max(1, min(settings.slots_per_node, per_node))
    return NodeShape(nodes=nodes, tasks_per_node=tasks, cpus_per_task=-(-per_node // tasks))


def per_process(memory: int, processes: int) -> int:
    """A job's `memory` (MiB) shared among `processes`, rounded up: what each asks for where
    a scheduler counts memory per process or slot."""
    return -(-max(0, int(memory)) // max(1, processes))


def clock(seconds: int) -> str:
    """`seconds` as HH:MM:SS; hours may exceed 99."""
    minutes, secs = divmod(max(0, int(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}"


def job_name(name: str, *, keep: str, limit: int) -> str:
    """`name` reduced to the characters of the regex class `keep`, starting with a letter."""
    kept = re.sub(f"[^{keep}]", "", name)
    if not (kept[:1].isascii() and kept[:1].isalpha()):
        kept = f"j{kept}"
    return kept[:limit]


def scheduler_log(files: JobFiles) -> str:
    """Where the batch system writes the job script's own output (not the runner's)."""
    return f"{files.job_dir.rstrip('/')}/scheduler.txt"


def command(words: Iterable[str]) -> str:
    """Shell text running `words` as one command, each word quoted."""
    return " ".join(shlex.quote(word) for word in words)


def job_ids(jobs: Iterable[JobRef]) -> list[str]:
    """The scheduler ids of `jobs`, skipping jobs without one."""
    return [job.remote_id for job in jobs if job.remote_id]
