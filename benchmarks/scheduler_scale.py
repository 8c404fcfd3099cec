"""Scale on real Slurm: status commands per refresh, throughput against bare sbatch, the
time to the queue, and an operator with 10,000 WorkflowJobs.

Each measurement starts its own control plane, sshd, one-node Slurm cluster and operator
(`slurm_cerise`) and reads the operator's own metrics:

    polls       status commands per refresh with 1, 10, 100 and 1,000 jobs in flight
                (goal: always 1), with each poll's latency and the operator's CPU per refresh
    throughput  N trivial jobs end to end through Cerise against the same job scripts on
                the same staged files submitted by a bare shell loop of sbatch that then
                waits for the queue to empty (goal: <= 1.2x its time)
    latency     WorkflowJob created -> in the scheduler's queue (its Waiting transition),
                p50 and p99: a burst of 100, then jobs one by one with 100 in flight
                (goal: p50 <= 1 s)
    many        10,000 WorkflowJobs (9,900 finished, written straight to the API, and 100
                in flight): operator RSS (goal <= 300 MB), a refresh's cost against 100
                jobs, and a restarted operator's time to its first status command

    CERISE_BIN_DIR=... .venv/bin/python benchmarks/scheduler_scale.py polls [--counts 1,10,100,1000]
    CERISE_BIN_DIR=... .venv/bin/python benchmarks/scheduler_scale.py throughput [--jobs 1000]
    CERISE_BIN_DIR=... .venv/bin/python benchmarks/scheduler_scale.py latency [--in-flight 100]
    CERISE_BIN_DIR=... .venv/bin/python benchmarks/scheduler_scale.py many [--finished 9900]
        [--profile DIR]   (py-spy's stacks of the operator in both windows, collapsed)

A trivial job's runner is a shell script (see `slurm_cerise`); the machine's cores bound
how many Slurm runs at once, the rest wait in its queue, still in flight.
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import shlex
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from lightkube.models.meta_v1 import ObjectMeta
from slurm_cerise import (
    FINAL,
    IN_FLIGHT,
    NAMESPACE,
    SUBMITTED,
    SlurmCerise,
    cpu_seconds,
    memory_mib,
    resource_value,
    slurm_cerise,
    value,
)

from cerise.kube import jobs as kube_jobs
from cerise.kube.jobs import WorkflowJob
from cerise.model import compute
from cerise.remote import schedulers
from cerise.remote.jobscript import JobFiles, job_script
from cerise.remote.schedulers.batch import BatchSettings
from cerise.remote.schedulers.slurm import SlurmScheduler

STATUS = "cerise_operator_scheduler_commands_total"
STATUS_SECONDS = "cerise_operator_scheduler_command_seconds"
EVENTS = "cerise_operator_job_events_total"


def quantile(values: list[float], q: float) -> float:
    """The q-quantile (0..1) of `values`, by the inclusive method."""
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[round(q * 100) - 1]


# --- refreshes --------------------------------------------------------------------------------

async def refreshes(cerise: SlurmCerise, window: float,
                    profile: Path | None = None) -> dict[str, float]:
    """Watch the operator poll for `window` seconds: status commands, their mean latency,
    the refreshes that fit (a poll starts every interval, or when the last one ended if it
    took longer), and operator CPU per refresh. With `profile`, py-spy samples the operator
    meanwhile and writes its stacks there (collapsed: one stack and its count a line)."""
    await asyncio.sleep(3 * cerise.refresh)  # let the wake-ups of the last changes pass
    pid = cerise.operator.daemon.pid if cerise.operator.daemon else 0
    spy = None if profile is None else await asyncio.create_subprocess_exec(
        str(Path(sys.executable).with_name("py-spy")), "record", "--pid", str(pid),
        "--duration", str(round(window)), "--rate", "200", "--format", "raw",
        "--output", str(profile), "--nonblocking",
        stdout=asyncio.subprocess.DEVNULL)
    before, cpu_before, began = cerise.scrape(), cpu_seconds(pid), time.monotonic()
    await asyncio.sleep(window)  # the measurement window itself
    after, cpu_after, elapsed = cerise.scrape(), cpu_seconds(pid), time.monotonic() - began
    if spy is not None:
        await spy.wait()

    def moved(name: str) -> float:
        return (resource_value(after, name, kind="status")
                - resource_value(before, name, kind="status"))

    polls = moved(STATUS)
    latency = moved(f"{STATUS_SECONDS}_sum") / polls if polls else 0.0
    fitting = elapsed / max(cerise.refresh, latency)
    rss, peak = memory_mib(pid)
    return {"polls": polls, "elapsed": elapsed, "latency": latency, "refreshes": fitting,
            "per_refresh": polls / fitting, "cpu": (cpu_after - cpu_before) / max(polls, 1),
            "rss": rss, "peak": peak}


async def polls(args: argparse.Namespace, work: Path) -> None:
    counts = sorted(int(n) for n in args.counts.split(","))
    async with slurm_cerise(work, refresh=args.refresh) as cerise:
        print(f"refresh {args.refresh:g} s, window {args.window:g} s per count; Slurm runs "
              f"{cerise.slurm.cpus} jobs at once, the rest wait in its queue")
        print(f"{'in flight':>9} {'status cmds':>11} {'refreshes':>9} {'per refresh':>11} "
              f"{'poll mean':>11} {'CPU/refresh':>11}")
        made = 0
        for count in counts:
            await cerise.create_jobs((f"flight-{i}" for i in range(made, count)),
                                     delay=IN_FLIGHT)
            made = count
            await cerise.wait_phases(SUBMITTED, count, timeout=60 + count)
            found = await refreshes(cerise, args.window)
            print(f"{count:>9} {found['polls']:>11.0f} {found['refreshes']:>9.1f} "
                  f"{found['per_refresh']:>11.2f} {found['latency'] * 1000:>9.0f} ms "
                  f"{found['cpu'] * 1000:>8.1f} ms", flush=True)


# --- throughput against bare sbatch -----------------------------------------------------------

async def throughput(args: argparse.Namespace, work: Path) -> None:
    async with slurm_cerise(work, refresh=args.refresh) as cerise:
        await cerise.create_jobs(["warm-up"])
        await cerise.wait_phases({"Success"}, 1, timeout=120)
        warm = await cerise.client.get(WorkflowJob, "warm-up", namespace=NAMESPACE)
        assert warm.metadata is not None
        staged = JobFiles(f"{cerise.base}/jobs/{warm.metadata.uid}")

        bare = await bare_sbatch(cerise, staged, args.jobs)
        began = time.monotonic()
        await cerise.create_jobs(f"job-{i}" for i in range(args.jobs))
        created = time.monotonic() - began
        await cerise.wait_phases(FINAL, args.jobs + 1, timeout=3600)
        through_cerise = time.monotonic() - began
        phases = {p: int(n) for p, n in cerise.phases().items() if n}
        print(f"{args.jobs} trivial jobs, refresh {args.refresh:g} s, Slurm running "
              f"{cerise.slurm.cpus} at once; final phases {phases}")
        print(f"bare sbatch loop + waiting for the queue: {bare:.1f} s "
              f"({args.jobs / bare:.1f} jobs/s)")
        print(f"Cerise, created -> every job final: {through_cerise:.1f} s "
              f"({args.jobs / through_cerise:.1f} jobs/s; creating them took {created:.1f} s)")
        print(f"ratio: {through_cerise / bare:.2f}x (goal <= 1.2x)")


async def bare_sbatch(cerise: SlurmCerise, staged: JobFiles, count: int) -> float:
    """Seconds for a shell loop of `count` sbatch calls, then waiting (polling squeue every
    refresh) until none of them is queued or running. Each job has its own directory with a
    copy of the staged files of `staged` and a job script made as Cerise makes it."""
    spec = compute.parse_spec({"jobs": {
        "protocol": "ssh", "scheduler": "slurm", "queue": cerise.slurm.partition,
        "cwlRunner": cerise.runner,
        "environment": [{"name": n, "value": v} for n, v in cerise.slurm.environment]}})
    scheduler = SlurmScheduler(BatchSettings.from_spec(spec))
    runner = compute.runner_argv(spec, cerise.remote.username)
    prologue = compute.prologue(spec.environment)
    request = schedulers.Request(name="bare", cores=0, time_limit=0)
    copies = [JobFiles(f"{cerise.base}/bare/{i}") for i in range(count)]
    q = shlex.quote
    await cerise.remote.run("\n".join(
        f"mkdir -p {q(f.work)} && cp {q(staged.workflow)} {q(staged.input)} {q(f.job_dir)}/"
        for f in copies), timeout=600)
    gate = asyncio.Semaphore(8)

    async def write(files: JobFiles) -> None:
        async with gate:
            await cerise.remote.write(files.script,
                                      job_script(files, runner, prologue).encode(), mode=0o700)

    await asyncio.gather(*(write(f) for f in copies))
    loop = "\n".join(scheduler.submit_command(f, request) + " > /dev/null" for f in copies)
    wait = (f"while squeue -u \"$(id -un)\" -h -t PD,CF,R,CG -o %i | grep -q .; do "
            f"sleep {cerise.refresh:g}; done")
    began = time.monotonic()
    await cerise.slurm_command(f"{loop}\n{wait}")
    taken = time.monotonic() - began
    done = await cerise.remote.run(
        f"ls {q(cerise.base)}/bare/*/exit_code | wc -l; cat {q(cerise.base)}/bare/*/exit_code "
        f"| sort | uniq -c")
    ended = int(done.stdout.split()[0])
    if ended != count:
        raise SystemExit(f"only {ended} of {count} bare jobs ended: {done.stdout}")
    return taken


# --- created -> queued ------------------------------------------------------------------------

async def latency(args: argparse.Namespace, work: Path) -> None:
    async with slurm_cerise(work, refresh=args.refresh) as cerise:
        queued: dict[str, float] = {}
        watcher = asyncio.create_task(watch_queued(cerise, queued))
        try:
            created: dict[str, float] = {}
            await cerise.create_jobs([f"burst-{i}" for i in range(args.in_flight)],
                                     delay=IN_FLIGHT, created=created)
            await cerise.wait_phases(SUBMITTED, args.in_flight, timeout=600)
            await until(lambda: all(name in queued for name in created), 30)
            burst = [queued[name] - created[name] for name in created]
            steady: list[float] = []
            for index in range(args.steady):
                name = f"steady-{index}"
                one: dict[str, float] = {}
                await cerise.create_jobs([name], delay=IN_FLIGHT, created=one)
                await until(lambda: name in queued, 60)  # noqa: B023 (awaited at once)
                steady.append(queued[name] - one[name])
                await asyncio.sleep(args.pause)
        finally:
            watcher.cancel()
        print(f"refresh {args.refresh:g} s; created (API answered) -> Waiting transition seen "
              f"by a watch")
        for what, times in ((f"a burst of {args.in_flight} jobs", burst),
                            (f"{args.steady} jobs one at a time, {args.in_flight} in flight",
                             steady)):
            print(f"{what}: p50 {quantile(times, 0.5):.3f} s, p99 {quantile(times, 0.99):.3f} s,"
                  f" max {max(times):.3f} s")


async def watch_queued(cerise: SlurmCerise, queued: dict[str, float]) -> None:
    """Record when each job is first seen handed to the scheduler."""
    async for _, job in cerise.client.watch(WorkflowJob, namespace=NAMESPACE):
        assert job.metadata is not None and job.metadata.name is not None
        if (job.get("status") or {}).get("phase") in SUBMITTED:
            queued.setdefault(job.metadata.name, time.monotonic())


async def until(condition: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out after {timeout:g} s")
        await asyncio.sleep(0.05)


# --- 10,000 jobs ------------------------------------------------------------------------------

async def many(args: argparse.Namespace, work: Path) -> None:
    async with slurm_cerise(work, refresh=args.refresh) as cerise:
        await cerise.create_jobs(["template"])
        await cerise.wait_phases({"Success"}, 1, timeout=120)
        template = (await cerise.client.get(WorkflowJob, "template", namespace=NAMESPACE)
                    ).to_dict()  # type: ignore[no-untyped-call]
        await cerise.create_jobs((f"flight-{i}" for i in range(args.in_flight)),
                                 delay=IN_FLIGHT)
        await cerise.wait_phases(SUBMITTED, args.in_flight + 1, timeout=600)
        few = await refreshes(cerise, args.window, profile(args, "few"))

        cerise.operator.stop()
        began = time.monotonic()
        await write_finished(cerise, template, args.finished - 1)
        written = time.monotonic() - began

        total = args.finished + args.in_flight
        endpoint_up, first_poll = await restart(cerise)
        all_known = first_poll + await cerise.wait_phases(SUBMITTED, total, timeout=600)
        watched = all_known + await events_handled(cerise, total)
        lots = await refreshes(cerise, args.window, profile(args, "lots"))
        print(f"refresh {args.refresh:g} s, window {args.window:g} s; {args.finished - 1} "
              f"finished jobs written straight to the API in {written:.1f} s "
              f"({(args.finished - 1) / written:.0f}/s)")
        print(f"{'jobs':>6} {'in flight':>9} {'RSS':>8} {'peak RSS':>9} {'poll':>8} "
              f"{'CPU/refresh':>11} {'per refresh':>11}")
        for jobs, found in ((args.in_flight + 1, few), (total, lots)):  # +1: the template
            print(f"{jobs:>6} {args.in_flight:>9} {found['rss']:>5.0f} MB {found['peak']:>6.0f} MB "
                  f"{found['latency'] * 1000:>5.0f} ms {found['cpu'] * 1000:>8.1f} ms "
                  f"{found['per_refresh']:>11.2f}")
        print(f"restarted with {total} jobs: metrics endpoint after {endpoint_up:.2f} s, "
              f"first status command after {first_poll:.2f} s, all {total} jobs in its "
              f"registry after {all_known:.2f} s, the watch's first event of each handled "
              f"after {watched:.2f} s (then the window above)")


def profile(args: argparse.Namespace, name: str) -> Path | None:
    """Where py-spy writes the stacks of window `name`, if asked to (`--profile DIR`)."""
    if args.profile is None:
        return None
    args.profile.mkdir(parents=True, exist_ok=True)
    return Path(args.profile) / f"{name}.txt"


async def events_handled(cerise: SlurmCerise, count: int) -> float:
    """Seconds until the operator has handled `count` job watch events: after a restart,
    the first of every job, a cost paid once that is not a refresh's."""
    began = time.monotonic()
    while value(await asyncio.to_thread(cerise.scrape), EVENTS) < count:
        if time.monotonic() - began > 600:
            raise SystemExit(f"{count} job events not handled in 600 s")
        await asyncio.sleep(0.2)
    return time.monotonic() - began


async def write_finished(cerise: SlurmCerise, template: dict[str, Any], count: int) -> None:
    """`count` jobs like `template` (its spec, finalizer, kopf's annotations and its final
    status), created and given their status straight through the API, in parallel."""
    meta = template["metadata"]
    annotations = {k: v for k, v in (meta.get("annotations") or {}).items()
                   if k.startswith(kube_jobs.GROUP)}
    gate = asyncio.Semaphore(32)

    async def one(index: int) -> None:
        name = f"done-{index}"
        async with gate:
            await cerise.client.create(WorkflowJob(
                metadata=ObjectMeta(name=name, namespace=NAMESPACE,
                                    finalizers=meta.get("finalizers"), annotations=annotations),
                spec=copy.deepcopy(template["spec"])))
            await kube_jobs.patch_status(cerise.client, namespace=NAMESPACE, name=name,
                                         status=template["status"])

    await asyncio.gather(*(one(i) for i in range(count)))


async def restart(cerise: SlurmCerise) -> tuple[float, float]:
    """Start the operator again; seconds until its metrics answer and until its first status
    command."""
    began = time.monotonic()
    starting = asyncio.create_task(asyncio.to_thread(cerise.operator.start, 300))
    endpoint_up = 0.0
    while True:
        try:
            samples = await asyncio.to_thread(cerise.scrape)
        except Exception:  # not listening yet
            await asyncio.sleep(0.05)
            continue
        endpoint_up = endpoint_up or time.monotonic() - began
        if resource_value(samples, STATUS, kind="status") >= 1:
            await starting
            return endpoint_up, time.monotonic() - began
        if time.monotonic() - began > 300:
            raise SystemExit("no status command 300 s after the restart")
        await asyncio.sleep(0.05)


# --- main -------------------------------------------------------------------------------------

def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    run: dict[str, Callable[[argparse.Namespace, Path], Coroutine[Any, Any, None]]] = {
        "polls": polls, "throughput": throughput, "latency": latency, "many": many}
    polling = commands.add_parser("polls", help="status commands per refresh")
    polling.add_argument("--counts", default="1,10,100,1000")
    polling.add_argument("--refresh", type=float, default=1.0)
    polling.add_argument("--window", type=float, default=15.0)
    through = commands.add_parser("throughput", help="N trivial jobs against bare sbatch")
    through.add_argument("--jobs", type=int, default=1000)
    through.add_argument("--refresh", type=float, default=0.5)
    queueing = commands.add_parser("latency", help="WorkflowJob created -> queued")
    queueing.add_argument("--in-flight", type=int, default=100)
    queueing.add_argument("--steady", type=int, default=20)
    queueing.add_argument("--pause", type=float, default=1.0)
    queueing.add_argument("--refresh", type=float, default=1.0)
    lots = commands.add_parser("many", help="10,000 WorkflowJobs")
    lots.add_argument("--finished", type=int, default=9900)
    lots.add_argument("--in-flight", type=int, default=100)
    lots.add_argument("--refresh", type=float, default=1.0)
    lots.add_argument("--window", type=float, default=15.0)
    lots.add_argument("--profile", type=Path, default=None,
                      help="a directory for py-spy's stacks of the operator in both windows")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="cerise-scale-") as work:
        asyncio.run(run[args.command](args, Path(work)))


if __name__ == "__main__":
    main()
