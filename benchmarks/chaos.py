"""Chaos: many short jobs while the operator is killed with SIGKILL at random moments.

Starts its own control plane and operator, creates `--jobs` short jobs on a local compute
resource, and meanwhile kills the operator with SIGKILL `--kills` times at random moments
(restarting it each time). Then it waits for every job to end and prints:

    jobs lost             jobs whose object vanished or that never got a phase
    jobs submitted twice  jobs whose runner was started more than once
    jobs not terminal     jobs not in a final phase within the deadline

Goal: 0, 0, 0. The runner is a small counting wrapper around a trivial runner (it writes
a CWL output object and cwltool's closing line), so that hundreds of jobs fit on two
cores; every job still goes through validation, staging, the exactly-once submit, the
batched poll and destaging. `--cwltool` uses the real cwltool instead (slow).

    CERISE_BIN_DIR=... .venv/bin/python benchmarks/chaos.py [--jobs 200] [--kills 10] [--seed 1]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import tempfile
import time
from collections import Counter
from pathlib import Path

from lightkube.models.meta_v1 import ObjectMeta
from local_cerise import local_cerise

from cerise.kube.jobs import WorkflowJob

FINAL = {"Success", "Cancelled", "PermanentFailure", "TemporaryFailure", "SystemError"}
WORKFLOW = json.dumps({
    "cwlVersion": "v1.2", "class": "Workflow", "inputs": {"delay": "int"}, "outputs": {},
    "steps": {"sleep": {"run": "cerise/test/sleep.cwl", "in": {"delay": "delay"}, "out": []}},
})
LIGHT_RUNNER = """#!/bin/bash
echo "$PWD" >> {count}
sleep 0.$((RANDOM % 10))
echo '{{}}'
echo 'Final process status is success' >&2
"""
COUNTING_CWLTOOL = """#!/bin/bash
echo "$PWD" >> {count}
exec cwltool "$@"
"""


async def run(jobs: int, kills: int, seed: int, use_cwltool: bool, work: Path) -> None:
    rng = random.Random(seed)  # noqa: S311 - reproducible chaos, not cryptography
    count = work / "runner-starts.txt"
    runner = work / "runner.sh"
    runner.write_text((COUNTING_CWLTOOL if use_cwltool else LIGHT_RUNNER).format(count=count))
    runner.chmod(0o755)
    async with local_cerise(work, refresh=0.2, runner=str(runner)) as cerise:
        client, operator = cerise.client, cerise.operator
        began = time.monotonic()

        async def create() -> None:
            for index in range(jobs):
                await client.create(WorkflowJob(
                    metadata=ObjectMeta(name=f"chaos-{index}", namespace="default"),
                    spec={"workflow": WORKFLOW, "input": {"delay": 0},
                          "computeResource": "local"}))
                await asyncio.sleep(rng.uniform(0, 0.05))

        async def kill() -> None:
            for _ in range(kills):
                await asyncio.sleep(rng.uniform(0.5, 4.0))
                operator.kill()
                await asyncio.to_thread(operator.start)

        await asyncio.gather(create(), kill())
        uids: dict[str, str] = {}
        phases: dict[str, str | None] = {}
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            phases = {}
            async for job in client.list(WorkflowJob, namespace="default"):
                assert job.metadata is not None and job.metadata.name and job.metadata.uid
                uids[job.metadata.name] = job.metadata.uid
                phases[job.metadata.name] = (job.get("status") or {}).get("phase")
            if len(phases) == jobs and all(p in FINAL for p in phases.values()):
                break
            await asyncio.sleep(0.5)
        elapsed = time.monotonic() - began
        starts = Counter(Path(line).parent.name for line in
                         (count.read_text().splitlines() if count.exists() else []))
        lost = jobs - sum(1 for p in phases.values() if p is not None)
        twice = sum(1 for uid in uids.values() if starts[uid] > 1)
        unfinished = sum(1 for p in phases.values() if p not in FINAL)
        outcome = Counter(phases.values())
        print(f"jobs: {jobs}, operator SIGKILLs: {kills}, seed: {seed}, "
              f"runner: {'cwltool' if use_cwltool else 'light'}, {elapsed:.0f} s in all")
        print(f"final phases: {dict(outcome)}")
        print(f"jobs lost: {lost}")
        print(f"jobs submitted twice: {twice}")
        print(f"jobs not terminal: {unfinished}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--kills", type=int, default=10)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--cwltool", action="store_true", help="run the real cwltool")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="cerise-chaos-") as work:
        asyncio.run(run(args.jobs, args.kills, args.seed, args.cwltool, Path(work)))


if __name__ == "__main__":
    main()
