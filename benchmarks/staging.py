"""Staging throughput against OpenSSH on the same loopback link (run on demand; not a test).

Starts the test sshd (`cerise.devenv.sshd`, so it needs root and tools/install-system.sh)
and compares, round after round:

* one large file in and out: `staging.stage_in` / `stage_out` vs `sftp` put / get, each
  pair run back to back, in turns (Cerise first in odd rounds, sftp first in even ones);
  goal: a median ratio of throughput of at least 1.0x sftp's and no round below 0.8x.
  Also shown: the ratio to sftp forced to AES-GCM, and stage_in through an input cache
  (`--cache`: a new cache and a new digest memo each round, as for a file the operator
  has not seen before: hashing both sides included);
* a directory of many small files in and out: `stage_in` / `stage_out` of a Directory vs
  `scp -r` (goal: at most 1.5x scp's time);
* then, once, a staging of one 1 GiB file (--cut-mb) in and then out, each interrupted at
  about half by restarting sshd (every session ends) and then run again: the bytes sent
  in total, which without resuming would be about 1.5 times the file.

Every timed transfer starts in the same state: dirty pages written out first (`sync`,
untimed), so that neither side pays for writing back the other's data; with --cold the
page cache is dropped too (both sides then read their source from disk). The machine's
load average is printed before, after and with every round, and each round's ratios;
warnings (e.g. an `ssh` child that failed, which asyncssh carried on) as they come.

By default both sides are connected before the clock starts, as the operator is (one
connection per compute resource): Cerise reuses one `SshRemote` (whose `ssh` children
share a connection of their own, which a first round, not counted, opens), and the
OpenSSH clients go through a ControlMaster connection. With --fresh every run connects
anew on both sides, so each time includes an SSH handshake. Every run goes to a new job
directory, so nothing is skipped as already there. Both sides use their default ciphers (OpenSSH:
chacha20-poly1305; Cerise prefers AES-GCM). A round disturbed by a connection failure
(e.g. another test killing the test user's sessions) is repeated.

    sudo .venv/bin/python benchmarks/staging.py [--size-mb 512] [--files 1000] [--repeat 7]
        [--fresh] [--cold] [--cache] [--cut-mb 1024]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import shlex
import shutil
import statistics
import subprocess
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from cerise.devenv import sshd as devenv_sshd
from cerise.model import cwl
from cerise.model.exchange import Exchange
from cerise.remote import staging
from cerise.remote.failures import RemoteUnavailable
from cerise.remote.jobscript import JobFiles
from cerise.remote.protocol import DEFAULT_TIMEOUT, BytesResult, CommandResult, Progress
from cerise.remote.ssh import SshCredentials, SshTarget
from cerise.remote.ssh_remote import SshRemote
from cerise.remote.staging import InputCache
from cerise.remote.staging.hashes import MEMO, HashMemo

URL = "http://localhost:29593/files"
WORKFLOW = {
    "cwlVersion": "v1.2",
    "class": "Workflow",
    "inputs": {"f": "File?", "d": "Directory?"},
    "outputs": {},
    "steps": {"s": {"run": "bench/s.cwl", "in": {}, "out": []}},
}
STEP = "cwlVersion: v1.2\nclass: CommandLineTool\nbaseCommand: 'true'\ninputs: []\noutputs: []\n"


class Bench:
    """The sshd endpoint, a local exchange with the test data, and both sides' connections."""

    def __init__(self, endpoint: devenv_sshd.SshEndpoint, scratch: Path, fresh: bool,
                 cold: bool = False) -> None:
        self.endpoint = endpoint
        self.exchange = Exchange(root=scratch / "exchange", url=URL)
        self.inputs = self.exchange.root / "input" / "bench"
        known_hosts = scratch / "known_hosts"
        known_hosts.write_text(endpoint.known_hosts)
        self.ssh_options = [
            "-F", "/dev/null", "-i", str(endpoint.client_key), "-o", "BatchMode=yes",
            "-o", f"UserKnownHostsFile={known_hosts}", "-o", "StrictHostKeyChecking=yes",
        ]
        if not fresh:
            self.ssh_options += ["-o", f"ControlPath={scratch / 'control'}"]
        self.scratch = scratch
        self.fresh = fresh
        self.cold = cold
        self.shared: SshRemote | None = None

    def new_remote(self) -> SshRemote:
        endpoint = self.endpoint
        return SshRemote(SshTarget(
            host=endpoint.host, port=endpoint.port, host_keys=(endpoint.host_key,),
            credentials=SshCredentials(
                endpoint.username, private_key=endpoint.client_key.read_text())))

    @contextlib.asynccontextmanager
    async def remote(self) -> AsyncIterator[SshRemote]:
        """A connected remote: the shared one, or (--fresh) a new one."""
        if not self.fresh:
            if self.shared is None:
                self.shared = self.new_remote()
                await self.shared.run("true")
            yield self.shared
            return
        remote = self.new_remote()
        try:
            await remote.run("true")
            yield remote
        finally:
            await remote.close()

    def start_master(self) -> None:
        """Start OpenSSH's shared connection, unless --fresh or it is up."""
        if not self.fresh and not self.ssh(["-O", "check", self.login()]):
            self.ssh(["-M", "-N", "-f", "-o", "ControlPersist=yes", self.login()])

    async def close(self) -> None:
        if not self.fresh:
            self.ssh(["-O", "exit", self.login()])
        if self.shared is not None:
            await self.shared.close()

    def login(self) -> str:
        return f"{self.endpoint.username}@{self.endpoint.host}"

    def ssh(self, args: list[str]) -> bool:
        port = ["-p", str(self.endpoint.port)]
        command = ["ssh", "-q", *self.ssh_options, *port, *args]
        return subprocess.run(command, capture_output=True).returncode == 0

    def openssh(self, program: str, *args: str, stdin: str | None = None) -> None:
        port = ["-P", str(self.endpoint.port)]
        result = subprocess.run(
            [program, "-q", *self.ssh_options, *port, *args], input=stdin, text=True,
            capture_output=True,
        )
        if result.returncode != 0:
            raise RuntimeError(f"{program} failed ({result.returncode}): {result.stderr.strip()}")

    def target(self, path: str) -> str:
        return f"{self.endpoint.username}@{self.endpoint.host}:{path}"

    def settle(self) -> None:
        """Before a timed transfer: dirty pages written out, and with --cold the page cache
        dropped, so that every transfer starts in the same state."""
        os.sync()
        if self.cold:
            Path("/proc/sys/vm/drop_caches").write_text("3\n")


def make_data(bench: Bench, size_mb: int, count: int) -> None:
    bench.inputs.mkdir(parents=True)
    write_random(bench.inputs / "big.bin", size_mb)
    small = bench.inputs / "small"
    small.mkdir()
    for index in range(count):
        (small / f"file{index:05d}.txt").write_bytes(os.urandom(1024 + (index * 37) % 7168))


def write_random(path: Path, size_mb: int) -> None:
    with path.open("wb") as out:
        for _ in range(size_mb):
            out.write(os.urandom(1 << 20))


async def remote_command(bench: Bench, script: str) -> str:
    async with bench.remote() as remote:
        return (await remote.run(script)).stdout.strip()


async def cerise_in(bench: Bench, which: str, base: str, name: str = "big.bin", *,
                    cache: InputCache | None = None) -> tuple[JobFiles, float]:
    """Stage one input (`f` the large file `name` or `d` the directory) into a new job;
    through `cache` with a new digest memo, if given."""
    files = JobFiles(f"{base}/jobs/{uuid.uuid4()}")
    async with bench.remote() as remote:
        await asyncio.to_thread(bench.settle)
        started = time.perf_counter()
        await stage_in(bench, remote, files, which, name, cache=cache,
                       memo=HashMemo() if cache is not None else None)
        return files, time.perf_counter() - started


async def stage_in(bench: Bench, remote: Any, files: JobFiles, which: str, name: str,
                   progress: Callable[[int, int], None] | None = None, *,
                   cache: InputCache | None = None, memo: HashMemo | None = None) -> int:
    """Stage one input into `files` and write the output object that `cerise_out` publishes;
    the bytes sent."""
    value = (
        {"class": "File", "location": f"{URL}/input/bench/{name}"}
        if which == "f"
        else {"class": "Directory", "location": f"{URL}/input/bench/small"}
    )
    workflow = cwl.parse_workflow(json.dumps(WORKFLOW), installed_steps={"bench/s.cwl": STEP})
    references = cwl.check_inputs(workflow, {which: value})
    plan = staging.plan(references, bench.exchange, files)
    report = await staging.stage_in(remote, files, plan.transfers, bench.exchange,
                                    progress=progress, cache=cache, memo=memo or MEMO)
    moved = plan.apply({which: value}, cwl.Origin.INPUT_OBJECT)
    await remote.write(files.stdout, json.dumps(moved).encode())
    return report.bytes_sent


async def cerise_out(bench: Bench, files: JobFiles) -> float:
    async with bench.remote() as remote:
        await asyncio.to_thread(bench.settle)
        started = time.perf_counter()
        await staging.stage_out(remote, files, bench.exchange, uuid.uuid4().hex)
        return time.perf_counter() - started


def timed(bench: Bench, program: str, *args: str, stdin: str | None = None) -> float:
    """Seconds that an OpenSSH client takes, connection included."""
    bench.settle()
    started = time.perf_counter()
    bench.openssh(program, *args, stdin=stdin)
    return time.perf_counter() - started


async def one_round(bench: Bench, note: Callable[[str, float], None], *, sftp_first: bool,
                    cache: bool) -> None:
    """Every measurement once, in a fresh remote directory; each large transfer right
    next to its sftp counterpart, sftp first if `sftp_first`."""
    big = bench.inputs / "big.bin"
    back = bench.scratch / "back"
    bench.start_master()  # again, in case something killed it
    remote_dir = await remote_command(bench, "mktemp -d")
    try:
        back.mkdir()
        put = f"put {shlex.quote(str(big))} {shlex.quote(remote_dir + '/big.bin')}\n"
        get = f"get {shlex.quote(remote_dir + '/big.bin')} {shlex.quote(str(back / 'b'))}\n"
        batch = ["-b", "-", bench.target("")]
        files = JobFiles("")

        async def ours_in() -> None:
            nonlocal files
            files, elapsed = await cerise_in(bench, "f", remote_dir)
            note("cerise in large", elapsed)

        async def theirs_in() -> None:
            note("sftp put", await asyncio.to_thread(timed, bench, "sftp", *batch, stdin=put))

        async def ours_out() -> None:
            note("cerise out large", await cerise_out(bench, files))

        async def theirs_out() -> None:
            note("sftp get", await asyncio.to_thread(timed, bench, "sftp", *batch, stdin=get))

        for pair in ((ours_in, theirs_in), (ours_out, theirs_out)):
            for step in reversed(pair) if sftp_first else pair:
                await step()
        gcm = ["-c", "aes128-gcm@openssh.com", *batch]
        note("sftp put aes128-gcm", timed(bench, "sftp", *gcm, stdin=put))
        note("sftp get aes128-gcm", timed(bench, "sftp", *gcm, stdin=get))
        if cache:
            store = InputCache(f"{remote_dir}/cache-{uuid.uuid4().hex}", 10 << 30)
            _, elapsed = await cerise_in(bench, "f", remote_dir, cache=store)
            note("cerise in large cached", elapsed)

        files, elapsed = await cerise_in(bench, "d", remote_dir)
        note("cerise in small", elapsed)
        note("cerise out small", await cerise_out(bench, files))
        small = str(bench.inputs / "small")
        note("scp -r in", timed(bench, "scp", "-r", small, bench.target(f"{remote_dir}/s")))
        note("scp -r out", timed(bench, "scp", "-r", bench.target(f"{remote_dir}/s"), str(back)))
    finally:
        shutil.rmtree(back, ignore_errors=True)
        shutil.rmtree(bench.exchange.root / "output", ignore_errors=True)
        with contextlib.suppress(OSError):
            await remote_command(bench, f"rm -rf {shlex.quote(remote_dir)}")


class Counting:
    """A remote that adds up the bytes that its uploads and downloads say they moved."""

    def __init__(self, inner: SshRemote) -> None:
        self.inner = inner
        self.moved = 0

    @property
    def username(self) -> str:
        return self.inner.username

    async def run(self, script: str, *, timeout: float = DEFAULT_TIMEOUT) -> CommandResult:
        return await self.inner.run(script, timeout=timeout)

    async def run_bytes(self, script: str, *, timeout: float = DEFAULT_TIMEOUT) -> BytesResult:
        return await self.inner.run_bytes(script, timeout=timeout)

    async def read(self, remote: str, offset: int = 0, limit: int = 1 << 20) -> bytes:
        return await self.inner.read(remote, offset, limit)

    async def upload(self, local: Path | bytes, remote: str, *, mode: int = 0o600,
                     progress: Progress | None = None) -> int:
        sent = await self.inner.upload(local, remote, mode=mode, progress=progress)
        self.moved += sent
        return sent

    async def download(self, remote: str, local: Path, *,
                       progress: Progress | None = None) -> int:
        received = await self.inner.download(remote, local, progress=progress)
        self.moved += received
        return received

    async def write(self, remote: str, data: bytes, mode: int = 0o600) -> None:
        await self.inner.write(remote, data, mode)

    async def close(self) -> None:
        await self.inner.close()


class Restart:
    """A staging progress callback that restarts sshd once half of the bytes are done."""

    def __init__(self, server: devenv_sshd.Sshd) -> None:
        self.server = server
        self.done = 0
        self.restarted: asyncio.Task[None] | None = None

    def __call__(self, done: int, total: int) -> None:
        self.done = done
        if self.restarted is None and done >= total // 2:
            self.restarted = asyncio.ensure_future(asyncio.to_thread(self._restart))

    def _restart(self) -> None:
        self.server.go_down()
        self.server.come_back()


async def cut_in_half(bench: Bench, server: devenv_sshd.Sshd, size_mb: int) -> None:
    """Stage a `size_mb` file in, then out, each interrupted at about half and run again."""
    name = "cut.bin"
    await asyncio.to_thread(write_random, bench.inputs / name, size_mb)
    remote = Counting(bench.new_remote())
    remote_dir = (await remote.run("mktemp -d")).stdout.strip()
    files = JobFiles(f"{remote_dir}/jobs/{uuid.uuid4()}")
    size = size_mb << 20
    print(f"a {size_mb} MiB file, interrupted at about half by restarting sshd:")
    try:
        for way in ("in", "out"):
            restart = Restart(server)
            try:
                if way == "in":
                    await stage_in(bench, remote, files, "f", name, progress=restart)
                else:
                    await staging.stage_out(remote, files, bench.exchange, "cut",
                                            progress=restart)
                raise RuntimeError("the transfer ended before sshd went down")
            except (RemoteUnavailable, OSError):
                pass
            if restart.restarted is not None:
                await restart.restarted
            before, remote.moved = restart.done, 0
            if way == "in":
                await stage_in(bench, remote, files, "f", name)
            else:
                await staging.stage_out(remote, files, bench.exchange, "cut")
            total = before + remote.moved
            print(f"  {way:3}  {before / 2**20:7.1f} MiB before the cut + "
                  f"{remote.moved / 2**20:7.1f} MiB after = {total / 2**20:7.1f} MiB sent "
                  f"in total ({total / size:.2f}x the file; starting again: about "
                  f"{(before + size) / size:.2f}x)")
    finally:
        with contextlib.suppress(OSError):
            await remote.run(f"rm -rf {shlex.quote(remote_dir)}")
        await remote.close()



LARGE = (("in", "cerise in large", "sftp put"), ("out", "cerise out large", "sftp get"))
"""The large transfers' goals: ours, and sftp's counterpart (ratio: its time over ours)."""


def load() -> str:
    """The machine's load averages (1, 5 and 15 minutes)."""
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


async def run(bench: Bench, size_mb: int, count: int, repeat: int, cache: bool) -> None:
    results: dict[str, list[float]] = {}
    loads: list[str] = []
    disturbed = 0
    print(f"load average before: {load()}")
    await one_round(bench, lambda name, seconds: None, sftp_first=False, cache=cache)
    print(f"a first round, not counted: both sides' connections are up (load {load()})")
    while len(loads) < repeat:
        measured: dict[str, float] = {}
        before = load()
        try:
            await one_round(bench, measured.__setitem__, sftp_first=len(loads) % 2 == 1,
                            cache=cache)
        except (OSError, RuntimeError) as error:  # e.g. another test killed the user's sessions
            disturbed += 1
            print(f"round disturbed, repeated: {error}")
            if disturbed > repeat:
                raise
            continue
        loads.append(before)
        for name, seconds in measured.items():
            results.setdefault(name, []).append(seconds)
        pairs = [(label, ours, theirs) for label, ours, theirs in LARGE]
        if cache:
            pairs.append(("in cached", "cerise in large cached", "sftp put"))
        shown = ", ".join(f"{label} {measured[theirs] / measured[ours]:.2f}x"
                          for label, ours, theirs in pairs)
        print(f"round {len(loads)}/{repeat} (load {before}): sftp's time over ours: {shown}",
              flush=True)
    print(f"load average after: {load()}")

    median = {name: statistics.median(times) for name, times in results.items()}
    mode = "each run connects anew" if bench.fresh else "connections open beforehand"
    state = "page cache dropped" if bench.cold else "page cache warm"
    print(f"{repeat} runs each ({mode}; {state}), medians (min to max); large file "
          f"{size_mb} MiB, {count} small files of 1 to 8 KiB")
    for name, times in results.items():
        large = "large" in name or "sftp" in name
        rate = f"  {size_mb / median[name]:7.0f} MiB/s" if large else ""
        print(f"  {name:24} {median[name]:7.3f} s ({min(times):.3f} to {max(times):.3f}){rate}")
    print("goals (each round's ratio of sftp's time to ours: the median, the slowest, "
          "every round):")
    for label, ours, theirs in LARGE:
        ratios = per_round(results[theirs], results[ours])
        met = statistics.median(ratios) >= 1.0 and min(ratios) >= 0.8
        print(f"  large {label:3}  {describe(ratios)} (goal: median >= 1.0, slowest >= 0.8): "
              f"{'met' if met else 'NOT met'}; against sftp with AES-GCM: "
              f"{describe(per_round(results[theirs + ' aes128-gcm'], results[ours]))}")
    if cache:
        print("  large in through the input cache: "
              f"{describe(per_round(results['sftp put'], results['cerise in large cached']))}")
    for label, ours, theirs in (("in", "cerise in small", "scp -r in"),
                                ("out", "cerise out small", "scp -r out")):
        ratio = median[ours] / median[theirs]
        print(f"  small {label:3}  {ratio:5.2f}x scp -r's time "
              f"[{describe(per_round(results[ours], results[theirs]))}] (goal <= 1.5): "
              f"{'met' if ratio <= 1.5 else 'NOT met'}")


def per_round(numerators: list[float], denominators: list[float]) -> list[float]:
    return [a / b for a, b in zip(numerators, denominators, strict=True)]


def describe(ratios: list[float]) -> str:
    """The median and the slowest (smallest) of the rounds' ratios, then each one."""
    rounds = " ".join(f"{ratio:.2f}" for ratio in ratios)
    return f"median {statistics.median(ratios):.2f}x, slowest {min(ratios):.2f}x ({rounds})"


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=int, default=512)
    parser.add_argument("--files", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--fresh", action="store_true", help="connect anew for every run")
    parser.add_argument("--cold", action="store_true",
                        help="drop the page cache before every timed transfer")
    parser.add_argument("--cache", action="store_true",
                        help="also stage the large file in through an input cache")
    parser.add_argument("--cut-mb", type=int, default=1024,
                        help="the file staged with an interruption (0: none)")
    args = parser.parse_args()
    # e.g. an ssh child that failed (another test killing the test user's sessions), which
    # asyncssh carried on: such a round is slow for a reason worth seeing
    logging.basicConfig(level=logging.WARNING, format="  %(levelname)s %(name)s: %(message)s")
    server = devenv_sshd.start()
    try:
        with tempfile.TemporaryDirectory(prefix="cerise-bench-") as scratch:
            bench = Bench(server.endpoint, Path(scratch), args.fresh, args.cold)
            make_data(bench, args.size_mb, args.files)
            try:
                if args.repeat:
                    await run(bench, args.size_mb, args.files, args.repeat, args.cache)
                if args.cut_mb:
                    await cut_in_half(bench, server, args.cut_mb)
            finally:
                await bench.close()
    finally:
        server.stop()


if __name__ == "__main__":
    asyncio.run(main())
