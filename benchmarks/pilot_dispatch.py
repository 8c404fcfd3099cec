"""Pilot mode's dispatch on real Slurm against bare batch jobs, measured in the same run.

Starts the test sshd and a one-node Slurm cluster (root needed, as for the integration
tests) and drives them at the remote level (`cerise.remote.executor`, no operator):

    latency  runs one at a time into an allocation of all the node's cores: the time from
             the hand-over's ticket to the job script's `started` marker (the resource's
             clock), and from the submit call to `started` — against the same submit call
             to `started` for the same job script submitted as a batch job with sbatch
             (after the allocation ended, so that the node's cores are free for it)
    burst    N trivial runs at once through that allocation against N batch jobs: the
             wall time until every one has its exit code, and the batch jobs each needed

Goal: dispatch p95 <= 100 ms. Run on demand:

    .venv/bin/python benchmarks/pilot_dispatch.py [--runs 30] [--burst 200]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import shlex
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from cerise.devenv import slurm as devenv_slurm
from cerise.devenv import sshd as devenv_sshd
from cerise.model import compute
from cerise.remote import executor
from cerise.remote.jobscript import JobFiles, SubmitOutcome
from cerise.remote.pilot import executor as pilot_executor
from cerise.remote.pilot.agent import AgentSettings
from cerise.remote.pilot.layout import PilotLayout
from cerise.remote.pilot.queue import PilotQueue
from cerise.remote.pilot.status import RunVerdict
from cerise.remote.schedulers import JobRef, RemoteState, Request, Scheduler
from cerise.remote.schedulers.batch import BatchSettings
from cerise.remote.schedulers.slurm import SlurmScheduler
from cerise.remote.ssh import SshCredentials, SshTarget
from cerise.remote.ssh_remote import SshRemote

RUNNER = ["bash", "-c", "echo hi", "runner"]


@dataclass
class Bench:
    remote: SshRemote
    scheduler: Scheduler
    prologue: str
    base: str
    queue: PilotQueue
    cores: int
    allocation: JobRef | None = None

    async def job(self) -> JobFiles:
        files = JobFiles(f"{self.base}/jobs/{uuid.uuid4().hex}")
        made = await self.remote.run(f"mkdir -p {shlex.quote(files.work)}")
        assert made.exit_status == 0, made.stderr
        return files

    async def submit(self, scheduler: Scheduler, files: JobFiles) -> JobRef:
        result = await executor.submit(self.remote, scheduler, files, Request("bench", 1, 600),
                                       RUNNER, self.prologue)
        if result.outcome is not SubmitOutcome.SUBMITTED:
            raise SystemExit(f"submit failed: {result}")
        return JobRef(uuid.uuid4().hex, files, result.remote_id)

    async def pilot_done(self, runs: Sequence[JobRef]) -> bool:
        assert self.allocation is not None
        seen = await pilot_executor.poll(self.remote, self.scheduler, self.queue,
                                         [self.allocation], runs, self.prologue)
        return all(seen.runs[run.key].verdict is RunVerdict.DONE for run in runs)

    async def batch_done(self, jobs: Sequence[JobRef]) -> bool:
        seen = await executor.poll(self.remote, self.scheduler, jobs, self.prologue)
        return all(seen[job.key].state is RemoteState.DONE for job in jobs)

    async def agent_running(self) -> bool:
        assert self.allocation is not None
        seen = await pilot_executor.poll(self.remote, self.scheduler, self.queue,
                                         [self.allocation], [], self.prologue)
        return seen.allocations[self.allocation.key].heartbeat is not None

    async def batch_gone(self, job: JobRef) -> bool:
        seen = await executor.poll(self.remote, self.scheduler, [job], self.prologue)
        return seen[job.key].state in (RemoteState.DONE, RemoteState.VANISHED)

    async def started(self, files: Sequence[JobFiles]) -> list[float]:
        """The `started` markers' modification times (ns precision)."""
        paths = " ".join(shlex.quote(f.started) for f in files)
        result = await self.remote.run(f"stat -c %.9Y {paths}")
        return [float(line) for line in result.stdout.split()]

    async def ticket_times(self, runs: Sequence[JobRef]) -> list[float]:
        """When each run's ticket entered the queue."""
        assert self.allocation is not None
        seen = await pilot_executor.poll(self.remote, self.scheduler, self.queue,
                                         [self.allocation], runs, self.prologue)
        return [seen.runs[run.key].ticket.queued_at or 0.0 for run in runs]


async def until(done: Callable[[], Awaitable[bool]], what: str, timeout: float = 3600) -> None:
    began = time.monotonic()
    while not await done():
        if time.monotonic() - began > timeout:
            raise SystemExit(f"{what}: not done after {timeout:g} s")
        await asyncio.sleep(0.05)


def summary(name: str, seconds: Sequence[float]) -> str:
    q = statistics.quantiles(seconds, n=20, method="inclusive")
    return (f"{name}: p50 {statistics.median(seconds) * 1000:.0f} ms, "
            f"p95 {q[18] * 1000:.0f} ms, max {max(seconds) * 1000:.0f} ms")


async def one_at_a_time(bench: Bench, scheduler: Scheduler, count: int) -> list[float]:
    """Submit call → `started`, for runs (or batch jobs) one after another."""
    pilot = scheduler is bench.queue
    done = bench.pilot_done if pilot else bench.batch_done
    seconds, tickets = [], []
    for _ in range(count):
        files = await bench.job()
        called = time.time()  # the resource is this machine: one clock
        run = await bench.submit(scheduler, files)
        await until(functools.partial(done, [run]), "a run")
        started = (await bench.started([files]))[0]
        seconds.append(started - called)
        if pilot:
            tickets.append(started - (await bench.ticket_times([run]))[0])
    if pilot:
        print("  " + summary("pilot, ticket -> started", tickets))
    return seconds


async def burst(bench: Bench, scheduler: Scheduler, count: int) -> float:
    """Seconds until `count` trivial runs submitted at once all have their exit code."""
    gate = asyncio.Semaphore(8)
    done = bench.pilot_done if scheduler is bench.queue else bench.batch_done

    async def submit() -> JobRef:
        async with gate:
            return await bench.submit(scheduler, await bench.job())

    began = time.monotonic()
    jobs = await asyncio.gather(*(submit() for _ in range(count)))
    await until(functools.partial(done, jobs), "the burst")
    return time.monotonic() - began


async def compare(bench: Bench, pilot: PilotLayout, runs: int, size: int) -> None:
    print(f"{runs} runs one at a time, then a burst of {size}, on {bench.cores} cores:")
    submitted = await pilot_executor.submit_allocation(
        bench.remote, bench.scheduler, pilot, "bench",
        AgentSettings(cores=bench.cores, time_limit=7200, idle=600), bench.prologue)
    bench.allocation = pilot_executor.allocation_ref(pilot, "bench", submitted.remote_id)
    await until(bench.agent_running, "the allocation's start")
    pilot_calls = await one_at_a_time(bench, bench.queue, runs)
    pilot_burst = await burst(bench, bench.queue, size) if size else 0.0
    allocation = bench.allocation
    await executor.cancel(bench.remote, bench.scheduler, [allocation], bench.prologue)
    await until(functools.partial(bench.batch_gone, allocation), "the allocation's end")
    batch_calls = await one_at_a_time(bench, bench.scheduler, runs)
    batch_burst = await burst(bench, bench.scheduler, size) if size else 0.0
    print("  " + summary("pilot, submit call -> started", pilot_calls))
    print("  " + summary("sbatch, submit call -> started", batch_calls))
    ratio = statistics.median(pilot_calls) / statistics.median(batch_calls)
    print(f"  pilot / sbatch (p50, submit call -> started): {ratio:.2f}")
    if size:
        print(f"  burst, until every exit code: pilot {pilot_burst:.1f} s (1 batch job), "
              f"sbatch {batch_burst:.1f} s ({size} batch jobs), "
              f"pilot / sbatch {pilot_burst / batch_burst:.2f}")


async def main(runs: int, burst_size: int) -> None:
    with contextlib.ExitStack() as stack:
        sshd = devenv_sshd.start()
        stack.callback(sshd.stop)
        slurm = devenv_slurm.start()
        stack.callback(slurm.stop)
        endpoint, cluster = sshd.endpoint, slurm.cluster
        remote = SshRemote(SshTarget(
            host=endpoint.host, port=endpoint.port, host_keys=(endpoint.host_key,),
            credentials=SshCredentials(endpoint.username,
                                       private_key=endpoint.client_key.read_text())))
        try:
            made = await remote.run("mktemp -d ~/cerise-bench-pilot.XXXXXX")
            base = made.stdout.strip()
            pilot = PilotLayout.under(base)
            bench = Bench(remote, SlurmScheduler(BatchSettings(
                queue=cluster.partition, cores_per_node=cluster.cpus)),
                compute.prologue(cluster.environment), base, PilotQueue(pilot), cluster.cpus)
            await compare(bench, pilot, runs, burst_size)
            await remote.run(f"rm -rf -- {shlex.quote(base)}")
        finally:
            await remote.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--burst", type=int, default=200)
    args = parser.parse_args()
    asyncio.run(main(args.runs, args.burst))
