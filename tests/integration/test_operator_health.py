"""The operator's /healthz fails while the Kubernetes API is unreachable and recovers with it.

A private control plane and operator, because the test stops the kube-apiserver. The operator
is unhealthy after `BOUND` seconds without contact (kopf keeps a probe's answer up to 10 s).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from cerise.devenv import controlplane
from cerise.devenv.controlplane import ControlPlane
from cerise.devenv.operator import IDENTITY, OperatorProcess
from cerise.devenv.process import free_port
from cerise.remote.local import LocalRemote
from tests.integration import http_calls
from tests.integration.api_fixtures import poll_until
from tests.integration.operator_fixtures import Resource, apply, install_example, wait_for_job
from tests.integration.test_operator_jobs import FINAL, HOSTNAME, SLEEP, submit

pytestmark = pytest.mark.integration

BOUND = 5
"""CERISE_HEALTH_CONTACT_SECONDS of the private operator."""
PROBE_CACHE = 10
"""Seconds kopf answers /healthz from its previous probe."""


@dataclass(frozen=True)
class Stack:
    plane: ControlPlane
    operator: OperatorProcess
    resource: Resource

    def health(self) -> httpx.Response:
        return http_calls.get(self.operator.health_url, timeout=5)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    work = tmp_path_factory.mktemp("health-stack")
    plane = controlplane.start(work / "control-plane", identities=[IDENTITY],
                               controller_manager=False)
    (work / "files" / "input").mkdir(parents=True)
    operator = OperatorProcess(
        kubeconfig=plane.kubeconfig_for(IDENTITY[0]), exchange_dir=work / "files",
        exchange_url=f"http://localhost:{free_port()}/files", log=work / "operator.log",
        extra_env={"CERISE_HEALTH_CONTACT_SECONDS": str(BOUND)})
    try:
        controlplane.bind_cluster_role(plane, "cerise-operator", IDENTITY[1][0])
        apply(plane, "default", {
            "apiVersion": "cerise.dev/v1alpha1", "kind": "ComputeResource",
            "metadata": {"name": "local"},
            "spec": {"refreshSeconds": 0.2,
                     "files": {"protocol": "local", "path": str(work / "resource")},
                     "jobs": {"protocol": "local", "scheduler": "none"}}})
        operator.start()
        yield Stack(plane, operator, Resource(namespace="default", name="local",
                                              base=str(work / "resource"), remote=LocalRemote()))
    finally:
        operator.stop()
        plane.stop()


async def test_health_fails_while_the_kubernetes_api_is_down_and_recovers(stack: Stack) -> None:
    await install_example(stack.plane, "default", "local")
    idle_until = time.monotonic() + 3 * BOUND  # no events: only the operator's own contact
    while time.monotonic() < idle_until:
        assert stack.health().status_code == 200, "unhealthy while idle"
        await asyncio.sleep(0.2)
    apiserver = stack.plane.daemon("kube-apiserver")
    apiserver.stop()
    try:
        poll_until(lambda: stack.health().status_code == 500,
                   timeout=BOUND + PROBE_CACHE + 5, what="the operator's /healthz failing")
    finally:
        apiserver.start()
    log = stack.operator.log.read_text()
    assert "no contact with the Kubernetes API" in log
    poll_until(lambda: stack.health().status_code == 200, timeout=PROBE_CACHE + 30,
               what="the operator's /healthz answering 200 again")
    name = submit(stack.plane, stack.resource, HOSTNAME, name="after-the-outage")
    job = await wait_for_job(stack.plane, "default", name, FINAL, timeout=120)
    assert job["status"]["phase"] == "Success", json.dumps(job["status"])


async def test_a_run_that_ends_while_the_kubernetes_api_is_down_is_finished_when_it_is_back(
    stack: Stack,
) -> None:
    """The worker's status write fails while the API server is stopped: the next tick tries
    again, and the job ends as soon as the API answers; the worker is not ended with a
    traceback and started again a minute later (kopf's back-off for a failed daemon)."""
    await install_example(stack.plane, "default", "local")
    name = submit(stack.plane, stack.resource, SLEEP, {"delay": 3}, name="through-an-outage")
    job = await wait_for_job(stack.plane, "default", name, {"Running"} | FINAL)
    assert job["status"]["phase"] == "Running", json.dumps(job["status"])
    exit_code = Path(stack.resource.base) / "jobs" / job["metadata"]["uid"] / "exit_code"
    apiserver = stack.plane.daemon("kube-apiserver")
    apiserver.stop()
    try:
        poll_until(exit_code.exists, timeout=60, what="the run ending")
        poll_until(lambda: any(line in stack.operator.log.read_text() for line in (
            "the Kubernetes API did not answer", "Daemon 'resource_worker' failed")),
            timeout=30, what="the worker failing to write the job's end")
    finally:
        apiserver.start()
    poll_until(lambda: stack.plane.kubectl("get", "--raw", "/readyz", check=False).returncode
               == 0, timeout=60, what="the API server answering again")
    back = time.monotonic()
    job = await wait_for_job(stack.plane, "default", name, FINAL, timeout=120)
    assert job["status"]["phase"] == "Success", json.dumps(job["status"])
    assert time.monotonic() - back < 30, "the job ended a back-off after the API came back"
    log = stack.operator.log.read_text()
    assert "Daemon 'resource_worker' failed" not in log, log[-3000:]
    assert "the Kubernetes API answers again" in log
