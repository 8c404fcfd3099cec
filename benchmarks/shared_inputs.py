"""One input shared by many jobs, staged with and without the input cache (run on demand;
not a test).

Starts the test sshd (`cerise.devenv.sshd`, so it needs root and tools/install-system.sh)
and, each round in a new remote directory, stages the same file into `--jobs` new jobs
at once over one shared connection, as the operator does:

* without the cache: every job sends the file;
* cache cold: a new cache (and local digests not yet known, so the file is hashed too):
  the file is sent once and linked into the other jobs;
* cache warm: more jobs once the file is cached: nothing is sent;
* sftp: OpenSSH's sftp putting the file once per job through one connection, as one would
  by hand.

Prints medians of the wall time and the bytes sent (counted on Cerise's upload path), and
the ratios to sftp measured in the same run.

    sudo .venv/bin/python benchmarks/shared_inputs.py [--jobs 20] [--size-mb 100] [--repeat 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shlex
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from cerise.devenv import sshd as devenv_sshd
from cerise.model import cwl
from cerise.model.exchange import Exchange
from cerise.remote import staging
from cerise.remote.jobscript import JobFiles
from cerise.remote.protocol import Progress
from cerise.remote.ssh import SshCredentials, SshTarget
from cerise.remote.ssh_remote import SshRemote
from cerise.remote.staging.hashes import HashMemo

URL = "http://localhost:29593/files"
WORKFLOW = {"cwlVersion": "v1.2", "class": "Workflow", "inputs": {"f": "File"},
            "outputs": {}, "steps": {"s": {"run": "bench/s.cwl", "in": {}, "out": []}}}
STEP = "cwlVersion: v1.2\nclass: CommandLineTool\nbaseCommand: 'true'\ninputs: []\noutputs: []\n"


class CountingRemote(SshRemote):
    """The SSH remote, counting the bytes its uploads send."""

    sent = 0

    async def upload(self, local: Path | bytes, remote: str, *, mode: int = 0o600,
                     progress: Progress | None = None) -> int:
        size = await super().upload(local, remote, mode=mode, progress=progress)
        self.sent += size
        return size


async def stage_jobs(remote: CountingRemote, exchange: Exchange, base: str, jobs: int,
                     cache: staging.InputCache | None, memo: HashMemo) -> tuple[float, int]:
    """Stage the shared file into `jobs` new jobs at once: seconds taken and bytes sent."""
    workflow = cwl.parse_workflow(json.dumps(WORKFLOW), installed_steps={"bench/s.cwl": STEP})
    value = {"f": {"class": "File", "location": f"{URL}/input/bench/shared.bin"}}
    references = cwl.check_inputs(workflow, value)
    plans = [(files, staging.plan(references, exchange, files))
             for files in (JobFiles(f"{base}/jobs/{i:03d}") for i in range(jobs))]
    sent_before = remote.sent
    started = time.perf_counter()
    await asyncio.gather(*(staging.stage_in(remote, files, plan.transfers, exchange,
                                            cache=cache, memo=memo) for files, plan in plans))
    return time.perf_counter() - started, remote.sent - sent_before


def sftp_puts(endpoint: devenv_sshd.SshEndpoint, scratch: Path, source: Path, target: str,
              jobs: int) -> float:
    """Seconds that one sftp session takes to put `source` into `jobs` directories."""
    known_hosts = scratch / "known_hosts"
    known_hosts.write_text(endpoint.known_hosts)
    q = shlex.quote
    batch = "".join(f"mkdir {q(f'{target}/{i:03d}')}\nput {q(str(source))} "
                    f"{q(f'{target}/{i:03d}/shared.bin')}\n" for i in range(jobs))
    started = time.perf_counter()
    subprocess.run(
        ["sftp", "-q", "-F", "/dev/null", "-i", str(endpoint.client_key), "-o", "BatchMode=yes",
         "-o", f"UserKnownHostsFile={known_hosts}", "-o", "StrictHostKeyChecking=yes",
         "-P", str(endpoint.port), "-b", "-", f"{endpoint.username}@{endpoint.host}"],
        input=batch, text=True, capture_output=True, check=True)
    return time.perf_counter() - started


async def one_round(endpoint: devenv_sshd.SshEndpoint, remote: CountingRemote,
                    exchange: Exchange, scratch: Path, jobs: int) -> dict[str, tuple[float, int]]:
    """Every configuration once, in fresh remote directories."""
    results: dict[str, tuple[float, int]] = {}
    base = (await remote.run("mktemp -d")).stdout.strip()
    try:
        results["without the cache"] = await stage_jobs(
            remote, exchange, f"{base}/plain", jobs, None, HashMemo())
        cache = staging.InputCache(f"{base}/cached", max_bytes=10 << 30)
        memo = HashMemo()
        results["cache cold"] = await stage_jobs(
            remote, exchange, f"{base}/cached", jobs, cache, memo)
        results["cache warm"] = await stage_jobs(
            remote, exchange, f"{base}/cached/more", jobs, cache, memo)
        await remote.run(f"mkdir {shlex.quote(base)}/sftp")
        seconds = await asyncio.to_thread(
            sftp_puts, endpoint, scratch, exchange.root / "input/bench/shared.bin",
            f"{base}/sftp", jobs)
        size = (exchange.root / "input/bench/shared.bin").stat().st_size
        results["sftp put per job"] = (seconds, size * jobs)
    finally:
        await remote.run(f"rm -rf {shlex.quote(base)}")
    return results


async def run(endpoint: devenv_sshd.SshEndpoint, scratch: Path, jobs: int, size_mb: int,
              repeat: int) -> None:
    exchange = Exchange(root=scratch / "exchange", url=URL)
    (exchange.root / "input/bench").mkdir(parents=True)
    with (exchange.root / "input/bench/shared.bin").open("wb") as out:
        for _ in range(size_mb):
            out.write(os.urandom(1 << 20))
    remote = CountingRemote(SshTarget(
        host=endpoint.host, port=endpoint.port, host_keys=(endpoint.host_key,),
        credentials=SshCredentials(endpoint.username,
                                   private_key=endpoint.client_key.read_text())))
    times: dict[str, list[float]] = {}
    sent: dict[str, int] = {}
    try:
        await remote.run("true")  # connected beforehand, as the operator is
        for _ in range(repeat):
            for name, (seconds, moved) in (
                    await one_round(endpoint, remote, exchange, scratch, jobs)).items():
                times.setdefault(name, []).append(seconds)
                sent[name] = moved
    finally:
        await remote.close()
    median = {name: statistics.median(values) for name, values in times.items()}
    print(f"{jobs} jobs sharing one {size_mb} MiB input, {repeat} rounds, medians "
          "(min to max):")
    for name, values in times.items():
        print(f"  {name:18} {median[name]:7.2f} s ({min(values):.2f} to {max(values):.2f})"
              f"  {sent[name] / (1 << 20):8.0f} MiB sent"
              f"  {median['sftp put per job'] / median[name]:6.1f}x as fast as sftp")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=20)
    parser.add_argument("--size-mb", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    server = devenv_sshd.start()
    try:
        with tempfile.TemporaryDirectory(prefix="cerise-bench-") as scratch:
            asyncio.run(run(server.endpoint, Path(scratch), args.jobs, args.size_mb,
                            args.repeat))
    finally:
        server.stop()


if __name__ == "__main__":
    main()
