"""Per-job overhead on the local compute resource: creation → Success, minus the runner's time.

Starts its own control plane and operator (as `./dev up` does), runs trivial jobs one
after another and prints p50/p95 of the overhead Cerise adds around the CWL runner: the
time from `kubectl create` to the job's `Success`, minus the time between the job
script's `started` and `exit_code` markers. Goal: p50 <= 0.15 s (the original Cerise
needed about 2 s even with a 0.1 s refresh).

The client sees each change through a watch, as `kubectl get -w` and the apiserver do
(`--observe watch`, the default); `--observe poll` GETs the job every 10 ms instead, as
this benchmark did before 2026-12-07: on 2 cores those 100 requests a second add about
0.01 s to the figure they measure. With `--profile DIR`, py-spy samples the operator
meanwhile and writes its stacks to `DIR/operator.txt` (collapsed: one stack and its count
a line; `--idle` includes the waits).

    CERISE_BIN_DIR=... .venv/bin/python benchmarks/job_overhead.py [--jobs 20] [--refresh 0.1]
        [--observe watch|poll] [--profile DIR [--idle]]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from lightkube import AsyncClient
from lightkube.models.meta_v1 import ObjectMeta
from local_cerise import local_cerise

from cerise.kube.jobs import WorkflowJob

WORKFLOW = json.dumps({
    "cwlVersion": "v1.2", "class": "Workflow", "inputs": {},
    "outputs": {"out": {"type": "File", "outputSource": "echo/output"}},
    "steps": {"echo": {"run": "cerise/test/echo.cwl", "in": {"message": {"default": "hi"}},
                       "out": ["output"]}},
})


FINAL = ("Success", "PermanentFailure", "SystemError", "Cancelled")


async def _watch(client: AsyncClient,
                 changes: asyncio.Queue[tuple[float, dict[str, Any]]]) -> None:
    """Put every change of a job in namespace default on `changes`, with when it arrived."""
    async for _, job in client.watch(WorkflowJob, namespace="default"):
        changes.put_nowait((time.monotonic(), job.to_dict()))  # type: ignore[no-untyped-call]


async def run(jobs: int, refresh: float, work: Path, profile: Path | None = None,
              idle: bool = False, observe: str = "watch") -> None:
    async with local_cerise(work, refresh=refresh) as cerise:
        client = cerise.client
        spy = None
        if profile is not None and cerise.operator.daemon is not None:
            spy = await asyncio.create_subprocess_exec(
                str(Path(sys.executable).with_name("py-spy")), "record", "--pid",
                str(cerise.operator.daemon.pid), "--rate", "250", "--format", "raw",
                "--output", str(profile / "operator.txt"), "--nonblocking",
                *(["--idle"] if idle else []), stdout=asyncio.subprocess.DEVNULL)
        overheads, totals = [], []
        seen: dict[str, list[float]] = {}
        changes: asyncio.Queue[tuple[float, dict[str, Any]]] = asyncio.Queue()
        watching = asyncio.create_task(_watch(client, changes)) if observe == "watch" else None
        for index in range(jobs + 1):
            name = f"bench-{index}"
            began = time.monotonic()
            created = await client.create(WorkflowJob(
                metadata=ObjectMeta(name=name, namespace="default"),
                spec={"workflow": WORKFLOW, "computeResource": "local"}))
            first: dict[str, float] = {}
            while True:
                job: dict[str, Any]
                if watching is None:
                    polled = await client.get(WorkflowJob, name, namespace="default")
                    job, at = polled.to_dict(), None  # type: ignore[no-untyped-call]
                else:
                    at, job = await changes.get()
                    if job["metadata"]["name"] != name:
                        continue
                phase = (job.get("status") or {}).get("phase")
                first.setdefault(str(phase), (at or time.monotonic()) - began)
                if phase in FINAL:
                    break
                if watching is None:
                    await asyncio.sleep(0.01)
            total = first[str(phase)]
            if phase != "Success":
                raise SystemExit(f"{name} ended in {phase}: {job['status'].get('message')}")
            assert created.metadata is not None
            job_dir = cerise.base / "jobs" / str(created.metadata.uid)
            runner = (job_dir / "exit_code").stat().st_mtime - (job_dir / "started").stat().st_mtime
            if index:  # the first job warms caches (imports, connection); not counted
                overheads.append(total - runner)
                totals.append(total)
                for seen_phase, at in first.items():
                    seen.setdefault(seen_phase, []).append(at)
        if watching is not None:
            watching.cancel()
        if spy is not None:
            spy.send_signal(2)  # py-spy writes its stacks when interrupted
            await spy.wait()
        quantiles = statistics.quantiles(overheads, n=20, method="inclusive")
        how = "a watch" if observe == "watch" else "a GET every 10 ms"
        print(f"median time from creation until a phase was first seen (through {how}):")
        for seen_phase, times in sorted(seen.items(), key=lambda item: statistics.median(item[1])):
            print(f"  {seen_phase:<12} {statistics.median(times):.3f} s")
        print(f"jobs: {jobs}, refresh: {refresh} s")
        print(f"creation to Success: p50 {statistics.median(totals):.3f} s")
        print(f"overhead (minus runner time): p50 {statistics.median(overheads):.3f} s, "
              f"p95 {quantiles[18]:.3f} s, max {max(overheads):.3f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=20)
    parser.add_argument("--refresh", type=float, default=0.1)
    parser.add_argument("--observe", choices=("watch", "poll"), default="watch",
                        help="how the client sees the jobs change (default: a watch)")
    parser.add_argument("--profile", type=Path, default=None,
                        help="a directory for py-spy's stacks of the operator")
    parser.add_argument("--idle", action="store_true",
                        help="with --profile: sample waiting threads too")
    args = parser.parse_args()
    if args.profile is not None:
        args.profile.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="cerise-bench-") as work:
        asyncio.run(run(args.jobs, args.refresh, Path(work), args.profile, args.idle,
                        args.observe))


if __name__ == "__main__":
    main()
