"""The operator's Prometheus metrics move as its jobs run: one status command per refresh
however many jobs are in flight, every transition, the bytes staged, refused workflows,
failed installs and the SSH connection."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from cerise.devenv.controlplane import ControlPlane
from cerise.devenv.operator import OperatorProcess
from cerise.devenv.sshd import SshEndpoint
from cerise.remote.ssh_remote import SshRemote
from tests.integration import http_calls
from tests.integration.operator_fixtures import (
    METRICS_URL,
    Resource,
    apply,
    install_example,
    remove,
    wait_for_job,
)
from tests.integration.remote_fixtures import ssh_remote, ssh_target
from tests.integration.test_operator_jobs import (
    FINAL,
    SLEEP,
    WC,
    published,
    submit,
    upload,
    workflow,
)

pytestmark = pytest.mark.integration

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]

REFRESH = 1.0
"""The test resource's refreshSeconds."""
IN_FLIGHT = 30
WINDOW = 10.0
"""Seconds between the two scrapes that count status commands."""
SLEEPING_RUNNER = """#!/bin/bash
# A runner that only sleeps: the jobs stay in flight at no cost to the machine.
sleep 600
echo '{}'
echo 'Final process status is success' >&2
"""
REFUSED = workflow(
    {"step": {"run": {"class": "CommandLineTool", "baseCommand": "id", "inputs": {},
                      "outputs": {}}, "in": {}, "out": []}}, {}, {})


def scrape() -> Samples:
    text = http_calls.get(METRICS_URL, timeout=10).text
    return {(sample.name, frozenset(sample.labels.items())): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


@pytest.fixture
async def metered(
    control_plane: ControlPlane, namespace: str, sshd: SshEndpoint
) -> AsyncIterator[Resource]:
    """An ssh resource (scheduler none) with the example project, refreshed every
    `REFRESH` seconds, whose runner only sleeps."""
    remote = ssh_remote(sshd)
    base = f"/home/{sshd.username}/.cerise-{uuid.uuid4().hex[:8]}"
    await remote.run(f"mkdir -p '{base}'")
    await remote.write(f"{base}/sleeping-runner", SLEEPING_RUNNER.encode(), mode=0o755)
    apply(control_plane, namespace,
          {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "login"},
           "stringData": {"username": sshd.username, "privateKey": sshd.client_key.read_text()}},
          {"apiVersion": "cerise.dev/v1alpha1", "kind": "ComputeResource",
           "metadata": {"name": "metered"},
           "spec": {"credentialsSecret": "login", "hostKeys": [sshd.host_key],
                    "refreshSeconds": REFRESH,
                    "files": {"protocol": "sftp", "host": sshd.host, "port": sshd.port,
                              "path": base},
                    "jobs": {"protocol": "ssh", "host": sshd.host, "port": sshd.port,
                             "scheduler": "none", "cwlRunner": f"{base}/sleeping-runner"}}})
    await install_example(control_plane, namespace, "metered")
    try:
        yield Resource(namespace=namespace, name="metered", base=base, remote=remote)
    finally:
        await remove(remote, base)


async def phases(plane: ControlPlane, namespace: str) -> Counter[str]:
    listed = await asyncio.to_thread(plane.kubectl, "get", "wfj", "-n", namespace, "-o", "json")
    return Counter(job.get("status", {}).get("phase", "")
                   for job in json.loads(listed.stdout)["items"])


async def wait_phases(plane: ControlPlane, namespace: str, phase: str, count: int,
                      timeout: float = 180) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while (found := await phases(plane, namespace))[phase] != count:
        assert loop.time() < deadline, f"not {count} jobs {phase} in {timeout} s: {found}"
        await asyncio.sleep(0.5)


async def test_one_status_command_per_refresh_with_30_jobs_in_flight(
    control_plane: ControlPlane, operator: OperatorProcess, metered: Resource,
) -> None:
    ns, labels = metered.namespace, {"namespace": metered.namespace, "resource": "metered"}
    for index in range(IN_FLIGHT):
        submit(control_plane, metered, SLEEP, {"delay": 1}, name=f"sleep-{index}")
    await wait_phases(control_plane, ns, "Running", IN_FLIGHT)
    samples = scrape()
    assert value(samples, "cerise_operator_jobs", phase="Running", **labels) == IN_FLIGHT
    assert value(samples, "cerise_operator_scheduler_commands_total", kind="submit",
                 **labels) == IN_FLIGHT

    before, began = scrape(), time.monotonic()
    await asyncio.sleep(WINDOW)  # the measurement window itself, not a wait for a condition
    after, elapsed = scrape(), time.monotonic() - began
    assert (await phases(control_plane, ns))["Running"] == IN_FLIGHT, "nothing changed meanwhile"

    def moved(name: str) -> float:
        return value(after, name, kind="status", **labels) - value(before, name, kind="status",
                                                                   **labels)

    polls = moved("cerise_operator_scheduler_commands_total")
    refreshes = elapsed / REFRESH
    # A refresh is the interval plus the tick's own work, so a loaded machine has somewhat
    # fewer of them; one status command per job would be 30 times as many.
    assert 0.5 * refreshes - 1 <= polls <= refreshes + 1, (
        f"{polls:g} status commands in {elapsed:.1f} s with refresh {REFRESH:g} s")
    assert moved("cerise_operator_scheduler_command_seconds_count") == polls

    for index in range(IN_FLIGHT):
        control_plane.kubectl("patch", "wfj", f"sleep-{index}", "-n", ns, "--type=merge",
                              "-p", '{"spec": {"cancel": true}}')
    await wait_phases(control_plane, ns, "Cancelled", IN_FLIGHT)
    done = scrape()
    assert value(done, "cerise_operator_jobs", phase="Cancelled", **labels) == IN_FLIGHT
    cancels = (value(done, "cerise_operator_scheduler_commands_total", kind="cancel", **labels)
               - value(after, "cerise_operator_scheduler_commands_total", kind="cancel",
                       **labels))
    assert 1 <= cancels <= IN_FLIGHT
    assert value(done, "cerise_operator_ssh_connects_total", **labels) >= 1


@pytest.mark.parametrize("resource", ["ssh"], indirect=True)
async def test_transitions_staging_refusals_and_install_failures_are_counted(
    control_plane: ControlPlane, operator: OperatorProcess, resource: Resource,
    exchange_dir: Path,
) -> None:
    ns, labels = resource.namespace, {"namespace": resource.namespace, "resource": "ssh"}
    before = scrape()
    content = b"one two\nthree\n"
    submit(control_plane, resource, WC, {"file": upload(exchange_dir, "words.txt", content)})
    submit(control_plane, resource, REFUSED, name="refused")
    job = await wait_for_job(control_plane, ns, "job", FINAL)
    assert job["status"]["phase"] == "Success", job["status"]
    refused = await wait_for_job(control_plane, ns, "refused", FINAL)
    assert refused["status"]["phase"] == "PermanentFailure", refused["status"]
    apply(control_plane, ns, {
        "apiVersion": "cerise.dev/v1alpha1", "kind": "Specialisation",
        "metadata": {"name": "broken"},
        "spec": {"projects": [{"name": "broken", "version": "1.0.0",
                               "source": {"configMap": "no-such-configmap"}}],
                 "computeResources": ["ssh"]}})
    deadline = time.monotonic() + 60
    while value(after := scrape(), "cerise_operator_install_failures_total", **labels) < 1:
        assert time.monotonic() < deadline, "the failed install was not counted"
        await asyncio.sleep(0.2)

    def moved(name: str, **more: str) -> float:
        return value(after, name, **labels, **more) - value(before, name, **labels, **more)

    def transitions(source: str, target: str) -> float:
        return moved("cerise_operator_transitions_total", source=source, target=target)

    ran = transitions("Waiting", "Running")
    assert ran in (0, 1), "a quick job may end before a poll sees it running"
    assert {(source, target): transitions(source, target) for source, target in [
        ("New", "Submitted"), ("Submitted", "StagingIn"), ("StagingIn", "Waiting"),
        ("Waiting", "Finished"), ("Running", "Finished"), ("Finished", "StagingOut"),
        ("StagingOut", "Success"), ("Submitted", "PermanentFailure")]} == {
        ("New", "Submitted"): 2, ("Submitted", "StagingIn"): 1, ("StagingIn", "Waiting"): 1,
        ("Waiting", "Finished"): 1 - ran, ("Running", "Finished"): ran,
        ("Finished", "StagingOut"): 1, ("StagingOut", "Success"): 1,
        ("Submitted", "PermanentFailure"): 1}
    everything = sum(v - value(before, name, **dict(pairs)) for (name, pairs), v in after.items()
                     if name == "cerise_operator_transitions_total"
                     and dict(pairs)["namespace"] == ns)
    assert everything == 8 + ran, "no other transition counted"
    assert moved("cerise_operator_validation_failures_total") == 1
    assert moved("cerise_operator_staging_bytes_total", direction="in") == len(content)
    counts = job["status"]["output"]["counts"]
    assert moved("cerise_operator_staging_bytes_total", direction="out") == len(
        published(exchange_dir, counts["location"])) == counts["size"]
    assert moved("cerise_operator_staging_seconds_total", direction="in") > 0
    assert moved("cerise_operator_staging_seconds_total", direction="out") > 0
    assert moved("cerise_operator_scheduler_commands_total", kind="submit") == 1
    assert moved("cerise_operator_scheduler_commands_total", kind="status") >= 1
    assert value(after, "cerise_operator_jobs", phase="Success", **labels) == 1
    assert value(after, "cerise_operator_jobs", phase="PermanentFailure", **labels) == 1
    assert value(after, "cerise_operator_ssh_connects_total", **labels) >= 1
    # What the run cost: measured by its job script on this plain SSH host, counted once.
    cost = job["status"]["accounting"]
    assert cost["source"] == "jobscript" and cost["maxRssBytes"] > 10 * 2**20, cost
    assert cost["cpuSeconds"] > 0 and cost["cores"] >= 1 and cost["elapsedSeconds"] > 0
    assert moved("cerise_operator_scheduler_commands_total", kind="accounting") == 1
    assert moved("cerise_runs_accounted_total", source="jobscript") == 1
    for name, field in (("cerise_run_core_hours_total", "coreHours"),
                        ("cerise_run_cpu_seconds_total", "cpuSeconds"),
                        ("cerise_run_elapsed_seconds_total", "elapsedSeconds")):
        assert moved(name, source="jobscript") == pytest.approx(cost[field]), name


async def test_an_ssh_connection_counts_its_connects_and_its_waits_for_a_channel(
    sshd: SshEndpoint,
) -> None:
    remote = SshRemote(ssh_target(sshd, max_sessions=2))  # one channel for commands
    try:
        await asyncio.gather(*(remote.run("sleep 0.3") for _ in range(3)))
        counters = remote.counters
        assert (counters.connects, counters.reconnects, counters.channel_waits) == (1, 0, 2)
        assert counters.channel_wait_seconds >= 0.8, "one waited 0.3 s, the other 0.6 s"
        await remote.close()  # as a lost connection is
        await remote.run("true")
        assert (counters.connects, counters.reconnects, counters.channel_waits) == (2, 1, 2)
    finally:
        await remote.close()
