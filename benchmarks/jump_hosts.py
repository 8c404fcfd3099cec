"""Through one jump host: Cerise against `ssh -J` and `sftp -J` (run on demand; not a test).

Starts a bastion sshd and a cluster sshd that only the bastion reaches
(`cerise.devenv.sshd.start_behind_bastion`, so it needs root and tools/install-system.sh),
and compares, interleaved, each repeated (--repeat, default 7), medians reported:

* the SSH round trip of one command (`true`): Cerise on its shared connection (as the
  operator runs them) against `ssh -J` over an OpenSSH ControlMaster connection through
  the bastion (both connected beforehand; goal: at least 0.9x OpenSSH's speed); and each
  connecting anew: a new `SshRemote` against `ssh -J`, handshakes with both hosts included;
* a 512 MiB upload (--size-mb): `SshRemote.upload` (its OpenSSH `ssh` child through the
  same jump host) against `sftp -J` put (goal: at least 0.9x sftp's throughput).

    sudo .venv/bin/python benchmarks/jump_hosts.py [--size-mb 512] [--repeat 7]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shlex
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from cerise.devenv import sshd as devenv_sshd
from cerise.devenv.sshd import BastionAndCluster, SshEndpoint
from cerise.remote.ssh import SshCredentials, SshHop, SshTarget
from cerise.remote.ssh_remote import SshRemote

COMMANDS = 20
"""Round trips timed in a row per round; the time per command is reported."""


def target(servers: BastionAndCluster) -> SshTarget:
    """The cluster through the bastion, as a ComputeResource with `jumpHosts` would give."""

    def login(endpoint: SshEndpoint) -> SshCredentials:
        return SshCredentials(endpoint.username, private_key=endpoint.client_key.read_text())

    bastion, cluster = servers.bastion.endpoint, servers.cluster.endpoint
    return SshTarget(host=cluster.host, port=cluster.port, credentials=login(cluster),
                     host_keys=(cluster.host_key,),
                     jumps=(SshHop(bastion.host, bastion.port, login(bastion),
                                   (bastion.host_key,)),))


def openssh_config(servers: BastionAndCluster, scratch: Path) -> Path:
    """An ssh_config naming `bastion` and `cluster`, with their keys pinned."""
    bastion, cluster = servers.bastion.endpoint, servers.cluster.endpoint
    known_hosts = scratch / "known_hosts"
    known_hosts.write_text(f"bastion {bastion.host_key}\ncluster {cluster.host_key}\n")
    config = scratch / "ssh_config"
    config.write_text(
        f"Host bastion\n  HostName {bastion.host}\n  Port {bastion.port}\n"
        f"  User {bastion.username}\n  IdentityFile {bastion.client_key}\n"
        f"  HostKeyAlias bastion\n"
        f"Host cluster\n  HostName {cluster.host}\n  Port {cluster.port}\n"
        f"  User {cluster.username}\n  IdentityFile {cluster.client_key}\n"
        f"  HostKeyAlias cluster\n"
        f"Host *\n  BatchMode yes\n  IdentitiesOnly yes\n  StrictHostKeyChecking yes\n"
        f"  UserKnownHostsFile {known_hosts}\n  GlobalKnownHostsFile /dev/null\n"
        f"  CheckHostIP no\n  LogLevel ERROR\n")
    config.chmod(0o600)
    return config


def openssh(program: str, *args: str, stdin: str | None = None) -> float:
    """Run an OpenSSH client; the seconds it took."""
    started = time.monotonic()
    result = subprocess.run([program, *args], input=stdin, text=True, capture_output=True)
    took = time.monotonic() - started
    if result.returncode != 0:
        raise RuntimeError(f"{program} failed ({result.returncode}): {result.stderr.strip()}")
    return took


async def round_trips(remote: SshRemote) -> float:
    started = time.monotonic()
    for _ in range(COMMANDS):
        await remote.run("true")
    return (time.monotonic() - started) / COMMANDS


async def one_round(servers: BastionAndCluster, config: Path, shared: SshRemote,
                    source: Path, base: str) -> dict[str, float]:
    ssh = ["-F", str(config)]
    master = [*ssh, "-o", f"ControlPath={config.parent / 'control'}"]
    measured: dict[str, float] = {}
    measured["cerise round trip"] = await round_trips(shared)
    measured["ssh -J round trip"] = sum(
        openssh("ssh", *master, "-J", "bastion", "cluster", "true")
        for _ in range(COMMANDS)) / COMMANDS
    fresh = SshRemote(target(servers))
    started = time.monotonic()
    await fresh.run("true")
    measured["cerise connect+run"] = time.monotonic() - started
    await fresh.close()
    measured["ssh -J connect+run"] = openssh("ssh", *ssh, "-J", "bastion", "cluster", "true")
    started = time.monotonic()
    await shared.upload(source, f"{base}/cerise.bin")
    measured["cerise upload"] = time.monotonic() - started
    put = f"put {shlex.quote(str(source))} {shlex.quote(base + '/sftp.bin')}\n"
    measured["sftp -J put"] = openssh("sftp", "-q", *ssh, "-J", "bastion", "-b", "-",
                                      "cluster", stdin=put)
    result = await shared.run(f"rm -f {shlex.quote(base)}/*.bin")
    assert result.exit_status == 0, result.stderr
    return measured


async def run(servers: BastionAndCluster, scratch: Path, size_mb: int, repeat: int) -> None:
    config = openssh_config(servers, scratch)
    control = ["-F", str(config), "-o", f"ControlPath={scratch / 'control'}"]
    openssh("ssh", *control, "-J", "bastion", "-M", "-N", "-f", "-o", "ControlPersist=yes",
            "cluster")
    source = scratch / "large.bin"
    with source.open("wb") as out:
        for _ in range(size_mb):
            out.write(os.urandom(1 << 20))
    shared = SshRemote(target(servers))
    base = (await shared.run("mktemp -d")).stdout.strip()
    results: dict[str, list[float]] = {}
    try:
        for _ in range(repeat):
            for name, seconds in (await one_round(servers, config, shared, source,
                                                  base)).items():
                results.setdefault(name, []).append(seconds)
    finally:
        await shared.run(f"rm -rf {shlex.quote(base)}")
        await shared.close()
        await asyncio.to_thread(subprocess.run, ["ssh", *control, "-O", "exit", "cluster"],
                                capture_output=True)
    median = {name: statistics.median(times) for name, times in results.items()}
    print(f"{repeat} rounds through one jump host, medians (min to max); upload {size_mb} MiB; "
          f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    for name, times in results.items():
        rate = f"  {size_mb / median[name]:7.0f} MiB/s" if "up" in name or "put" in name else ""
        unit = 1000 if "round trip" in name or "connect" in name else 1
        print(f"  {name:20} {median[name] * unit:9.3f} {'ms' if unit > 1 else 's '} "
              f"({min(times) * unit:.3f} to {max(times) * unit:.3f}){rate}")
    print("ratios (OpenSSH's time / Cerise's: above 1 is faster than OpenSSH; goal >= 0.9):")
    for label, ours, theirs in (
        ("round trip, connected", "cerise round trip", "ssh -J round trip"),
        ("round trip, connecting", "cerise connect+run", "ssh -J connect+run"),
        ("upload", "cerise upload", "sftp -J put"),
    ):
        ratio = median[theirs] / median[ours]
        per_round = [a / b for a, b in zip(results[theirs], results[ours], strict=True)]
        print(f"  {label:23} {ratio:6.2f}x (per round {min(per_round):.2f} to "
              f"{max(per_round):.2f}): {'met' if ratio >= 0.9 else 'NOT met'}")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=int, default=512)
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    servers = devenv_sshd.start_behind_bastion()
    try:
        with tempfile.TemporaryDirectory(prefix="cerise-bench-") as scratch:
            await run(servers, Path(scratch), args.size_mb, args.repeat)
    finally:
        servers.stop()


if __name__ == "__main__":
    asyncio.run(main())
