"""History at scale: the apiserver's reads with a large archive beside the live jobs.

Starts its own control plane, PostgreSQL and the apiserver in single-user mode with the
archive (no operator: the jobs only need to exist), writes `--archived` finished jobs
into the archive as archiving would (the records of `cerise.archive.records`, through
`cerise.archive.store`) and makes `--live` WorkflowJobs, then prints:

* `GET /jobs/{id}` of archived jobs at `--rate` requests/s (open loop) for `--seconds`:
  latency p50/p99 (goal: p99 <= 50 ms at 200 requests/s with 100,000 archived);
* WES `GET /runs` pages of 100 through every run, live and archived: p50/p99 of a page
  (goal: p99 <= 100 ms);
* `GET /jobs` of the original API (every job, streamed): its time, size and the
  apiserver's RSS growth meanwhile.

    CERISE_BIN_DIR=... .venv/bin/python benchmarks/history_scale.py [--archived 100000]
        [--live 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import tempfile
import time
import uuid
from pathlib import Path

import httpx
from rest_api import ms, peak_rss_mb, peak_rss_reset, percentile, read_load, rss_mb
from rest_listing import WORKFLOW, create_jobs

from cerise.archive.records import Record
from cerise.archive.store import Archive
from cerise.devenv import controlplane, postgres
from cerise.devenv.apiserver import ApiserverProcess
from cerise.devenv.process import free_port

NAMESPACE = "default"
BATCH = 1000


def archived_record(index: int, finished: datetime.datetime) -> Record:
    """An archived job as archiving writes it: its spec, final status and outputs."""
    name, uid = f"old-{index:06d}", str(uuid.uuid4())
    created = (finished - datetime.timedelta(minutes=5)).isoformat().replace("+00:00", "Z")
    ended = finished.isoformat().replace("+00:00", "Z")
    log_url = f"http://localhost/files/logs/{uid}.log"
    body = {
        "apiVersion": "cerise.dev/v1alpha1", "kind": "WorkflowJob",
        "metadata": {"name": name, "namespace": NAMESPACE, "uid": uid,
                     "creationTimestamp": created, "resourceVersion": str(index + 1),
                     "generation": 1, "annotations": {}},
        "spec": {"name": f"old job {index}", "workflow": WORKFLOW,
                 "input": {"message": f"hello {index}"}, "computeResource": "local"},
        "status": {"phase": "Success", "state": "Success", "message": "the workflow succeeded",
                   "finishedAt": ended, "workDir": f"/scratch/cerise/jobs/{uid}",
                   "output": {"output": {"class": "File", "location": f"{uid}/output.txt",
                                         "size": 6, "checksum": "sha1$" + "0" * 40}},
                   "conditions": [{"type": "Succeeded", "status": "True",
                                   "lastTransitionTime": ended, "reason": "Success",
                                   "message": "the workflow succeeded"}],
                   "logUrl": log_url}}
    return Record(uid=uid, namespace=NAMESPACE, name=name, resource="local", phase="Success",
                  created=created, finished_at=finished, log_url=log_url, body=body)


async def fill_archive(url: str, count: int) -> list[str]:
    """Archive `count` finished jobs; their ids (names)."""
    archive = Archive(url, timeout=30)
    await archive.open()
    start = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
    names = []
    try:
        for first in range(0, count, BATCH):
            records = [archived_record(index, start + datetime.timedelta(seconds=index))
                       for index in range(first, min(count, first + BATCH))]
            await archive.add(records)
            names += [record.name for record in records]
    finally:
        await archive.close()
    return names


async def wes_pages(client: httpx.AsyncClient) -> None:
    """Page through every WES run, 100 a page."""
    took: list[float] = []
    runs = 0
    token = ""
    while True:
        start = time.perf_counter()
        answer = await client.get("/ga4gh/wes/v1/runs",
                                  params={"page_size": 100, "page_token": token})
        took.append(time.perf_counter() - start)
        answer.raise_for_status()
        page = answer.json()
        runs += len(page["runs"])
        token = page.get("next_page_token") or ""
        if not token:
            break
    print(f"WES GET /runs, {len(took)} pages of 100 ({runs} runs): p50 "
          f"{ms(percentile(took, 0.5))}, p99 {ms(percentile(took, 0.99))}, "
          f"max {ms(max(took))}")


async def whole_listing(client: httpx.AsyncClient, pid: int) -> None:
    """`GET /jobs` of every job, streamed to the client."""
    before = rss_mb(pid)
    peak_rss_reset(pid)
    start = time.perf_counter()
    size = 0
    async with client.stream("GET", "/jobs") as answer:
        answer.raise_for_status()
        async for chunk in answer.aiter_bytes():
            size += len(chunk)
    took = time.perf_counter() - start
    print(f"GET /jobs (every job): {took:.1f} s, {size >> 20} MiB; apiserver RSS "
          f"{before:.0f} MB before, peak {peak_rss_mb(pid):.0f} MB meanwhile")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--archived", type=int, default=100_000)
    parser.add_argument("--live", type=int, default=1000)
    parser.add_argument("--rate", type=float, default=200)
    parser.add_argument("--seconds", type=float, default=15)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="cerise-history-bench-") as scratch:
        work = Path(scratch)
        plane = controlplane.start(work / "control-plane", controller_manager=False)
        database = postgres.start(work / "postgres")
        port = free_port()
        api = ApiserverProcess(kubeconfig=plane.kubeconfig, exchange_dir=work / "files",
                               exchange_url=f"http://localhost:{port}/files", port=port,
                               log=work / "apiserver.log",
                               extra_env={"CERISE_ARCHIVE_URL": database.url})
        try:
            plane.kubectl("apply", "-f", "-", stdin=json.dumps({
                "apiVersion": "cerise.dev/v1alpha1", "kind": "ComputeResource",
                "metadata": {"name": "local", "namespace": NAMESPACE},
                "spec": {"jobs": {"protocol": "local", "scheduler": "none"},
                         "files": {"protocol": "local", "path": str(work / "resource")}}}))
            started = time.perf_counter()
            names = await fill_archive(database.url, args.archived)
            print(f"archived {args.archived} jobs in {time.perf_counter() - started:.0f} s")
            started = time.perf_counter()
            await create_jobs(plane.kubeconfig, args.live)
            print(f"created {args.live} live jobs in {time.perf_counter() - started:.0f} s")
            api.start(timeout=120)
            assert api.daemon is not None
            async with httpx.AsyncClient(base_url=api.url, timeout=300) as client:
                (await client.get(f"/jobs/{names[0]}")).raise_for_status()  # archive reached
                await read_load(client, names[::max(1, len(names) // 5000)], args.rate,
                                args.seconds)
                await wes_pages(client)
                await whole_listing(client, api.daemon.pid)
        finally:
            api.stop()
            database.stop()
            plane.stop()


if __name__ == "__main__":
    asyncio.run(main())
