"""The apiserver's speed: job reads under load, job submission, and the WebDAV exchange.

Starts its own control plane and the apiserver in single-user mode (no operator: the jobs
only need to exist), then prints:

* `POST /jobs` of `--submit` jobs back to back: jobs/s accepted and latency p50/p99;
* `GET /jobs/{id}` at `--rate` requests/s (open loop) for `--seconds`, with `--jobs` jobs
  in the store: latency p50/p99 (goal: p99 <= 50 ms at 200 requests/s with 1,000 jobs);
* a `--size-mb` PUT then GET through `/files`: MB/s of each against `cp` of the same file
  on the same disk, and the apiserver's peak RSS growth (goal: within 1.5x of `cp`,
  growth < 50 MB).

    CERISE_BIN_DIR=... .venv/bin/python benchmarks/rest_api.py [--jobs 1000] [--rate 200]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx

from cerise.devenv import controlplane
from cerise.devenv.apiserver import ApiserverProcess
from cerise.devenv.process import free_port

WORKFLOW = json.dumps({
    "cwlVersion": "v1.2", "class": "Workflow", "inputs": {}, "outputs": {},
    "steps": {"echo": {"run": "cerise/test/echo.cwl", "in": {"message": {"default": "hi"}},
                       "out": ["output"]}}})
CHUNK = 1 << 20


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def ms(value: float) -> str:
    return f"{value * 1000:.1f} ms"


async def submit(client: httpx.AsyncClient, count: int) -> list[str]:
    """POST `count` jobs one after another; print the rate and latencies."""
    latencies, ids = [], []
    began = time.perf_counter()
    for index in range(count):
        start = time.perf_counter()
        answer = await client.post("/jobs", json={"name": f"bench {index}",
                                                  "workflow": WORKFLOW, "input": {}})
        latencies.append(time.perf_counter() - start)
        answer.raise_for_status()
        ids.append(answer.json()["id"])
    elapsed = time.perf_counter() - began
    print(f"POST /jobs x{count} back to back: {count / elapsed:.1f} jobs/s, "
          f"p50 {ms(percentile(latencies, 0.5))}, p99 {ms(percentile(latencies, 0.99))}")
    return ids


async def fill(client: httpx.AsyncClient, count: int) -> list[str]:
    """Create `count` more jobs, a few at a time."""
    ids: list[str] = []
    for start in range(0, count, 20):
        answers = await asyncio.gather(*(
            client.post("/jobs", json={"workflow": WORKFLOW, "input": {}})
            for _ in range(min(20, count - start))))
        ids += [answer.json()["id"] for answer in answers]
    return ids


async def read_load(client: httpx.AsyncClient, ids: list[str], rate: float,
                    seconds: float) -> None:
    """GET jobs at a fixed rate (open loop: a slow answer does not slow the sender)."""
    latencies: list[float] = []
    errors = 0

    async def one(job_id: str) -> None:
        nonlocal errors
        start = time.perf_counter()
        answer = await client.get(f"/jobs/{job_id}")
        latencies.append(time.perf_counter() - start)
        errors += answer.status_code != 200

    tasks = []
    began = time.perf_counter()
    for index in range(int(rate * seconds)):
        delay = began + index / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(ids[index % len(ids)])))
    await asyncio.gather(*tasks)
    achieved = len(latencies) / (time.perf_counter() - began)
    print(f"GET /jobs/{{id}} at {rate:.0f}/s for {seconds:.0f} s with {len(ids)} jobs: "
          f"{achieved:.0f}/s achieved, p50 {ms(percentile(latencies, 0.5))}, "
          f"p99 {ms(percentile(latencies, 0.99))}, max {ms(max(latencies))}, "
          f"errors {errors}")


def peak_rss_reset(pid: int) -> None:
    Path(f"/proc/{pid}/clear_refs").write_text("5")


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def timed(argv: list[str]) -> float:
    """Seconds a command takes."""
    started = time.perf_counter()
    subprocess.run(argv, check=True)
    return time.perf_counter() - started


async def exchange(url: str, pid: int, size_mb: int, work: Path) -> None:
    """PUT and GET one large file; compare with cp on the same disk."""
    source = work / "big.bin"
    with source.open("wb") as out:
        block = os.urandom(CHUNK)
        for _ in range(size_mb):
            out.write(block)
    started = time.perf_counter()
    shutil.copyfile(source, work / "copy.bin")
    cp_seconds = time.perf_counter() - started
    (work / "copy.bin").unlink()
    before = rss_mb(pid)
    peak_rss_reset(pid)

    async def chunks() -> AsyncIterator[bytes]:
        with source.open("rb") as handle:
            while data := handle.read(CHUNK):
                yield data

    async with httpx.AsyncClient(base_url=url, timeout=600) as client:
        started = time.perf_counter()
        answer = await client.put("/files/input/bench/big.bin", content=chunks())
        put_seconds = time.perf_counter() - started
        answer.raise_for_status()
        started = time.perf_counter()
        received = 0
        async with client.stream("GET", "/files/input/bench/big.bin") as response:
            async for data in response.aiter_bytes(CHUNK):
                received += len(data)
        get_seconds = time.perf_counter() - started
    assert received == size_mb * CHUNK, received
    curl_put = timed(["curl", "-sf", "-T", str(source), f"{url}/files/input/bench/curl.bin"])
    curl_get = timed(["curl", "-sf", "-o", str(work / "back.bin"),
                      f"{url}/files/input/bench/curl.bin"])
    peak = peak_rss_mb(pid)
    print(f"cp {size_mb} MB: {size_mb / cp_seconds:.0f} MB/s")
    print(f"PUT {size_mb} MB: {size_mb / put_seconds:.0f} MB/s "
          f"({cp_seconds / put_seconds:.2f}x cp's speed; {put_seconds / cp_seconds:.2f}x its time)")
    print(f"GET {size_mb} MB: {size_mb / get_seconds:.0f} MB/s "
          f"({get_seconds / cp_seconds:.2f}x cp's time)")
    print(f"curl PUT {size_mb} MB: {size_mb / curl_put:.0f} MB/s "
          f"({curl_put / cp_seconds:.2f}x cp's time); curl GET: {size_mb / curl_get:.0f} MB/s "
          f"({curl_get / cp_seconds:.2f}x cp's time)")
    print(f"apiserver RSS {before:.0f} MB before, peak {peak:.0f} MB during: "
          f"growth {peak - before:.1f} MB")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--submit", type=int, default=200)
    parser.add_argument("--rate", type=float, default=200)
    parser.add_argument("--seconds", type=float, default=15)
    parser.add_argument("--size-mb", type=int, default=1024)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="cerise-rest-bench-") as scratch:
        work = Path(scratch)
        plane = controlplane.start(work / "control-plane")
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
            api.start()
            async with httpx.AsyncClient(base_url=api.url, timeout=60) as client:
                for _ in range(100):  # the resource must reach the apiserver's cache
                    info = (await client.get("/ga4gh/wes/v1/service-info")).json()
                    if info["default_workflow_engine_parameters"][0]["default_value"]:
                        break
                    await asyncio.sleep(0.1)
                ids = await submit(client, args.submit)
                ids += await fill(client, max(0, args.jobs - len(ids)))
                await read_load(client, ids, args.rate, args.seconds)
            assert api.daemon is not None
            await exchange(api.url, api.daemon.pid, args.size_mb, work)
        finally:
            api.stop()
            plane.stop()


if __name__ == "__main__":
    asyncio.run(main())
