"""Slurm, Torque (Slurm's wrappers) and Grid Engine end to end: submit, poll, cancel.

Everything goes through the executor over a real SshRemote to the test sshd, with the
scheduler's environment exported by the compute resource's prologue, as the operator does.
Jobs that must stay in the queue are submitted on hold; every job a test submits is
cancelled when the test ends.
"""

from __future__ import annotations

import asyncio
import shlex
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, replace
from typing import cast

import pytest

from cerise.devenv.gridengine import GridEngineCell
from cerise.devenv.slurm import SlurmCluster
from cerise.devenv.sshd import SshEndpoint
from cerise.devenv.torque import TorqueWrappers
from cerise.model.compute import prologue
from cerise.remote import executor
from cerise.remote.connection import (
    Remote,
    SshCredentials,
    SshRemote,
    SshTarget,
)
from cerise.remote.jobscript import JobFiles, SubmitOutcome
from cerise.remote.schedulers import (
    JobRef,
    Observation,
    QueueState,
    RemoteState,
    Request,
    Scheduler,
)
from cerise.remote.schedulers.batch import BatchSettings
from cerise.remote.schedulers.gridengine import GridEngineScheduler
from cerise.remote.schedulers.slurm import SlurmScheduler
from cerise.remote.schedulers.torque import TorqueScheduler
from tests.integration.remote_fixtures import CountingRemote, make_job_dir

pytestmark = pytest.mark.integration

TIMEOUT = 60.0


@dataclass(frozen=True)
class Batch:
    """One batch system as a compute resource sees it, and what the tests expect of it."""

    make: Callable[[BatchSettings], Scheduler]
    settings: BatchSettings
    prologue: str
    hold: tuple[str, ...]
    """Submit options that keep a job queued until released."""
    cores: str
    """Shell expression for the cores the job was granted."""
    cancelled_code: int | None
    """The exit code a cancelled running job records (None: killed before it can)."""
    count_named: Callable[[str], str]
    """Job name → shell text printing how many jobs of that name the queue holds."""

    @property
    def scheduler(self) -> Scheduler:
        return self.make(self.settings)

    @property
    def holding(self) -> Scheduler:
        return self.make(replace(self.settings, options=self.hold))


def slurm_batch(cluster: SlurmCluster) -> Batch:
    return Batch(
        make=SlurmScheduler,
        settings=BatchSettings(queue=cluster.partition, cores_per_node=cluster.cpus),
        prologue=prologue(cluster.environment),
        hold=("--hold",),
        cores="$SLURM_CPUS_PER_TASK",
        cancelled_code=143,
        count_named=lambda name: (
            f'squeue -u "$(id -un)" -h -t all -n {shlex.quote(name)} -o %i | wc -l'),
    )


def torque_batch(wrappers: TorqueWrappers) -> Batch:
    cluster = wrappers.slurm
    return Batch(
        make=TorqueScheduler,
        settings=BatchSettings(queue=cluster.partition, cores_per_node=cluster.cpus),
        prologue=prologue(wrappers.environment),
        hold=("-h",),
        cores="$SLURM_NTASKS",
        cancelled_code=143,
        count_named=lambda name: (
            f"{{ qstat -f || true; }} | grep -c -x $'\\tJob_Name = '{shlex.quote(name)}"),
    )


def gridengine_batch(cell: GridEngineCell) -> Batch:
    return Batch(
        make=GridEngineScheduler,
        settings=BatchSettings(queue=cell.queue, parallel_environment=cell.pe),
        prologue=prologue(cell.environment),
        hold=("-h",),
        cores="$NSLOTS",
        cancelled_code=143,  # -notify: USR2 before the SIGKILL, trapped like TERM
        count_named=lambda name: (
            f'qstat -u "$(id -un)" -xml | grep -c -F {shlex.quote(f"<JB_name>{name}</JB_name>")}'),
    )


@pytest.fixture(params=["slurm", "torque", "gridengine"])
def batch(request: pytest.FixtureRequest) -> Batch:
    system = request.getfixturevalue(request.param)
    if isinstance(system, SlurmCluster):
        return slurm_batch(system)
    if isinstance(system, TorqueWrappers):
        return torque_batch(system)
    return gridengine_batch(cast(GridEngineCell, system))


@pytest.fixture
async def remote(sshd: SshEndpoint) -> AsyncIterator[Remote]:
    connection = SshRemote(SshTarget(
        host=sshd.host, port=sshd.port, host_keys=(sshd.host_key,),
        credentials=SshCredentials(sshd.username, private_key=sshd.client_key.read_text())))
    try:
        yield connection
    finally:
        await connection.close()


@pytest.fixture
async def base(remote: Remote) -> AsyncIterator[str]:
    """A fresh directory in the test user's home, removed afterwards."""
    made = await remote.run("mkdir -p ~/cerise-tests && mktemp -d ~/cerise-tests/batch.XXXXXX")
    path = made.stdout.strip()
    yield path
    await remote.run(f"rm -rf -- {shlex.quote(path)}")


class Jobs:
    """Submits jobs for one test and cancels all of them at its end."""

    def __init__(self, remote: Remote, batch: Batch, base: str) -> None:
        self.remote, self.batch, self.base = remote, batch, base
        self.submitted: list[JobRef] = []

    async def new(self) -> JobFiles:
        files = JobFiles(f"{self.base}/jobs/{uuid.uuid4()}")
        await make_job_dir(self.remote, files)
        for path in (files.workflow, files.input):
            await self.remote.write(path, b"{}")
        return files

    async def submit(
        self, runner: Sequence[str], *, files: JobFiles | None = None, held: bool = False,
        request: Request | None = None,
    ) -> JobRef:
        files = files or await self.new()
        key = uuid.uuid4().hex
        scheduler = self.batch.holding if held else self.batch.scheduler
        result = await executor.submit(self.remote, scheduler, files,
                                       request or Request(f"c{key[:14]}"), runner,
                                       self.batch.prologue)
        assert result.outcome is SubmitOutcome.SUBMITTED, result
        job = JobRef(key, files, result.remote_id)
        self.submitted.append(job)
        return job

    async def poll(self, jobs: Sequence[JobRef], remote: Remote | None = None
                   ) -> dict[str, Observation]:
        return await executor.poll(remote or self.remote, self.batch.scheduler, jobs,
                                   self.batch.prologue)

    async def cancel(self, jobs: Sequence[JobRef]) -> None:
        await executor.cancel(self.remote, self.batch.scheduler, jobs, self.batch.prologue)

    async def wait_for(self, job: JobRef, *states: RemoteState) -> Observation:
        """Poll until the job is in one of `states`."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + TIMEOUT
        while (observed := (await self.poll([job]))[job.key]).state not in states:
            if loop.time() > deadline:
                raise AssertionError(f"{job} never reached {states}; last {observed}")
            await asyncio.sleep(0.1)
        return observed

    async def queue_state(self, job: JobRef) -> QueueState:
        """What the queue alone says of the job."""
        scheduler = self.batch.scheduler
        listing = await self.remote.run(f"{self.batch.prologue}\n{scheduler.queue_script([job])}")
        assert listing.exit_status == 0, listing.stderr
        return scheduler.parse_queue(listing.stdout, [job])[job.key]

    async def wait_until_gone(self, job: JobRef) -> None:
        """Poll the queue until the job has left it (the marker may come first)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + TIMEOUT
        while (state := await self.queue_state(job)) is not QueueState.ABSENT:
            assert loop.time() < deadline, f"{job} is still {state}"
            await asyncio.sleep(0.1)

    async def wait_until_file(self, path: str) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + TIMEOUT
        while (await self.remote.run(f"test -s {shlex.quote(path)}")).exit_status != 0:
            assert loop.time() < deadline, f"{path} never appeared"
            await asyncio.sleep(0.1)

    async def shell(self, script: str) -> str:
        result = await self.remote.run(f"{self.batch.prologue}\n{script}")
        assert result.exit_status == 0, result.stderr
        return result.stdout


@pytest.fixture
async def jobs(ssh: SshRemote, batch: Batch, base: str) -> AsyncIterator[Jobs]:
    tracker = Jobs(ssh, batch, base)
    yield tracker
    if tracker.submitted:
        await tracker.cancel(tracker.submitted)


async def test_job_runs_with_its_cores_and_output(jobs: Jobs) -> None:
    runner = ["bash", "-c", f'echo "cores={jobs.batch.cores}"; echo hi >&2; exit 0', "r"]
    job = await jobs.submit(runner, request=Request("cerise-run", cores=2, time_limit=600))
    assert await jobs.wait_for(job, RemoteState.DONE) == Observation(RemoteState.DONE, 0, 3)
    assert await jobs.remote.read(job.files.stdout) == b"cores=2\n"
    assert await jobs.remote.read(job.files.stderr) == b"hi\n"


async def test_failing_runner_reports_its_code(jobs: Jobs) -> None:
    job = await jobs.submit(["bash", "-c", "exit 3", "r"])
    assert (await jobs.wait_for(job, RemoteState.DONE)).exit_code == 3


async def test_cancel_of_running_job(jobs: Jobs) -> None:
    files = await jobs.new()
    pid_file = f"{files.job_dir}/runner.pid"
    job = await jobs.submit(["bash", "-c", f"echo $$ > {shlex.quote(pid_file)}; sleep 300", "r"],
                            files=files)
    await jobs.wait_for(job, RemoteState.RUNNING)
    await jobs.wait_until_file(pid_file)
    await jobs.cancel([job])
    observed = await jobs.wait_for(job, RemoteState.DONE, RemoteState.VANISHED)
    assert observed.exit_code == jobs.batch.cancelled_code
    await jobs.wait_until_gone(job)
    pid = (await jobs.remote.read(pid_file)).decode().strip()
    assert (await jobs.remote.run(f"kill -0 {pid}")).exit_status != 0, "the runner survived"


async def test_cancel_of_queued_job(jobs: Jobs) -> None:
    job = await jobs.submit(["bash", "-c", "exit 0", "r"], held=True)
    assert (await jobs.poll([job]))[job.key].state is RemoteState.WAITING
    await jobs.cancel([job])
    await jobs.wait_for(job, RemoteState.VANISHED)
    assert await jobs.queue_state(job) is QueueState.ABSENT
    assert (await jobs.remote.run(f"test -e {shlex.quote(job.files.started)}")).exit_status != 0


async def test_resubmit_does_not_submit_twice(jobs: Jobs) -> None:
    files = await jobs.new()
    name = f"c{uuid.uuid4().hex[:14]}"
    submits = [jobs.submit(["bash", "-c", "exit 0", "r"], files=files, held=True,
                           request=Request(name)) for _ in range(4)]
    assert len({job.remote_id for job in await asyncio.gather(*submits)}) == 1
    assert (await jobs.shell(jobs.batch.count_named(name))).strip() == "1"


async def test_poll_of_five_jobs_is_one_command(jobs: Jobs) -> None:
    held = [await jobs.submit(["bash", "-c", "exit 0", "r"], held=True) for _ in range(5)]
    gone = JobRef("gone", held[0].files, "999999")
    counting = CountingRemote(jobs.remote)
    observed = await jobs.poll([*held, gone], cast(Remote, counting))
    assert counting.calls == 1
    assert {observed[job.key].state for job in held} == {RemoteState.WAITING}
    assert observed["gone"].state is RemoteState.VANISHED
    await jobs.cancel(held)
    for job in held:
        await jobs.wait_for(job, RemoteState.VANISHED)


async def test_only_unknown_ids_poll_as_vanished(jobs: Jobs) -> None:
    files = await jobs.new()
    observed = await jobs.poll([JobRef("gone", files, "999999"), JobRef("none", files, "")])
    assert {o.state for o in observed.values()} == {RemoteState.VANISHED}


async def test_gridengine_job_that_cannot_start(
    remote: Remote, gridengine: GridEngineCell, base: str
) -> None:
    """A job whose directory is gone sits in `Eqw`: it polls as vanished, and qdel removes it."""
    jobs = Jobs(remote, gridengine_batch(gridengine), base)
    job = await jobs.submit(["bash", "-c", "exit 0", "r"], held=True)
    try:
        await jobs.shell(f"rm -rf {shlex.quote(job.files.work)} && qrls {job.remote_id}")
        await jobs.wait_for(job, RemoteState.VANISHED)
        listing = await jobs.shell(f"qstat -u \"$(id -un)\" | awk '$1 == {job.remote_id}'")
        assert listing.split()[4] == "Eqw"
    finally:
        await jobs.cancel([job])
    assert (await jobs.shell(f"qstat -u \"$(id -un)\" | awk '$1 == {job.remote_id}'")) == ""
