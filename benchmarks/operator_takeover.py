"""Operator replicas: how evenly they share resources out, and how fast they take over.

Starts its own control plane, eight local ComputeResources and operator replicas (real
`kopf run` processes, the default Lease timings unless `--duration` etc. say otherwise),
then prints:

1. the spread: resources per replica with 2 replicas, then after a 3rd joins (and how
   long the rebalancing took);
2. `--runs` takeovers: with `--jobs` jobs in flight over the eight resources, the replica
   holding the most resources is killed with SIGKILL; for each resource it held, the
   takeover time is from its last renewal of the Lease (as this script saw the Lease
   change) to the Lease taken by another replica, and to that replica's first write on one
   of this run's jobs of the resource (its fence); then every job's end is awaited and
   counted: jobs lost, submitted twice, run twice.
   The killed replica is started again (a new identity) before the next run.

The runner is a small counting script (as in benchmarks/chaos.py) that sleeps a few
seconds, so that jobs are in flight at the kill.

    CERISE_BIN_DIR=... .venv/bin/python benchmarks/operator_takeover.py [--runs 5] [--jobs 100]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lightkube import AsyncClient
from lightkube.config.kubeconfig import KubeConfig
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.coordination_v1 import Lease

from cerise.devenv import controlplane, specialisations
from cerise.devenv.controlplane import ControlPlane
from cerise.devenv.operator import OperatorProcess
from cerise.kube.jobs import WorkflowJob

FINAL = {"Success", "Cancelled", "PermanentFailure", "TemporaryFailure", "SystemError"}
RESOURCES = [f"r{i}" for i in range(8)]
WORKFLOW = json.dumps({
    "cwlVersion": "v1.2", "class": "Workflow", "inputs": {"delay": "int"}, "outputs": {},
    "steps": {"sleep": {"run": "cerise/test/sleep.cwl", "in": {"delay": "delay"}, "out": []}},
})
RUNNER = """#!/bin/bash
echo "$PWD" >> {count}
sleep $((3 + RANDOM % 8))
echo '{{}}'
echo 'Final process status is success' >&2
"""


class Cluster:
    """The control plane, the resources and the replicas."""

    def __init__(self, work: Path, plane: ControlPlane, client: AsyncClient,
                 timings: dict[str, str]) -> None:
        self.work, self.plane, self.client, self.timings = work, plane, client, timings
        self.replicas: dict[str, OperatorProcess] = {}

    def start(self, name: str) -> None:
        operator = OperatorProcess(
            kubeconfig=self.plane.kubeconfig, exchange_dir=self.work / "files",
            exchange_url="http://localhost:29593/files", log=self.work / f"{name}.log",
            extra_env={**self.timings, "CERISE_OPERATOR_IDENTITY": name})
        operator.start()
        self.replicas[name] = operator

    async def leases(self) -> dict[str, tuple[str, str, str]]:
        """Resource → (holder's replica name, renewTime, holder's identity)."""
        found: dict[str, tuple[str, str, str]] = {}
        async for lease in self.client.list(Lease, namespace="default",
                                            labels={"cerise.dev/lease": "compute-resource"}):
            assert lease.metadata is not None and lease.spec is not None
            subject = (lease.metadata.annotations or {})["cerise.dev/subject"]
            identity = lease.spec.holderIdentity or ""
            found[subject] = (identity.rsplit("-", 1)[0], str(lease.spec.renewTime), identity)
        return found

    async def spread(self) -> Counter[str]:
        return Counter(holder for holder, _, _ in (await self.leases()).values())

    async def settled(self, replicas: int, timeout: float = 120) -> float:
        """Seconds until every resource is held and the spread is even (no replica over
        ⌈8/replicas⌉) and unchanged for three seconds."""
        began = time.monotonic()
        share = -(-len(RESOURCES) // replicas)
        stable_since, last = None, None
        while time.monotonic() - began < timeout:
            leases = await self.leases()
            counts = Counter(holder for holder, _, _ in leases.values())
            even = (len(leases) == len(RESOURCES) and "" not in counts
                    and max(counts.values()) <= share)
            state = sorted(counts.items())
            if even and state == last:
                if stable_since is not None and time.monotonic() - stable_since >= 3:
                    return stable_since - began
            else:
                stable_since = time.monotonic() if even else None
            last = state
            await asyncio.sleep(0.2)
        raise TimeoutError(f"never settled: {await self.spread()}")


async def takeover(cluster: Cluster, run: int, jobs: int,
                   count: Path) -> tuple[list[float], list[float]]:
    """One kill with `jobs` in flight; for each resource the killed replica held, the time
    from its last renewal to the Lease taken, and to the new holder's first job write."""
    client = cluster.client
    on = {f"run{run}-{i}": RESOURCES[i % len(RESOURCES)] for i in range(jobs)}
    names = list(on)
    for name, resource in on.items():
        await client.create(WorkflowJob(
            metadata=ObjectMeta(name=name, namespace="default"),
            spec={"workflow": WORKFLOW, "input": {"delay": 0}, "computeResource": resource}))
    await until(client, names, lambda found: sum(
        1 for p in found.values() if p in {"Running", "Waiting"}) >= jobs // 4)
    leases = await cluster.leases()
    victim = Counter(holder for holder, _, _ in leases.values()).most_common(1)[0][0]
    held = sorted(r for r, (holder, _, _) in leases.items() if holder == victim)
    renewed: dict[str, float] = {r: time.monotonic() for r in held}
    renew_times = {r: leases[r][1] for r in held}
    cluster.replicas[victim].kill()
    leased: dict[str, float] = {}
    taken: dict[str, float] = {}
    deadline = time.monotonic() + 120
    while len(taken) < len(held) and time.monotonic() < deadline:
        leases = await cluster.leases()
        now = time.monotonic()
        for resource in held:  # a renewal in flight at the kill may still land
            holder, renew_time, _ = leases[resource]
            if holder == victim and renew_time != renew_times[resource]:
                renew_times[resource], renewed[resource] = renew_time, now
            elif holder not in (victim, "") and resource not in leased:
                leased[resource] = now
        async for job in client.list(WorkflowJob, namespace="default"):
            body: dict[str, Any] = job.to_dict()  # type: ignore[no-untyped-call]
            resource = body["spec"]["computeResource"]
            fence = (body.get("status") or {}).get("fence") or {}
            if body["metadata"]["name"] in on and resource in leased and \
                    resource not in taken and fence.get("holder") == leases[resource][2]:
                taken[resource] = now
        await asyncio.sleep(0.1)
    final = await until(client, names, lambda found: all(p in FINAL for p in found.values()))
    uids = await job_uids(client, names)
    starts = Counter(Path(line).parent.name
                     for line in (await asyncio.to_thread(count.read_text)).splitlines())
    submitted = await asyncio.to_thread(lambda: {
        name: submissions(cluster.work, on[name], uid) for name, uid in uids.items()})
    print(f"run {run + 1}: killed {victim} holding {len(held)} resources; "
          f"final {dict(Counter(final.values()))}; "
          f"lost {sum(1 for p in final.values() if p is None)}, "
          f"submitted twice {sum(1 for n in submitted.values() if n > 1)}, "
          f"run twice {sum(1 for uid in uids.values() if starts[uid] > 1)}")
    cluster.start(victim)
    return ([leased[r] - renewed[r] for r in held if r in leased],
            [taken[r] - renewed[r] for r in held if r in taken])


def submissions(work: Path, resource: str, uid: str) -> int:
    path = work / resource / "jobs" / uid / "remote_id"
    return len(path.read_text().splitlines()) if path.exists() else 0


async def until(client: AsyncClient, names: list[str],
                holds: Callable[[dict[str, str | None]], bool]) -> dict[str, str | None]:
    """The jobs' phases, polled until `holds` says yes."""
    while True:
        found = await phases(client, names)
        if holds(found):
            return found
        await asyncio.sleep(0.2)


async def phases(client: AsyncClient, names: list[str]) -> dict[str, str | None]:
    wanted = set(names)
    found: dict[str, str | None] = dict.fromkeys(names)
    async for job in client.list(WorkflowJob, namespace="default"):
        assert job.metadata is not None
        if job.metadata.name in wanted:
            found[job.metadata.name] = (job.get("status") or {}).get("phase")
    return found


async def job_uids(client: AsyncClient, names: list[str]) -> dict[str, str]:
    wanted = set(names)
    return {job.metadata.name: job.metadata.uid
            async for job in client.list(WorkflowJob, namespace="default")
            if job.metadata is not None and job.metadata.name in wanted
            and job.metadata.uid is not None}


async def main(args: argparse.Namespace, work: Path) -> None:
    count = work / "runner-starts.txt"
    count.touch()
    runner = work / "runner.sh"
    runner.write_text(RUNNER.format(count=count))
    runner.chmod(0o755)
    plane = controlplane.start(work / "control-plane")
    timings = {key: str(value) for key, value in (
        ("CERISE_LEASE_DURATION", args.duration), ("CERISE_LEASE_RENEW_DEADLINE", args.renew),
        ("CERISE_LEASE_RETRY", args.retry)) if value}
    config = KubeConfig.from_file(str(plane.kubeconfig)).get(context_name="admin")
    client = AsyncClient(config=config)
    cluster = Cluster(work, plane, client, timings)
    try:
        for name in RESOURCES:
            plane.kubectl("apply", "-f", "-", stdin=json.dumps({
                "apiVersion": "cerise.dev/v1alpha1", "kind": "ComputeResource",
                "metadata": {"name": name, "namespace": "default"},
                "spec": {"refreshSeconds": 0.5,
                         "jobs": {"protocol": "local", "scheduler": "none",
                                  "cwlRunner": str(runner)},
                         "files": {"protocol": "local", "path": str(work / name)}}}))
        plane.kubectl("apply", "-n", "default", "-f", "-",
                      stdin=json.dumps(specialisations.example(RESOURCES)))
        cluster.start("a")
        cluster.start("b")
        await asyncio.to_thread(specialisations.wait_ready, plane, "default", "example")
        settle = await cluster.settled(2)
        print(f"8 resources over 2 replicas: {dict(sorted((await cluster.spread()).items()))} "
              f"(settled {settle:.1f} s after start)")
        cluster.start("c")
        settle = await cluster.settled(3)
        print(f"8 resources over 3 replicas: {dict(sorted((await cluster.spread()).items()))} "
              f"(rebalanced {settle:.1f} s after c started)")
        leased: list[float] = []
        written: list[float] = []
        for run in range(args.runs):
            lease_times, write_times = await takeover(cluster, run, args.jobs, count)
            leased += lease_times
            written += write_times
            await cluster.settled(3)
        for what, times in (("its Lease taken", leased),
                            ("the new holder's first write on one of its jobs", written)):
            print(f"takeover, last renewal → {what}, over {len(times)} resources in "
                  f"{args.runs} runs: p50 {statistics.median(times):.1f} s, "
                  f"min {min(times):.1f} s, max {max(times):.1f} s")
    finally:
        await client.close()
        for replica in cluster.replicas.values():
            replica.stop()
        plane.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--jobs", type=int, default=100)
    parser.add_argument("--duration", type=float, help="CERISE_LEASE_DURATION (default 15)")
    parser.add_argument("--renew", type=float, help="CERISE_LEASE_RENEW_DEADLINE (default 10)")
    parser.add_argument("--retry", type=float, help="CERISE_LEASE_RETRY (default 2)")
    arguments = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="cerise-takeover-") as directory:
        asyncio.run(main(arguments, Path(directory)))
