"""The operator's metrics: settings, published output sizes, and what a scrape reads from
the registry's jobs and the workers' SSH connections."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, cast

import pytest
from lightkube import AsyncClient
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from cerise.model.exchange import Layout
from cerise.operator import metrics
from cerise.operator.metrics import Endpoint, OperatorCollector
from cerise.operator.registry import Registry as OperatorRegistry
from cerise.operator.worker import ResourceWorker
from cerise.remote.ssh import SshCredentials, SshTarget
from cerise.remote.ssh_remote import SshRemote
from docs import hooks


def test_endpoint_settings() -> None:
    assert metrics.endpoint({}) == Endpoint("127.0.0.1", 29594)
    assert metrics.endpoint({"CERISE_METRICS_PORT": "9100",
                             "CERISE_METRICS_ADDRESS": "10.1.2.3"}) == Endpoint("10.1.2.3", 9100)
    assert metrics.endpoint({"CERISE_METRICS_PORT": "0"}) is None
    for bad in ("http", "-1", "70000"):
        with pytest.raises(ValueError, match="0 turns the metrics endpoint off"):
            metrics.endpoint({"CERISE_METRICS_PORT": bad})


@dataclass
class Worker:
    remote: object


@dataclass
class Registry:
    phases: dict[tuple[str, str, str | None], int] = field(default_factory=dict)
    workers: dict[tuple[str, str], Worker] = field(default_factory=dict)


def job(uid: str, resource: str, phase: str | None) -> dict[str, Any]:
    return {"metadata": {"namespace": "ns", "name": uid, "uid": uid, "resourceVersion": "1"},
            "spec": {"computeResource": resource}, "status": {"phase": phase} if phase else {}}


def ssh() -> SshRemote:
    return SshRemote(SshTarget("hpc", 22, SshCredentials("u", password="-"), ("ssh-ed25519 A",)))


Samples = dict[tuple[str, str, str, str], float]
"""(name, namespace, resource, phase or "") → value."""


def scrape(collector: OperatorCollector) -> Samples:
    registry = CollectorRegistry()
    registry.register(collector)
    text = generate_latest(registry).decode()
    return {(s.name, s.labels["namespace"], s.labels["resource"], s.labels.get("phase", "")):
            s.value for family in text_string_to_metric_families(text) for s in family.samples}


def test_jobs_per_phase_are_counted_as_they_come_and_go() -> None:
    registry = OperatorRegistry(kube=cast(AsyncClient, None), exchange=cast(Layout, None))
    for body in (job("1", "hpc", "Running"), job("2", "hpc", "Running"),
                 job("3", "hpc", None), job("4", "gone", "Success")):
        registry.remember(body)
    registry.workers[("ns", "idle")] = cast(ResourceWorker, Worker(object()))
    collector = OperatorCollector()
    collector.source = lambda: registry
    found = scrape(collector)
    assert found[("cerise_operator_jobs", "ns", "hpc", "Running")] == 2
    assert found[("cerise_operator_jobs", "ns", "hpc", "New")] == 1
    assert found[("cerise_operator_jobs", "ns", "hpc", "Success")] == 0
    assert found[("cerise_operator_jobs", "ns", "gone", "Success")] == 1
    assert found[("cerise_operator_jobs", "ns", "idle", "Running")] == 0
    moved = job("1", "hpc", "Success")
    moved["metadata"]["resourceVersion"] = "2"
    registry.remember(moved)  # a newer version of job 1, final now
    found = scrape(collector)
    assert found[("cerise_operator_jobs", "ns", "hpc", "Running")] == 1
    assert found[("cerise_operator_jobs", "ns", "hpc", "Success")] == 1
    registry._forget(job("4", "gone", "Success"))
    del registry.workers[("ns", "idle")]
    assert not any(resource in ("gone", "idle") for _, _, resource, _ in scrape(collector))


def test_ssh_counters_survive_a_new_connection_of_the_resource() -> None:
    first = ssh()
    registry = Registry(workers={("ns", "hpc"): Worker(first), ("ns", "here"): Worker(object())})
    collector = OperatorCollector()
    collector.source = lambda: registry
    first.counters.connects, first.counters.reconnects = 3, 2
    first.counters.channel_waits, first.counters.channel_wait_seconds = 4, 1.5
    assert scrape(collector)[("cerise_operator_ssh_connects_total", "ns", "hpc", "")] == 3
    first.counters.connects = 4  # counted after the scrape, before the worker was replaced
    second = ssh()
    second.counters.connects = 1
    registry.workers[("ns", "hpc")] = Worker(second)
    found = scrape(collector)
    assert found[("cerise_operator_ssh_connects_total", "ns", "hpc", "")] == 5
    assert found[("cerise_operator_ssh_reconnects_total", "ns", "hpc", "")] == 2
    assert found[("cerise_operator_ssh_channel_waits_total", "ns", "hpc", "")] == 4
    assert found[("cerise_operator_ssh_channel_wait_seconds_total", "ns", "hpc", "")] == 1.5
    assert not any(resource == "here" for name, _, resource, _ in found if "_ssh_" in name), (
        "no SSH connection: no SSH series")
    del registry.workers[("ns", "hpc")]
    assert scrape(collector)[("cerise_operator_ssh_connects_total", "ns", "hpc", "")] == 5


def test_the_operating_guide_lists_every_metric_the_operator_exposes() -> None:
    table = hooks.expand("<!-- generated: metrics cerise.operator.metrics -->", "operating.md")
    for family in metrics.REGISTRY.collect():
        exposed = f"{family.name}_total" if family.type == "counter" else family.name
        assert f"| `{exposed}` |" in table, exposed
    assert "| `cerise_operator_jobs` | gauge | `namespace`, `resource`, `phase` |" in table
