"""A whole Cerise on this machine against real Slurm over SSH, for the scale benchmarks.

Starts a control plane, the test sshd, a one-node Slurm cluster and the operator (with its
metrics endpoint), and makes ComputeResource `slurm` in namespace `default`: ssh to the
sshd's user, scheduler slurm, the example project installed, and as its runner a light
script that sleeps for the job's `delay` input (not cwltool: the benchmarks measure what
Cerise adds, not what the runner costs), or cwltool itself when asked (`cwltool=True`).
Needs root, like the integration tests' remote side.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shlex
import time
import uuid
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from lightkube import AsyncClient
from lightkube.config.kubeconfig import KubeConfig
from lightkube.models.meta_v1 import ObjectMeta
from prometheus_client.parser import text_string_to_metric_families

from cerise.devenv import controlplane, specialisations
from cerise.devenv import slurm as devenv_slurm
from cerise.devenv import sshd as devenv_sshd
from cerise.devenv.controlplane import ControlPlane
from cerise.devenv.operator import OperatorProcess
from cerise.devenv.process import free_port
from cerise.devenv.slurm import SlurmCluster
from cerise.kube.jobs import WorkflowJob
from cerise.remote.ssh import SshCredentials, SshTarget
from cerise.remote.ssh_remote import SshRemote

NAMESPACE = "default"
RESOURCE = "slurm"
FINAL = frozenset({"Success", "Cancelled", "PermanentFailure", "TemporaryFailure", "SystemError"})
SUBMITTED = frozenset({"Waiting", "Running", "Finished", "StagingOut", *FINAL})
"""Phases of a job that has been handed to the scheduler."""

RUNNER = """#!/bin/bash
# A CWL runner that only sleeps for the input object's `delay` (its last argument), then
# prints an empty output object and cwltool's closing line.
delay=$(sed -n 's/.*"delay": *\\([0-9]*\\).*/\\1/p' "${@: -1}")
sleep "${delay:-0}"
echo '{}'
echo 'Final process status is success' >&2
"""
IN_FLIGHT = 86400
"""The `delay` of a job that stays in flight (queued or running) until cancelled."""
SLEEP = json.dumps({
    "cwlVersion": "v1.2", "class": "Workflow", "inputs": {"delay": "int"}, "outputs": {},
    "steps": {"sleep": {"run": "cerise/test/sleep.cwl", "in": {"delay": "delay"}, "out": []}},
})
"""The workflow every benchmark job submits (validated and staged like any other)."""

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


@dataclass
class SlurmCerise:
    """What a benchmark drives."""

    plane: ControlPlane
    operator: OperatorProcess
    client: AsyncClient
    remote: SshRemote
    """The benchmark's own connection to the sshd user (for the bare-Slurm baseline)."""
    slurm: SlurmCluster
    base: str
    """The resource's base directory on the remote side (jobs in `base/jobs/<uid>`)."""
    runner: str
    """The path of the resource's runner script."""
    metrics_url: str
    refresh: float

    def scrape(self) -> Samples:
        """The operator's metrics now."""
        text = httpx.get(self.metrics_url, timeout=30).text
        return {(sample.name, frozenset(sample.labels.items())): sample.value
                for family in text_string_to_metric_families(text)
                for sample in family.samples}

    def phases(self, samples: Samples | None = None) -> dict[str, float]:
        """Jobs of the resource per phase, as the operator holds them."""
        found = samples if samples is not None else self.scrape()
        return {dict(labels)["phase"]: count for (name, labels), count in found.items()
                if name == "cerise_operator_jobs" and dict(labels)["resource"] == RESOURCE}

    async def wait_phases(self, phases: Iterable[str], count: int, timeout: float) -> float:
        """Wait until `count` jobs are in `phases`; the seconds it took."""
        wanted, began = set(phases), time.monotonic()
        while True:
            found = await asyncio.to_thread(self.phases)
            if sum(n for phase, n in found.items() if phase in wanted) >= count:
                return time.monotonic() - began
            if time.monotonic() - began > timeout:
                raise SystemExit(f"not {count} jobs in {sorted(wanted)} after {timeout:g} s: "
                                 f"{ {p: n for p, n in found.items() if n} }")
            await asyncio.sleep(0.2)

    async def create_jobs(self, names: Iterable[str], *, delay: int = 0, parallel: int = 16,
                          created: dict[str, float] | None = None) -> None:
        """Create jobs on the resource that sleep for `delay`, `parallel` requests at a time;
        `created` gets each one's creation time (time.monotonic, when the API server
        answered)."""
        gate = asyncio.Semaphore(parallel)

        async def create(name: str) -> None:
            async with gate:
                await self.client.create(WorkflowJob(
                    metadata=ObjectMeta(name=name, namespace=NAMESPACE),
                    spec={"workflow": SLEEP, "input": {"delay": delay},
                          "computeResource": RESOURCE}))
                if created is not None:
                    created[name] = time.monotonic()

        await asyncio.gather(*(create(name) for name in names))

    async def slurm_command(self, script: str) -> str:
        """Run a script with the cluster's SLURM_CONF as the sshd user; its output."""
        result = await self.remote.run(f"export SLURM_CONF={shlex.quote(str(self.slurm.conf))}"
                                       f"\n{script}", timeout=3600)
        if result.exit_status != 0:
            raise SystemExit(f"remote command failed: {result.stderr[-2000:]}")
        return result.stdout


def value(samples: Samples, name: str, **labels: str) -> float:
    """One series of a scrape (0 when absent)."""
    return samples.get((name, frozenset(labels.items())), 0.0)


def resource_value(samples: Samples, name: str, **labels: str) -> float:
    """One series of the benchmark's resource."""
    return value(samples, name, namespace=NAMESPACE, resource=RESOURCE, **labels)


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds a process has used, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / 100  # utime, stime in clock ticks (USER_HZ)


def memory_mib(pid: int) -> tuple[float, float]:
    """Resident set size now and at its peak (VmRSS, VmHWM), in MiB."""
    found = {line.split(":")[0]: int(line.split()[1]) / 1024
             for line in Path(f"/proc/{pid}/status").read_text().splitlines()
             if line.startswith(("VmRSS:", "VmHWM:"))}
    return found["VmRSS"], found["VmHWM"]


def _apply(plane: ControlPlane, *bodies: Mapping[str, Any]) -> None:
    for body in bodies:
        plane.kubectl("apply", "-n", NAMESPACE, "-f", "-", stdin=json.dumps(body))


@contextlib.asynccontextmanager
async def slurm_cerise(
    work: Path, *, refresh: float, operator_env: Mapping[str, str] | None = None,
    cwltool: bool = False, jobs_spec: Mapping[str, Any] | None = None,
) -> AsyncIterator[SlurmCerise]:
    """Start everything under `work`, the resource refreshed every `refresh` seconds; with
    `cwltool` its runner is cwltool (the default) rather than the light script; `jobs_spec`
    is added to its `jobs` (e.g. `pilot`)."""
    stack = contextlib.AsyncExitStack()
    async with stack:
        plane = controlplane.start(work / "control-plane")
        stack.callback(plane.stop)
        sshd = devenv_sshd.start()
        stack.callback(sshd.stop)
        cluster = devenv_slurm.start()
        stack.callback(cluster.stop)
        endpoint = sshd.endpoint
        remote = SshRemote(SshTarget(
            host=endpoint.host, port=endpoint.port, host_keys=(endpoint.host_key,),
            credentials=SshCredentials(endpoint.username,
                                       private_key=endpoint.client_key.read_text())))
        base = f"/home/{endpoint.username}/.cerise-bench-{uuid.uuid4().hex[:8]}"
        runner_path = f"{base}-runner"
        await remote.run(f"mkdir -p {shlex.quote(base)}")
        await remote.write(runner_path, RUNNER.encode(), mode=0o755)
        port = free_port()
        operator = OperatorProcess(
            kubeconfig=plane.kubeconfig, exchange_dir=work / "files",
            exchange_url="http://localhost:29593/files", log=work / "operator.log",
            extra_env={"CERISE_METRICS_PORT": str(port), **(operator_env or {})})
        jobs: dict[str, Any] = {
            "protocol": "ssh", "host": endpoint.host, "port": endpoint.port,
            "scheduler": "slurm", "queue": cluster.cluster.partition,
            "coresPerNode": cluster.cluster.cpus,
            "environment": [{"name": n, "value": v} for n, v in cluster.cluster.environment],
            **({} if cwltool else {"cwlRunner": runner_path}), **(jobs_spec or {})}
        _apply(plane,
               {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "login"},
                "stringData": {"username": endpoint.username,
                               "privateKey": endpoint.client_key.read_text()}},
               {"apiVersion": "cerise.dev/v1alpha1", "kind": "ComputeResource",
                "metadata": {"name": RESOURCE},
                "spec": {"credentialsSecret": "login", "hostKeys": [endpoint.host_key],
                         "refreshSeconds": refresh, "jobs": jobs,
                         "files": {"protocol": "sftp", "host": endpoint.host,
                                   "port": endpoint.port, "path": base}}},
               specialisations.example([RESOURCE]))
        operator.start()
        stack.callback(operator.stop)
        await asyncio.to_thread(specialisations.wait_ready, plane, NAMESPACE, "example", 300)
        config = KubeConfig.from_file(str(plane.kubeconfig)).get(context_name="admin")
        client = AsyncClient(config=config)
        stack.push_async_callback(client.close)
        cerise = SlurmCerise(plane, operator, client, remote, cluster.cluster, base, runner_path,
                             f"http://127.0.0.1:{port}/metrics", refresh)
        stack.push_async_callback(_clean_remote, cerise)
        yield cerise


async def _clean_remote(cerise: SlurmCerise) -> None:
    """Stop every job of the user and remove the benchmark's files (the operator is
    stopped after this, the cluster after that)."""
    with contextlib.suppress(Exception):
        cerise.operator.stop()
        await cerise.slurm_command("scancel -u \"$(id -un)\" || true")
        await cerise.remote.run(f"rm -rf {shlex.quote(cerise.base)} "
                                f"{shlex.quote(cerise.runner)}", timeout=600)
    await cerise.remote.close()
