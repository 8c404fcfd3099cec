"""Finished jobs past their ComputeResource's retention are deleted with their outputs, log
and remote files; running jobs and the jobs of other resources stay."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from cerise.devenv import specialisations
from cerise.devenv.controlplane import ControlPlane
from cerise.devenv.operator import OperatorProcess
from cerise.remote.local import LocalRemote
from tests.integration.api_fixtures import pause_after
from tests.integration.operator_fixtures import Resource, apply, wait_for_job
from tests.integration.test_operator_jobs import (
    FINAL,
    HOSTNAME,
    SLEEP,
    published,
    stopped,
    submit,
    unique_delay,
)
from tests.integration.test_operator_metrics import scrape, value

pytestmark = pytest.mark.integration

RETENTION = 3
"""Seconds the `short` resource keeps finished jobs."""


def local_resource(name: str, base: Path, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "cerise.dev/v1alpha1", "kind": "ComputeResource",
            "metadata": {"name": name},
            "spec": {"refreshSeconds": 0.2, "files": {"protocol": "local", "path": str(base)},
                     "jobs": {"protocol": "local", "scheduler": "none"}, **spec}}


async def gone(plane: ControlPlane, namespace: str, name: str, timeout: float) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        started = loop.time()
        found = await asyncio.to_thread(plane.kubectl, "get", "wfj", name, "-n", namespace,
                                        "--ignore-not-found", "-o", "name")
        if not found.stdout.strip():
            return
        assert loop.time() < deadline, f"job {name} still there after {timeout} s"
        await asyncio.sleep(pause_after(loop.time() - started))


def get(plane: ControlPlane, namespace: str, name: str) -> dict[str, Any]:
    found: dict[str, Any] = json.loads(
        plane.kubectl("get", "wfj", name, "-n", namespace, "-o", "json").stdout)
    return found


async def test_finished_jobs_past_the_retention_are_deleted_with_their_files(
    control_plane: ControlPlane, operator: OperatorProcess, namespace: str,
    exchange_dir: Path, tmp_path: Path,
) -> None:
    apply(control_plane, namespace,
          local_resource("short", tmp_path / "short", jobRetention=f"{RETENTION}s"),
          local_resource("keep", tmp_path / "keep"),
          specialisations.example(["short", "keep"]))
    await asyncio.to_thread(specialisations.wait_ready, control_plane, namespace, "example")
    short = Resource(namespace, "short", str(tmp_path / "short"), LocalRemote())
    keep = Resource(namespace, "keep", str(tmp_path / "keep"), LocalRemote())

    submit(control_plane, keep, HOSTNAME, name="elsewhere")
    elsewhere = await wait_for_job(control_plane, namespace, "elsewhere", FINAL)
    delay = unique_delay()
    submit(control_plane, short, SLEEP, {"delay": delay}, name="running")
    await wait_for_job(control_plane, namespace, "running", {"Running"})
    submit(control_plane, short, HOSTNAME, name="expiring")
    expiring = await wait_for_job(control_plane, namespace, "expiring", FINAL)
    assert expiring["status"]["phase"] == "Success", expiring["status"]
    uid = expiring["metadata"]["uid"]
    output = expiring["status"]["output"]["host"]["location"]
    assert published(exchange_dir, output)
    log = exchange_dir / "logs" / f"{uid}.log"
    assert log.exists()
    assert (tmp_path / "short" / "jobs" / uid).is_dir()

    await gone(control_plane, namespace, "expiring", timeout=RETENTION + 30)
    assert not (exchange_dir / "output" / uid).exists(), "its outputs are deleted with it"
    assert not log.exists(), "its log is deleted with it"
    assert not (tmp_path / "short" / "jobs" / uid).exists(), "its remote files too"
    # The other resource's job ended earlier, so it would have gone first.
    assert elsewhere["status"]["finishedAt"] <= expiring["status"]["finishedAt"]
    assert get(control_plane, namespace, "elsewhere")["status"]["phase"] == "Success"
    assert get(control_plane, namespace, "running")["status"]["phase"] == "Running"
    samples = scrape()
    assert value(samples, "cerise_operator_retention_deleted_total", namespace=namespace,
                 resource="short") == 1
    assert value(samples, "cerise_operator_retention_deleted_total", namespace=namespace,
                 resource="keep") == 0

    control_plane.kubectl("patch", "wfj", "running", "-n", namespace, "--type=merge",
                          "-p", '{"spec": {"cancel": true}}')
    cancelled = await wait_for_job(control_plane, namespace, "running", FINAL)
    assert cancelled["status"]["phase"] == "Cancelled"
    assert await stopped(short, delay)
