"""Whether a compute resource can ever run what a job asks: the refusals before staging.

Asked once a job's workflow has been validated, before anything of it is staged: a job
that asks for more cores, memory or time than the resource can ever give ends at once in
`PermanentFailure` with the first refusal's words, in this order — the resource's own
limits (`jobs.maxNodes` x `jobs.coresPerNode`, `jobs.memoryPerNode`, `jobs.maxTime`),
then, in pilot mode, what an allocation can hold (`cerise.model.pilot.refusal`).
"""

from __future__ import annotations

from cerise.model import pilot
from cerise.model.compute import ResourceSpec
from cerise.model.limits import duration


def request_refusal(spec: ResourceSpec, cores: int, time_limit: int,
                    memory: int = 0) -> str | None:
    """Why the resource can never run a job asking for `cores`, `time_limit` seconds and
    `memory` MiB (on the runner's node), or None if it may. Only what the spec says is
    checked (`maxNodes`, `memoryPerNode`, `maxTime`)."""
    if spec.max_nodes is not None and cores > spec.max_nodes * spec.cores_per_node:
        nodes = "1 node" if spec.max_nodes == 1 else f"{spec.max_nodes} nodes"
        return (f"the job asks for {cores} cores, but the compute resource offers at most "
                f"{spec.max_nodes * spec.cores_per_node} ({nodes} of {spec.cores_per_node} "
                "cores: jobs.maxNodes x jobs.coresPerNode)")
    if spec.memory_per_node is not None and memory > spec.memory_per_node:
        return (f"the job asks for {memory} MiB of memory, but a node of the compute "
                f"resource has at most {spec.memory_per_node} MiB (jobs.memoryPerNode)")
    if spec.max_time is not None and time_limit > spec.max_time:
        return (f"the job asks for a time limit of {duration(time_limit)}, but the compute "
                f"resource allows at most {duration(spec.max_time)} (jobs.maxTime)")
    return None


def refusal(spec: ResourceSpec, cores: int, time_limit: int, memory: int = 0) -> str | None:
    """The first reason the resource can never run the job, or None if it may."""
    found = request_refusal(spec, cores, time_limit, memory)
    if found is None and spec.pilot is not None:
        found = pilot.refusal(spec.pilot, cores, time_limit)
    return found
