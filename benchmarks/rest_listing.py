"""Job listings with many jobs: what each costs, and how long they stall other requests.

Starts its own control plane and the apiserver in single-user mode (no operator), creates
`--jobs` WorkflowJobs straight through the Kubernetes API, then, for each listing
(`GET /jobs`, a WES page, WES service-info, the dashboard's job table of the newest 100 and
of all), sends it `--repeat` times one after another while a probe sends `GET /jobs/{id}`
every 20 ms. It prints the listing's p50 latency and the probe's p50/p99/max: a listing
that blocks the event loop shows up as probe latency.

    CERISE_BIN_DIR=... .venv/bin/python benchmarks/rest_listing.py [--jobs 10000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from pathlib import Path

import httpx
from lightkube import AsyncClient
from lightkube.config.kubeconfig import KubeConfig
from lightkube.models.meta_v1 import ObjectMeta
from rest_api import ms, percentile

from cerise.devenv import controlplane
from cerise.devenv.apiserver import ApiserverProcess
from cerise.devenv.process import free_port
from cerise.kube.jobs import WorkflowJob

LISTINGS = {
    "GET /jobs (all)": "/jobs",
    "GET WES /runs (page of 100)": "/ga4gh/wes/v1/runs",
    "GET WES /service-info": "/ga4gh/wes/v1/service-info",
    "GET dashboard job table": "/ui/fragments/jobs",
    "GET dashboard job table, all": "/ui/fragments/jobs?all=1",
}
WORKFLOW = json.dumps({
    "cwlVersion": "v1.2", "class": "Workflow", "inputs": {}, "outputs": {},
    "steps": {"echo": {"run": "cerise/test/echo.cwl", "in": {"message": {"default": "hi"}},
                       "out": ["output"]}}})


async def create_jobs(kubeconfig: Path, count: int) -> None:
    """Create `count` jobs in namespace default, 32 at a time."""
    config = KubeConfig.from_file(str(kubeconfig)).get()
    client = AsyncClient(config=config)
    gate = asyncio.Semaphore(32)

    async def one(index: int) -> None:
        async with gate:
            await client.create(WorkflowJob(
                metadata=ObjectMeta(name=f"bench-{index:05d}", namespace="default"),
                spec={"name": f"bench job {index}", "workflow": WORKFLOW,
                      "input": {"message": f"hello {index}"}, "computeResource": "local"}))

    try:
        await asyncio.gather(*(one(index) for index in range(count)))
    finally:
        await client.close()


async def measure(client: httpx.AsyncClient, label: str, path: str, repeat: int) -> None:
    """Send the listing `repeat` times while probing single-job reads."""
    probes: list[float] = []
    done = asyncio.Event()

    async def probe() -> None:
        while not done.is_set():
            start = time.perf_counter()
            answer = await client.get("/jobs/bench-00000")
            probes.append(time.perf_counter() - start)
            answer.raise_for_status()
            await asyncio.sleep(0.02)

    prober = asyncio.create_task(probe())
    took = []
    for _ in range(repeat):
        start = time.perf_counter()
        answer = await client.get(path)
        took.append(time.perf_counter() - start)
        answer.raise_for_status()
    done.set()
    await prober
    print(f"{label:32} p50 {ms(percentile(took, 0.5)):>10} ({len(answer.content) >> 10} KiB); "
          f"probe p50 {ms(percentile(probes, 0.5))}, p99 {ms(percentile(probes, 0.99))}, "
          f"max {ms(max(probes))}", flush=True)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=10)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="cerise-listing-bench-") as scratch:
        work = Path(scratch)
        plane = controlplane.start(work / "control-plane", controller_manager=False)
        port = free_port()
        api = ApiserverProcess(kubeconfig=plane.kubeconfig, exchange_dir=work / "files",
                               exchange_url=f"http://localhost:{port}/files", port=port,
                               log=work / "apiserver.log")
        try:
            plane.kubectl("apply", "-f", "-", stdin=json.dumps({
                "apiVersion": "cerise.dev/v1alpha1", "kind": "ComputeResource",
                "metadata": {"name": "local", "namespace": "default"},
                "spec": {"jobs": {"protocol": "local", "scheduler": "none"},
                         "files": {"protocol": "local", "path": str(work / "resource")}}}))
            started = time.perf_counter()
            await create_jobs(plane.kubeconfig, args.jobs)
            print(f"created {args.jobs} jobs in {time.perf_counter() - started:.0f} s")
            api.start(timeout=120)  # it answers once its caches hold every job
            async with httpx.AsyncClient(base_url=api.url, timeout=120) as client:
                for label, path in LISTINGS.items():
                    await measure(client, label, path, args.repeat)
        finally:
            api.stop()
            plane.stop()


if __name__ == "__main__":
    asyncio.run(main())
