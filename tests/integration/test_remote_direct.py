"""Scheduler `none` end to end: submit, poll, cancel over real SSH and locally."""

from __future__ import annotations

import asyncio
import uuid
from typing import cast

import pytest

from cerise.model import limits
from cerise.remote import executor
from cerise.remote.jobscript import JobFiles, SubmitOutcome, SubmitResult
from cerise.remote.protocol import Remote
from cerise.remote.schedulers import JobRef, Observation, RemoteState, Request
from cerise.remote.schedulers.direct import DirectScheduler
from tests.integration.remote_fixtures import CountingRemote, make_job_dir

pytestmark = pytest.mark.integration

SCHEDULER = DirectScheduler()


async def new_job(remote: Remote) -> JobFiles:
    base = (await remote.run("mktemp -d")).stdout.strip()
    files = JobFiles(f"{base}/jobs/{uuid.uuid4()}")
    await make_job_dir(remote, files)
    for path in (files.workflow, files.input):
        await remote.write(path, b"{}")
    return files


async def wait_for(remote: Remote, job: JobRef, state: RemoteState) -> Observation:
    for _ in range(300):
        observed = (await executor.poll(remote, SCHEDULER, [job]))[job.key]
        if observed.state is state:
            return observed
        await asyncio.sleep(0.05)
    raise AssertionError(f"{job.key} never reached {state}; last {observed}")


async def test_job_runs_to_completion_with_its_exit_code(remote: Remote) -> None:
    files = await new_job(remote)
    runner = ["bash", "-c", 'echo "{\\"n\\": 1}"; echo "Final process status is success" >&2; '
              "exit 0", "runner"]
    result = await executor.submit(remote, SCHEDULER, files, Request("t"), runner)
    assert result.outcome is SubmitOutcome.SUBMITTED
    job = JobRef("k", files, result.remote_id)
    assert (await wait_for(remote, job, RemoteState.DONE)).exit_code == 0
    assert await remote.read(files.stdout) == b'{"n": 1}\n'
    assert b"Final process status is success" in await remote.read(files.stderr)
    mode = await remote.run(f"stat -c %a '{files.job_dir}'")
    assert mode.stdout.strip() == "700"


async def test_failing_runner_reports_its_exit_code(remote: Remote) -> None:
    files = await new_job(remote)
    result = await executor.submit(remote, SCHEDULER, files, Request("t"),
                                   ["bash", "-c", "exit 3", "r"])
    job = JobRef("k", files, result.remote_id)
    assert (await wait_for(remote, job, RemoteState.DONE)).exit_code == 3


async def test_resubmit_does_not_start_a_second_run(remote: Remote) -> None:
    files = await new_job(remote)
    runner = ["bash", "-c", f"echo run >> '{files.job_dir}/runs'; sleep 1", "r"]
    first = await executor.submit(remote, SCHEDULER, files, Request("t"), runner)
    again = await asyncio.gather(*(
        executor.submit(remote, SCHEDULER, files, Request("t"), runner) for _ in range(5)))
    assert {r.remote_id for r in again} == {first.remote_id}
    await wait_for(remote, JobRef("k", files, first.remote_id), RemoteState.DONE)
    assert await remote.read(f"{files.job_dir}/runs") == b"run\n"


async def test_cancel_stops_the_runner(remote: Remote) -> None:
    files = await new_job(remote)
    runner = ["bash", "-c", f"echo $$ > '{files.job_dir}/runner.pid'; sleep 300", "r"]
    result = await executor.submit(remote, SCHEDULER, files, Request("t"), runner)
    job = JobRef("k", files, result.remote_id)
    await wait_for(remote, job, RemoteState.RUNNING)
    for _ in range(100):
        if await remote.read(f"{files.job_dir}/runner.pid"):
            break
        await asyncio.sleep(0.05)
    await executor.cancel(remote, SCHEDULER, [job])
    assert (await wait_for(remote, job, RemoteState.DONE)).exit_code == 143
    pid = (await remote.read(f"{files.job_dir}/runner.pid")).decode().strip()
    assert not await alive(remote, pid), "the runner survived the cancel"


async def test_time_limit_terminates_the_job(remote: Remote) -> None:
    files = await new_job(remote)
    runner = ["bash", "-c", f"sleep 300 & echo $! > '{files.job_dir}/child.pid'; wait", "r"]
    result = await executor.submit(remote, SCHEDULER, files, Request("t", time_limit=1), runner)
    job = JobRef("k", files, result.remote_id)
    observed = await wait_for(remote, job, RemoteState.DONE)
    assert (observed.exit_code, observed.signal) == (143, "LIMIT")
    assert observed.started is not None and observed.signalled_at is not None
    assert limits.time_limit_message(observed, 1) == (
        "the job reached its time limit of 1 s after running "
        f"{limits.duration(observed.signalled_at - observed.started)} and was stopped")
    child = (await remote.read(f"{files.job_dir}/child.pid")).decode().strip()
    for _ in range(100):  # killed at once, but perhaps not yet gone
        if not await alive(remote, child):
            break
        await asyncio.sleep(0.05)
    else:
        raise AssertionError("the runner's child outlived the time limit")


async def alive(remote: Remote, pid: str) -> bool:
    """Whether process `pid` runs (a killed orphan may linger as a zombie until reaped)."""
    state = (await remote.run(f"ps -o stat= -p {pid}")).stdout.strip()
    return state != "" and not state.startswith("Z")


async def test_cancel_is_not_a_time_limit(remote: Remote) -> None:
    files = await new_job(remote)
    result = await executor.submit(remote, SCHEDULER, files, Request("t", time_limit=600),
                                   ["bash", "-c", "sleep 300", "r"])
    job = JobRef("k", files, result.remote_id)
    await wait_for(remote, job, RemoteState.RUNNING)
    await executor.cancel(remote, SCHEDULER, [job])
    observed = await wait_for(remote, job, RemoteState.DONE)
    assert (observed.exit_code, observed.signal) == (143, "TERM")
    assert limits.time_limit_message(observed, 600) is None


async def test_impossible_core_request_is_refused(remote: Remote) -> None:
    files = await new_job(remote)
    cores = (await remote.run("nproc")).stdout.strip()
    result = await executor.submit(remote, SCHEDULER, files, Request("t", cores=100000),
                                   ["bash", "-c", "exit 0", "r"])
    assert result == SubmitResult(
        SubmitOutcome.REFUSED,
        detail=f"none: the job asks for 100000 cores, but this host has {cores}")
    assert (await remote.run(f"test -e '{files.lock}'")).exit_status != 0
    fits = await executor.submit(remote, SCHEDULER, files, Request("t", cores=1),
                                 ["bash", "-c", "exit 0", "r"])
    assert fits.outcome is SubmitOutcome.SUBMITTED


async def test_hostile_paths_and_names_run_no_command(remote: Remote) -> None:
    canary = f"cerise-canary-{uuid.uuid4().hex[:8]}"
    hostile = f"$(cd; touch {canary}) `cd; touch {canary}`; cd; touch {canary} 'q' \"d\""
    base = (await remote.run("mktemp -d")).stdout.strip()
    files = JobFiles(f"{base}/{hostile}/jobs/{uuid.uuid4()}")
    await make_job_dir(remote, files)
    for path in (files.workflow, files.input):
        await remote.write(path, b"{}")
    result = await executor.submit(remote, SCHEDULER, files, Request(hostile, time_limit=60),
                                   ["bash", "-c", 'printf "%s" "$1"', "r", hostile])
    job = JobRef("k", files, result.remote_id)
    assert (await wait_for(remote, job, RemoteState.DONE)).exit_code == 0
    assert await remote.read(files.stdout) == hostile.encode()
    assert (await remote.run(f"test -e ~/{canary}")).exit_status != 0


async def test_poll_of_many_jobs_is_one_command(remote: Remote) -> None:
    jobs = []
    for _ in range(5):
        files = await new_job(remote)
        result = await executor.submit(remote, SCHEDULER, files, Request("t"),
                                       ["bash", "-c", "exit 0", "r"])
        jobs.append(JobRef(str(uuid.uuid4()), files, result.remote_id))
    counting = CountingRemote(remote)
    for _ in range(100):
        observed = await executor.poll(cast(Remote, counting), SCHEDULER, jobs)
        if all(o.state is RemoteState.DONE for o in observed.values()):
            break
    else:
        raise AssertionError(observed)
    before = counting.calls
    await executor.poll(cast(Remote, counting), SCHEDULER, jobs)
    assert counting.calls == before + 1


async def test_remove_job_dir(remote: Remote) -> None:
    files = await new_job(remote)
    await executor.remove_job_dir(remote, files)
    exists = await remote.run(f"test -e '{files.job_dir}'")
    assert exists.exit_status == 1
