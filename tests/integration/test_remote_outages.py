"""Scheduler outages seen truthfully, on real Slurm (and its Torque wrappers) and Grid Engine.

A stopped or frozen controller makes the status unavailable with the scheduler's own
words — never a poll in which running jobs look gone — and a submit meanwhile is a
passing failure that leaves the job free to be submitted later. When the controller is
back, polling sees the job that kept running all along.
"""

from __future__ import annotations

import asyncio
import os
import shlex
import signal
from collections.abc import AsyncIterator, Sequence

import pytest

from cerise.devenv import gridengine as devenv_gridengine
from cerise.devenv import slurm as devenv_slurm
from cerise.devenv.gridengine import GridEngineCell
from cerise.devenv.slurm import SlurmCluster
from cerise.devenv.torque import TorqueWrappers
from cerise.remote import executor
from cerise.remote.jobscript import SubmitOutcome
from cerise.remote.schedulers import JobRef, RemoteState, Request, StatusUnavailable
from cerise.remote.ssh_remote import SshRemote
from tests.integration.test_remote_batch import (
    Jobs,
    fresh_directory,
    gridengine_batch,
    slurm_batch,
    torque_batch,
)

pytestmark = pytest.mark.integration


@pytest.fixture
async def base(ssh: SshRemote) -> AsyncIterator[str]:
    async with fresh_directory(ssh) as path:
        yield path

SLEEP = ["bash", "-c", "sleep 300", "r"]


async def still_running(pairs: Sequence[tuple[Jobs, JobRef]]) -> None:
    for jobs, job in pairs:
        assert (await jobs.wait_for(job, RemoteState.RUNNING)).state is RemoteState.RUNNING


async def test_a_stopped_slurm_controller_is_an_outage_not_ended_jobs(
    ssh: SshRemote, slurm: SlurmCluster, torque: TorqueWrappers, base: str
) -> None:
    systems = [Jobs(ssh, slurm_batch(slurm), base), Jobs(ssh, torque_batch(torque), base)]
    running = [(jobs, await jobs.submit(SLEEP)) for jobs in systems]
    try:
        await still_running(running)
        await asyncio.to_thread(devenv_slurm.stop_controller, slurm)
        try:
            # squeue's words, and those of the Torque wrappers' qstat
            words = ["Unable to contact slurm controller", "Problem loading jobs"]
            for (jobs, job), said in zip(running, words, strict=True):
                with pytest.raises(StatusUnavailable) as outage:
                    await jobs.poll([job])
                assert said in str(outage.value)
            slurm_jobs = systems[0]
            files = await slurm_jobs.new()
            failed = await executor.submit(ssh, slurm_jobs.batch.scheduler, files,
                                           Request("cerise-outage"), ["true"],
                                           slurm_jobs.batch.prologue)
            assert failed.outcome is SubmitOutcome.FAILED, failed
            assert "Unable to contact slurm controller" in failed.detail
            assert (await ssh.run(f"test -e {shlex.quote(files.lock)}")).exit_status != 0
        finally:
            await asyncio.to_thread(devenv_slurm.start_controller, slurm)
        await still_running(running)
        for jobs, job in running:  # free the node's cores for the job submitted again
            await jobs.cancel([job])
        retried = await slurm_jobs.submit(["bash", "-c", "exit 0", "r"], files=files)
        assert (await slurm_jobs.wait_for(retried, RemoteState.DONE)).exit_code == 0
    finally:
        for jobs, job in running:
            await jobs.cancel([job])


async def test_a_frozen_slurm_controller_is_an_outage_after_the_queue_timeout(
    ssh: SshRemote, slurm: SlurmCluster, base: str
) -> None:
    jobs = Jobs(ssh, slurm_batch(slurm), base)
    job = await jobs.submit(SLEEP)
    pid = int(devenv_slurm.SlurmLayout(root=slurm.conf.parent).controller_pid.read_text())
    try:
        await still_running([(jobs, job)])
        os.kill(pid, signal.SIGSTOP)
        try:
            with pytest.raises(StatusUnavailable, match=r"slurm: the queue command failed "
                               r"\(exit status 124\): no answer within 3 s"):
                await executor.poll(ssh, jobs.batch.scheduler, [job], jobs.batch.prologue,
                                    queue_timeout=3)
        finally:
            os.kill(pid, signal.SIGCONT)
        await still_running([(jobs, job)])
    finally:
        await jobs.cancel([job])


async def test_a_stopped_grid_engine_qmaster_is_an_outage_not_ended_jobs(
    ssh: SshRemote, gridengine: GridEngineCell, base: str
) -> None:
    jobs = Jobs(ssh, gridengine_batch(gridengine), base)
    job = await jobs.submit(SLEEP)
    try:
        await still_running([(jobs, job)])
        await asyncio.to_thread(devenv_gridengine.stop_qmaster, gridengine)
        try:
            with pytest.raises(StatusUnavailable) as outage:
                await jobs.poll([job])
            assert "gridengine: the queue command failed" in str(outage.value)
            assert "qmaster" in str(outage.value)
            files = await jobs.new()
            failed = await executor.submit(ssh, jobs.batch.scheduler, files,
                                           Request("cerise-outage"), ["true"],
                                           jobs.batch.prologue)
            assert failed.outcome is SubmitOutcome.FAILED, failed
            assert "qmaster" in failed.detail
            assert (await ssh.run(f"test -e {shlex.quote(files.lock)}")).exit_status != 0
        finally:
            await asyncio.to_thread(devenv_gridengine.start_qmaster, gridengine)
        await still_running([(jobs, job)])
        await jobs.cancel([job])
        retried = await jobs.submit(["bash", "-c", "exit 0", "r"], files=files)
        assert (await jobs.wait_for(retried, RemoteState.DONE)).exit_code == 0
    finally:
        await jobs.cancel([job])
