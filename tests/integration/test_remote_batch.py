"""Slurm, Torque (Slurm's wrappers) and Grid Engine end to end: submit, poll, cancel.

Everything goes through the executor over a real SshRemote to the test sshd, with the
scheduler's environment exported by the compute resource's prologue, as the operator does.
Jobs that must stay in the queue are submitted on hold; every job a test submits is
cancelled when the test ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shlex
import subprocess
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, replace
from typing import cast

import pytest

from cerise.devenv.gridengine import GridEngineCell
from cerise.devenv.slurm import SlurmCluster
from cerise.devenv.sshd import SshEndpoint
from cerise.devenv.torque import TorqueWrappers
from cerise.model import limits
from cerise.model.compute import prologue
from cerise.model.decisions import MIN_VANISH_GRACE
from cerise.remote import accounting as remote_accounting
from cerise.remote import executor
from cerise.remote.accounting import Measured
from cerise.remote.jobscript import JobFiles, SubmitOutcome
from cerise.remote.protocol import Remote
from cerise.remote.schedulers import (
    JobRef,
    Observation,
    QueueEntry,
    QueueState,
    RemoteState,
    Request,
    Scheduler,
)
from cerise.remote.schedulers.batch import BatchSettings, job_name
from cerise.remote.schedulers.gridengine import GridEngineScheduler
from cerise.remote.schedulers.slurm import SlurmScheduler
from cerise.remote.schedulers.torque import TorqueScheduler
from cerise.remote.ssh import SshCredentials, SshTarget
from cerise.remote.ssh_remote import SshRemote
from tests.integration.api_fixtures import pause_after
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
    refusal: str
    """What the scheduler says when it refuses a job asking for far more cores than it has."""
    tagged: Callable[[str], tuple[str, ...]]
    """A value → submit options that carry it to the scheduler verbatim."""
    read_back: Callable[[str], str]
    """A job id → shell text printing `<job name>|<the value the options carried>`."""
    kept: Callable[[str], str]
    """How the scheduler keeps that value."""
    named: Callable[[str], str]
    """The job name the scheduler shows for a requested name."""
    stop_signal: str
    """The signal the scheduler stops a job with at its time limit."""

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
        refusal="Batch job submission failed: More processors requested than permitted",
        tagged=lambda value: (f"--comment={value}",),
        read_back=lambda job_id: f"squeue -h -j {job_id} -o '%j|%k'",
        kept=str,
        named=lambda name: name,
        stop_signal="TERM",
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
        # the wrapper's own words around sbatch's
        refusal="Batch job submission failed: More processors requested than permitted",
        tagged=lambda value: ("-A", value),  # a #PBS directive: sbatch reads it as data
        read_back=lambda job_id: f"squeue -h -j {job_id} -o '%j|%a'",
        kept=str.lower,  # Slurm's account names
        named=lambda name: job_name(name, keep="A-Za-z0-9", limit=15),
        stop_signal="TERM",
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
        refusal="Unable to run job: error: no suitable queues",
        # not the account: it may not hold slashes or backslashes
        tagged=lambda value: ("-ac", f"CERISE_TAG={value}"),
        read_back=lambda job_id: (
            f"qstat -j {job_id} | awk '/^job_name:/ {{sub(/^job_name: +/, \"\"); n = $0}} "
            "/^context:/ {sub(/^context: +CERISE_TAG=/, \"\"); a = $0} "
            "END {print n \"|\" a}'"),
        kept=str,
        named=lambda name: job_name(name, keep="A-Za-z0-9_.-", limit=255),
        stop_signal="USR2",  # -notify: USR2 before the SIGKILL at h_rt
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


@contextlib.asynccontextmanager
async def fresh_directory(remote: Remote) -> AsyncIterator[str]:
    """A fresh directory in the test user's home, removed afterwards."""
    made = await remote.run("mkdir -p ~/cerise-tests && mktemp -d ~/cerise-tests/batch.XXXXXX")
    path = made.stdout.strip()
    try:
        yield path
    finally:
        await remote.run(f"rm -rf -- {shlex.quote(path)}")


@pytest.fixture
async def base(remote: Remote) -> AsyncIterator[str]:
    async with fresh_directory(remote) as path:
        yield path


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
        """Poll until the job is in one of `states`; `pause_after` spaces the polls (one
        through Debian's Grid Engine wrappers costs 60 ms of CPU)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + TIMEOUT
        while True:
            began = loop.time()
            if (observed := (await self.poll([job]))[job.key]).state in states:
                return observed
            if loop.time() > deadline:
                raise AssertionError(f"{job} never reached {states}; last {observed}")
            await asyncio.sleep(pause_after(loop.time() - began))

    async def queue_state(self, job: JobRef) -> QueueState:
        """What the queue alone says of the job."""
        scheduler = self.batch.scheduler
        listing = await self.remote.run(f"{self.batch.prologue}\n{scheduler.queue_script([job])}")
        assert listing.exit_status == 0, listing.stderr
        entry = scheduler.parse_queue(listing.stdout, [job])[job.key]
        return entry.state if isinstance(entry, QueueEntry) else entry

    async def wait_until_gone(self, job: JobRef) -> None:
        """Poll the queue until the job has left it (the marker may come first)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + TIMEOUT
        while True:
            began = loop.time()
            if (state := await self.queue_state(job)) is QueueState.ABSENT:
                return
            assert loop.time() < deadline, f"{job} is still {state}"
            await asyncio.sleep(pause_after(loop.time() - began))

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
    observed = await jobs.wait_for(job, RemoteState.DONE)
    assert (observed.exit_code, observed.log_size, observed.signal) == (0, 3, None)
    assert observed.started is not None and observed.ended is not None
    assert 0 <= observed.ended - observed.started < TIMEOUT
    assert await jobs.remote.read(job.files.stdout) == b"cores=2\n"
    assert await jobs.remote.read(job.files.stderr) == b"hi\n"


async def test_a_run_measures_itself_and_slurm_accounts_for_it(jobs: Jobs) -> None:
    """The job script's own figures, with the cores the scheduler granted, on every
    scheduler; on Slurm also sacct's record, once it is closed; with accounting off, sacct
    says so and the run keeps its own."""
    runner = ["bash", "-c", "python3 -c 'b = b\"x\" * (40 << 20)'", "r"]
    job = await jobs.submit(runner, request=Request("cerise-cost", cores=2, time_limit=600))
    await jobs.wait_for(job, RemoteState.DONE)
    slurm = jobs.batch.scheduler.name == "slurm"
    measured = Measured(job.key, [job.files.accounting], [job.remote_id] if slurm else [])
    loop = asyncio.get_running_loop()
    deadline = loop.time() + TIMEOUT
    while True:
        result = await remote_accounting.read(jobs.remote, [measured], jobs.batch.prologue)
        record = result.sacct.get(job.remote_id)
        if not slurm or (record is not None and record.final):
            break
        assert loop.time() < deadline, f"sacct never closed the job's record: {result}"
        await asyncio.sleep(0.2)
    own = result.measured[job.key][0]
    assert own is not None and own.cores == 2, own
    assert own.max_rss is not None and own.max_rss >= 40 << 20, own
    assert own.cpu is not None and own.cpu > 0 and own.elapsed is not None and own.elapsed > 0
    if not slurm:
        return
    assert record is not None and record.figures.cores == 2, record
    assert record.figures.elapsed is not None and record.figures.cpu is not None, record
    off = f"{jobs.base}/accounting-off.conf"
    await jobs.shell(f"sed 's,accounting_storage/slurmdbd,accounting_storage/none,' "
                     f"\"$SLURM_CONF\" > {shlex.quote(off)}")
    result = await remote_accounting.read(
        jobs.remote, [measured], f"{jobs.batch.prologue}\nexport SLURM_CONF={shlex.quote(off)}")
    assert result.sacct_disabled and not result.sacct_answered, result
    assert result.measured[job.key][0] == own


async def test_failing_runner_reports_its_code(jobs: Jobs) -> None:
    job = await jobs.submit(["bash", "-c", "exit 3", "r"])
    assert (await jobs.wait_for(job, RemoteState.DONE)).exit_code == 3


async def test_cancel_of_running_job(jobs: Jobs) -> None:
    files = await jobs.new()
    pid_file = f"{files.job_dir}/runner.pid"
    job = await jobs.submit(["bash", "-c", f"echo $$ > {shlex.quote(pid_file)}; sleep 300", "r"],
                            files=files, request=Request("cerise-cancel", time_limit=600))
    await jobs.wait_for(job, RemoteState.RUNNING)
    await jobs.wait_until_file(pid_file)
    await jobs.cancel([job])
    # A poll may see the job gone from the queue a moment before its script has recorded
    # the signal (the operator waits out such a vanishing): the end is the recorded one.
    observed = await jobs.wait_for(job, RemoteState.DONE)
    assert observed.exit_code == jobs.batch.cancelled_code
    assert observed.signal == jobs.batch.stop_signal
    assert limits.time_limit_message(observed, 600) is None, "a cancel is not a time limit"
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


async def test_a_job_whose_submit_answer_was_lost_is_found_by_name_not_submitted_again(
        jobs: Jobs) -> None:
    """The scheduler took the job, but to Cerise its submit failed (a time-out): the next
    submit finds the job by its name on the scheduler."""
    files = await jobs.new()
    name = f"cerise-{uuid.uuid4()}"
    first = await jobs.submit(["bash", "-c", "exit 0", "r"], files=files, held=True,
                              request=Request(name))
    q = shlex.quote
    await jobs.shell(f"rm {q(files.remote_id)} && rmdir {q(files.lock)} && "
                     f"touch {q(files.submit_failed)}")  # as the lost answer left it
    again = await jobs.submit(["bash", "-c", "exit 0", "r"], files=files, held=True,
                              request=Request(name))
    assert again.remote_id == first.remote_id
    assert (await jobs.shell(jobs.batch.count_named(jobs.batch.named(name)))).strip() == "1"


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
    """A job whose directory is gone sits in `Eqw` forever: it polls as waiting with Grid
    Engine's reason, and qdel removes it."""
    jobs = Jobs(remote, gridengine_batch(gridengine), base)
    job = await jobs.submit(["bash", "-c", "exit 0", "r"], held=True)
    try:
        await jobs.shell(f"rm -rf {shlex.quote(job.files.work)} && qrls {job.remote_id}")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + TIMEOUT
        while not (observed := (await jobs.poll([job]))[job.key]).never_runs:
            assert loop.time() < deadline, observed
            await asyncio.sleep(0.1)
        assert observed.state is RemoteState.WAITING
        assert observed.never_runs.startswith("Grid Engine holds it in error state Eqw: ")
        assert f"can't chdir to {job.files.work}: No such file or directory" in (
            observed.never_runs)
    finally:
        await jobs.cancel([job])
    assert (await jobs.shell(f"qstat -u \"$(id -un)\" | awk '$1 == {job.remote_id}'")) == ""


async def test_impossible_core_request_is_refused_with_the_schedulers_words(jobs: Jobs) -> None:
    files = await jobs.new()
    far_too_many = 64 * jobs.batch.settings.cores_per_node
    refused = await executor.submit(jobs.remote, jobs.batch.scheduler, files,
                                    Request("cerise-too-big", cores=far_too_many), ["true"],
                                    jobs.batch.prologue)
    assert refused.outcome is SubmitOutcome.REFUSED, refused
    assert jobs.batch.refusal in refused.detail
    # Nothing was submitted and the lock is free: the job asking for what there is submits.
    assert (await jobs.remote.run(f"test -e {shlex.quote(files.lock)}")).exit_status != 0
    job = await jobs.submit(["bash", "-c", "exit 0", "r"], files=files,
                            request=Request("cerise-fits", cores=1))
    assert (await jobs.wait_for(job, RemoteState.DONE)).exit_code == 0


async def test_hostile_options_and_names_reach_the_scheduler_as_data(jobs: Jobs) -> None:
    canary = f"cerise-canary-{uuid.uuid4().hex[:8]}"
    touch = f"cd; touch {canary}"
    hostile = f"$({touch}) `{touch}`; {touch} && 'single' \"double\" back\\slash #hash"
    name = f"cerise {hostile}"
    options = (*jobs.batch.hold, *jobs.batch.tagged(hostile))
    scheduler = jobs.batch.make(replace(jobs.batch.settings, options=options))
    files = await jobs.new()
    result = await executor.submit(jobs.remote, scheduler, files, Request(name), ["true"],
                                   jobs.batch.prologue)
    assert result.outcome is SubmitOutcome.SUBMITTED, result
    jobs.submitted.append(JobRef("hostile", files, result.remote_id))
    shown = await jobs.shell(jobs.batch.read_back(result.remote_id))
    assert shown == f"{jobs.batch.named(name)}|{jobs.batch.kept(hostile)}\n"
    assert (await jobs.remote.run(f"test -e ~/{canary}")).exit_status != 0


async def until_ended(jobs: Jobs, job: JobRef, timeout: float) -> Observation:
    """Poll until the job is done, or gone without an exit code for the operator's grace
    period: a poll may see the job leave the queue just after it read the markers."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    vanished_since: float | None = None
    while True:
        observed = (await jobs.poll([job]))[job.key]
        now = loop.time()
        if observed.state is RemoteState.DONE:
            return observed
        if observed.state is not RemoteState.VANISHED:
            vanished_since = None
        elif vanished_since is None:
            vanished_since = now
        elif now - vanished_since > MIN_VANISH_GRACE:
            return observed
        assert now < deadline, f"{job} still {observed} after {timeout:.0f} s"
        await asyncio.sleep(0.5)


async def test_time_limit_ends_the_job_with_a_message_on_each_batch_system(
    remote: Remote, slurm: SlurmCluster, torque: TorqueWrappers, gridengine: GridEngineCell,
    base: str,
) -> None:
    """Slurm keeps whole minutes and checks every ~30 s, so its jobs run together."""
    systems = [(slurm_batch(slurm), 60), (torque_batch(torque), 60),
               (gridengine_batch(gridengine), 5)]

    async def hit(batch: Batch, limit: int) -> Observation:
        jobs = Jobs(remote, batch, base)
        job = await jobs.submit(["bash", "-c", "sleep 600", "r"],
                                request=Request("cerise-limit", time_limit=limit))
        try:
            return await until_ended(jobs, job, limit + 120)
        finally:
            await jobs.cancel([job])

    ended = await asyncio.gather(*(hit(batch, limit) for batch, limit in systems))
    for (batch, limit), observed in zip(systems, ended, strict=True):
        assert (observed.state, observed.exit_code) == (RemoteState.DONE, 143), observed
        assert observed.signal == batch.stop_signal
        message = limits.time_limit_message(observed, limit)
        assert message is not None, observed
        assert message.startswith(
            f"the job reached its time limit of {limits.duration(limit)} after running "), message


async def scontrol(cluster: SlurmCluster, *args: str) -> None:
    """scontrol as the Slurm administrator (root, here)."""
    await asyncio.to_thread(subprocess.run, ["scontrol", *args], check=True, timeout=30,
                            env={**os.environ, **dict(cluster.environment)})


async def test_slurm_job_beyond_its_partitions_limit_never_runs(
    remote: Remote, slurm: SlurmCluster, base: str
) -> None:
    """A limit lowered after the submit (EnforcePartLimits refuses it at submit): the job
    pends forever with reason PartitionTimeLimit, which the poll reports."""
    jobs = Jobs(remote, slurm_batch(slurm), base)
    job = await jobs.submit(["bash", "-c", "exit 0", "r"], held=True,
                            request=Request("cerise-long", time_limit=7200))
    try:
        await scontrol(slurm, "update", f"PartitionName={slurm.partition}", "MaxTime=60")
        await jobs.shell(f"scontrol release {job.remote_id}")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + TIMEOUT
        while not (observed := (await jobs.poll([job]))[job.key]).never_runs:
            assert loop.time() < deadline, observed
            await asyncio.sleep(0.2)
        assert observed == Observation(
            RemoteState.WAITING, never_runs="Slurm holds it with reason PartitionTimeLimit: "
            "its time limit is beyond its partition's")
    finally:
        await scontrol(slurm, "update", f"PartitionName={slurm.partition}", "MaxTime=INFINITE")
        await jobs.cancel([job])


async def test_slurm_job_gets_the_memory_it_asks_for(
    remote: Remote, slurm: SlurmCluster, base: str
) -> None:
    jobs = Jobs(remote, slurm_batch(slurm), base)
    runner = ["bash", "-c", 'echo "memory=$SLURM_MEM_PER_NODE"', "r"]
    job = await jobs.submit(runner, request=Request("cerise-memory", memory=64))
    assert (await jobs.wait_for(job, RemoteState.DONE)).exit_code == 0
    assert await jobs.remote.read(job.files.stdout) == b"memory=64\n"
    shown = await jobs.shell(f"scontrol show job {job.remote_id}")
    assert "MinMemoryNode=64M" in shown.split(), shown


async def test_torque_job_gets_the_memory_it_asks_for(
    remote: Remote, torque: TorqueWrappers, base: str
) -> None:
    """Slurm's Torque wrappers pass `-l mem=` on as sbatch's `--mem`."""
    jobs = Jobs(remote, torque_batch(torque), base)
    runner = ["bash", "-c", 'echo "memory=$SLURM_MEM_PER_NODE"', "r"]
    job = await jobs.submit(runner, request=Request("cerise-memory", memory=64))
    assert (await jobs.wait_for(job, RemoteState.DONE)).exit_code == 0
    assert await jobs.remote.read(job.files.stdout) == b"memory=64\n"


async def test_gridengine_job_gets_the_memory_it_asks_for(
    remote: Remote, gridengine: GridEngineCell, base: str
) -> None:
    jobs = Jobs(remote, gridengine_batch(gridengine), base)
    job = await jobs.submit(["bash", "-c", "exit 0", "r"], held=True,
                            request=Request("cerise-memory", memory=64))
    shown = await jobs.shell(f"qstat -j {job.remote_id}")
    assert "h_vmem=64M" in shown, shown
    await jobs.shell(f"qrls {job.remote_id}")
    assert (await jobs.wait_for(job, RemoteState.DONE)).exit_code == 0
