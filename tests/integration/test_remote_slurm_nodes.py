"""Slurm while its nodes are down or drained, against real Slurm: the status command reads
the node states (sinfo's real words), and a job that fits once they are back waits for
them rather than failing.

Slurm gives PartitionNodeLimit or PartitionConfig for such a job only on some
configurations (several nodes, a controller that restarted before its nodes registered);
this one-node cluster gives ReqNodeNotAvail, so that the reasons' handling itself is
tested on captured lines in tests/unit/test_scheduler_slurm.py.
"""

from __future__ import annotations

import asyncio
import os
import subprocess

import pytest

from cerise.devenv.slurm import SlurmCluster
from cerise.remote.schedulers import RemoteState, Request
from cerise.remote.ssh_remote import SshRemote
from tests.integration.test_remote_batch import (
    TIMEOUT,
    Jobs,
    fresh_directory,
    scontrol,
    slurm_batch,
)

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("state", ["DOWN", "DRAIN"])
async def test_a_job_waits_while_the_nodes_it_needs_are_unavailable(
    ssh: SshRemote, slurm: SlurmCluster, state: str,
) -> None:
    async with fresh_directory(ssh) as base:
        await wait_for_the_nodes(Jobs(ssh, slurm_batch(slurm), base), slurm, state)


async def wait_for_the_nodes(jobs: Jobs, slurm: SlurmCluster, state: str) -> None:
    await scontrol(slurm, "update", f"NodeName={slurm.node}", f"State={state}",
                   "Reason=cerise-test")
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + TIMEOUT
        # as slurmctld records it (sinfo can go on saying `mixed` for a while after jobs of
        # an earlier test left the node)
        while state not in (state_now := await asyncio.to_thread(recorded_state, slurm)):
            assert loop.time() < deadline, f"the node is still {state_now!r}"
            await asyncio.sleep(0.2)
        job = await jobs.submit(["bash", "-c", "exit 0", "r"],
                                request=Request("cerise-down", cores=slurm.cpus))
        deadline = loop.time() + TIMEOUT
        while (await jobs.shell(f"squeue -h -j {job.remote_id} -o %r")).strip() in (
                "", "None", "Priority", "Resources"):  # until Slurm has looked at it
            assert loop.time() < deadline
            await asyncio.sleep(0.2)
        observed = (await jobs.poll([job]))[job.key]
        assert observed.state is RemoteState.WAITING and observed.never_runs is None, observed
    finally:
        await scontrol(slurm, "update", f"NodeName={slurm.node}", "State=RESUME")
    try:
        assert (await jobs.wait_for(job, RemoteState.DONE)).exit_code == 0
    finally:
        await jobs.cancel([job])


def recorded_state(cluster: SlurmCluster) -> str:
    """The node's state in slurmctld's record (`scontrol show node`: IDLE, DOWN+DRAIN…)."""
    shown = subprocess.run(["scontrol", "show", "node", cluster.node], capture_output=True,
                           text=True, timeout=10, check=True,
                           env={**os.environ, **dict(cluster.environment)}).stdout
    return next(word.removeprefix("State=") for word in shown.split()
                if word.startswith("State="))
