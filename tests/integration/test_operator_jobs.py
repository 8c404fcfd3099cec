"""WorkflowJobs end to end: the operator process, a real API server, cwltool, local and SSH."""

from __future__ import annotations

import asyncio
import itertools
import json
import uuid
from collections.abc import AsyncGenerator
from pathlib import Path
from typing import Any, cast

import pytest
from lightkube import AsyncClient
from lightkube.generic_resource import GenericNamespacedResource
from lightkube.models.meta_v1 import ObjectMeta

from cerise.devenv.controlplane import ControlPlane
from cerise.devenv.operator import OperatorProcess
from cerise.kube.jobs import ComputeResource, WorkflowJob
from tests.integration.kube_fixtures import kube_config, watch_until
from tests.integration.operator_fixtures import EXCHANGE_URL, Resource, apply, wait_for_job

pytestmark = pytest.mark.integration

FINAL = {"Success", "Cancelled", "PermanentFailure", "TemporaryFailure", "SystemError"}


def workflow(steps: dict[str, Any], inputs: dict[str, Any], outputs: dict[str, Any]) -> str:
    return json.dumps({"cwlVersion": "v1.2", "class": "Workflow", "inputs": inputs,
                       "outputs": outputs, "steps": steps})


HOSTNAME = workflow(
    {"host": {"run": "cerise/test/hostname.cwl", "in": {}, "out": ["output"]}},
    {}, {"host": {"type": "File", "outputSource": "host/output"}})

WC = workflow(
    {"wc": {"run": "cerise/test/wc.cwl", "in": {"file": "file"}, "out": ["output"]}},
    {"file": "File"}, {"counts": {"type": "File", "outputSource": "wc/output"}})

SLEEP = workflow(
    {"sleep": {"run": "cerise/test/sleep.cwl", "in": {"delay": "delay"}, "out": []}},
    {"delay": "int"}, {})


def unique_delay() -> int:
    """A sleep duration no other test uses, so the test can find exactly its own runner."""
    return 1000 + uuid.uuid4().int % 9000


async def stopped(resource: Resource, delay: int, timeout: float = 10.0) -> bool:
    """Whether the runner `sleep <delay>` is gone (signals take a moment to land)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        alive = await resource.remote.run(f"pgrep -f '^sleep {delay}$' || true")
        if not alive.stdout.strip():
            return True
        if loop.time() > deadline:
            return False
        await asyncio.sleep(0.2)


def submit(plane: ControlPlane, resource: Resource, text: str,
           inputs: dict[str, Any] | None = None, name: str = "job") -> str:
    apply(plane, resource.namespace, {
        "apiVersion": "cerise.dev/v1alpha1", "kind": "WorkflowJob", "metadata": {"name": name},
        "spec": {"workflow": text, "input": inputs or {}, "computeResource": resource.name}})
    return name


def upload(exchange_dir: Path, name: str, content: bytes) -> dict[str, str]:
    """Put a file in the exchange's input area as a client would; its CWL File object."""
    folder = f"t-{uuid.uuid4().hex[:8]}"
    path = exchange_dir / "input" / folder / name
    path.parent.mkdir(parents=True)
    path.write_bytes(content)
    from urllib.parse import quote
    return {"class": "File", "location": f"{EXCHANGE_URL}/input/{folder}/{quote(name)}"}


def published(exchange_dir: Path, location: str) -> bytes:
    """The content of an output the operator published in the exchange."""
    from urllib.parse import unquote
    assert location.startswith(f"{EXCHANGE_URL}/output/")
    return (exchange_dir / unquote(location[len(EXCHANGE_URL) + 1:])).read_bytes()


def job_events(plane: ControlPlane, namespace: str, name: str) -> list[dict[str, Any]]:
    """The Events of the object `name`, oldest first."""
    out = plane.kubectl("get", "events", "-n", namespace, "-o", "json",
                        "--field-selector", f"involvedObject.name={name}").stdout
    found: list[dict[str, Any]] = sorted(json.loads(out)["items"],
                                         key=lambda e: e["metadata"]["creationTimestamp"])
    return found


def events(plane: ControlPlane, namespace: str, name: str) -> list[str]:
    return [e["reason"] for e in job_events(plane, namespace, name)]


async def test_hostname_runs_to_success_with_events_and_output(
    control_plane: ControlPlane, operator: OperatorProcess, resource: Resource,
    exchange_dir: Path,
) -> None:
    submit(control_plane, resource, HOSTNAME)
    job = await wait_for_job(control_plane, resource.namespace, "job", FINAL)
    status = job["status"]
    assert status["phase"] == "Success", status
    assert status["state"] == "Success"
    hostname = (await resource.remote.run("hostname")).stdout
    assert published(exchange_dir, status["output"]["host"]["location"]).decode() == hostname
    assert "path" not in status["output"]["host"]
    reasons = events(control_plane, resource.namespace, "job")
    for reason in ("Submitted", "StagingIn", "Waiting", "Finished", "StagingOut", "Success"):
        assert reason in reasons
    log = (exchange_dir / "logs" / f"{job['metadata']['uid']}.log").read_text()
    assert "Final process status is success" in log
    [succeeded] = status["conditions"]
    assert (succeeded["type"], succeeded["status"], succeeded["reason"]) == (
        "Succeeded", "True", "Success")
    assert status["observedGeneration"] == job["metadata"]["generation"]
    found = control_plane.kubectl("get", "cres", resource.name, "-n", resource.namespace,
                                  "-o", "json")
    [ready] = json.loads(found.stdout)["status"]["conditions"]
    assert (ready["type"], ready["status"], ready["reason"]) == ("Ready", "True", "Connected")


async def test_a_job_without_inputs_runs_in_few_status_writes(
    control_plane: ControlPlane, operator: OperatorProcess, resource: Resource,
) -> None:
    """Every status write is an etcd write and a watch event for every client: a new job
    comes with its worker's fence (no claim of its own); a staging with nothing to move
    writes no progress, a short one's rides on the transition that follows."""
    kube = AsyncClient(config=kube_config(control_plane))
    try:
        created = await kube.create(WorkflowJob(
            metadata=ObjectMeta(name="writes", namespace=resource.namespace),
            spec={"workflow": HOSTNAME, "computeResource": resource.name}))
        assert created.metadata is not None
        # From the creation on, every change: none is missed, however late the watch.
        changes = cast(AsyncGenerator[tuple[str, GenericNamespacedResource], None], kube.watch(
            WorkflowJob, namespace=resource.namespace, fields={"metadata.name": "writes"},
            resource_version=created.metadata.resourceVersion))
        statuses: list[dict[str, Any]] = []
        try:
            async with asyncio.timeout(60):
                async for _, job in changes:
                    status = job.to_dict().get("status") or {}  # type: ignore[no-untyped-call]
                    if status != (statuses[-1] if statuses else {}):
                        statuses.append(status)
                    if status.get("phase") in FINAL:
                        break
        finally:
            await changes.aclose()
    finally:
        await kube.close()
    assert statuses[-1]["phase"] == "Success", statuses[-1]
    phases = [status["phase"] for status in statuses]
    assert phases[0] == "Submitted" and "fence" in statuses[0], statuses[0]
    # Submitted, StagingIn, Waiting, Running, Finished, StagingOut, Success, once each
    # (Running only when a poll sees it); Running again only for news of its one step,
    # seen started and seen ended by as many polls as the runner's pace allows.
    running = [status for status in statuses if status["phase"] == "Running"]
    assert len(phases) - len(running) == len(set(phases) - {"Running"}), phases
    assert len(running) <= 3, running
    assert all(before.get("steps") != after.get("steps")
               for before, after in itertools.pairwise(running)), running
    out = statuses[-1]["progress"]["out"]
    assert out["done"] == out["total"] > 0, "the output's progress, on the last write"


async def test_a_run_that_ends_is_seen_without_waiting_for_the_refresh(
    control_plane: ControlPlane, operator: OperatorProcess, resource: Resource,
) -> None:
    control_plane.kubectl("patch", "cres", resource.name, "-n", resource.namespace,
                          "--type=merge", "-p", '{"spec": {"refreshSeconds": 300}}')
    await watch_until(
        control_plane, ComputeResource, resource.namespace, resource.name,
        lambda found: (found.get("status") or {}).get("observedGeneration") == 2,
        timeout=30, what="the worker taking up a refresh of 5 minutes")
    submit(control_plane, resource, HOSTNAME)
    # Polled once at its submit, while it runs; its end comes long before the next refresh.
    job = await wait_for_job(control_plane, resource.namespace, "job", FINAL, timeout=120)
    assert job["status"]["phase"] == "Success", job["status"]


async def test_wc_of_an_uploaded_file(
    control_plane: ControlPlane, operator: OperatorProcess, resource: Resource,
    exchange_dir: Path,
) -> None:
    source = upload(exchange_dir, "words.txt", b"one two three\nfour\n")
    submit(control_plane, resource, WC, {"file": source})
    job = await wait_for_job(control_plane, resource.namespace, "job", FINAL)
    assert job["status"]["phase"] == "Success", job["status"]
    counts = published(exchange_dir, job["status"]["output"]["counts"]["location"]).split()
    assert counts[:3] == [b"2", b"4", b"19"]
    assert job["spec"]["input"] == {"file": source}, "the submitted input is kept verbatim"


async def test_hostile_input_name_is_staged_safely(
    control_plane: ControlPlane, operator: OperatorProcess, resource: Resource,
    exchange_dir: Path,
) -> None:
    name = "a b'c\"$(touch pwned);`id`..txt"
    submit(control_plane, resource, WC, {"file": upload(exchange_dir, name, b"x\n")})
    job = await wait_for_job(control_plane, resource.namespace, "job", FINAL)
    assert job["status"]["phase"] == "Success", job["status"]
    found = await resource.remote.run(f"find '{resource.base}' / -maxdepth 1 -name pwned")
    assert found.stdout == ""


@pytest.mark.parametrize(
    ("text", "inputs", "words"),
    [
        (WC, {}, "missing required input 'file'"),
        (json.dumps({"cwlVersion": "v1.2", "class": "CommandLineTool", "baseCommand": "rm",
                     "inputs": [], "outputs": []}), {}, "inline tools are not allowed"),
        (workflow({"x": {"run": "cerise/test/nope.cwl", "in": {}, "out": []}}, {}, {}), {},
         "not an installed step"),
        (workflow({"x": {"run": "../../../bin/sh", "in": {}, "out": []}}, {}, {}), {}, ".."),
        ("class: Workflow\ninputs: [\n", {}, "line"),
    ],
)
async def test_invalid_jobs_fail_permanently_without_touching_the_resource(
    control_plane: ControlPlane, operator: OperatorProcess, resource: Resource,
    text: str, inputs: dict[str, Any], words: str,
) -> None:
    submit(control_plane, resource, text, inputs)
    job = await wait_for_job(control_plane, resource.namespace, "job", FINAL)
    assert job["status"]["phase"] == "PermanentFailure"
    assert words in job["status"]["message"]
    jobs_dir = await resource.remote.run(f"ls '{resource.base}/jobs' 2>/dev/null | wc -l")
    assert jobs_dir.stdout.strip() == "0"


async def test_cancel_of_a_running_job_stops_it(
    control_plane: ControlPlane, operator: OperatorProcess, resource: Resource,
) -> None:
    delay = unique_delay()
    submit(control_plane, resource, SLEEP, {"delay": delay})
    job = await wait_for_job(control_plane, resource.namespace, "job", {"Running"})
    control_plane.kubectl("patch", "wfj", "job", "-n", resource.namespace, "--type=merge",
                          "-p", '{"spec": {"cancel": true}}')
    job = await wait_for_job(control_plane, resource.namespace, "job", FINAL)
    assert job["status"]["phase"] == "Cancelled"
    assert await stopped(resource, delay), "the runner outlived the cancel"


async def test_cancel_right_after_submission(
    control_plane: ControlPlane, operator: OperatorProcess, resource: Resource,
) -> None:
    apply(control_plane, resource.namespace, {
        "apiVersion": "cerise.dev/v1alpha1", "kind": "WorkflowJob", "metadata": {"name": "job"},
        "spec": {"workflow": SLEEP, "input": {"delay": unique_delay()},
                 "computeResource": resource.name,
                 "cancel": True}})
    job = await wait_for_job(control_plane, resource.namespace, "job", FINAL)
    assert job["status"]["phase"] == "Cancelled"


async def test_delete_of_a_finished_job_removes_everything(
    control_plane: ControlPlane, operator: OperatorProcess, resource: Resource,
    exchange_dir: Path,
) -> None:
    submit(control_plane, resource, HOSTNAME)
    job = await wait_for_job(control_plane, resource.namespace, "job", FINAL)
    uid = job["metadata"]["uid"]
    assert (exchange_dir / "output" / uid).exists()
    control_plane.kubectl("delete", "wfj", "job", "-n", resource.namespace, "--timeout=60s")
    assert not (exchange_dir / "output" / uid).exists()
    assert not (exchange_dir / "logs" / f"{uid}.log").exists()
    left = await resource.remote.run(f"test -e '{resource.base}/jobs/{uid}'")
    assert left.exit_status == 1


async def test_delete_of_a_running_job_stops_it(
    control_plane: ControlPlane, operator: OperatorProcess, resource: Resource,
) -> None:
    delay = unique_delay()
    submit(control_plane, resource, SLEEP, {"delay": delay})
    await wait_for_job(control_plane, resource.namespace, "job", {"Running"})
    control_plane.kubectl("delete", "wfj", "job", "-n", resource.namespace, "--timeout=60s")
    assert await stopped(resource, delay), "the runner outlived the deletion"


async def test_operator_killed_mid_run_still_succeeds_and_submits_once(
    control_plane: ControlPlane, operator: OperatorProcess, resource: Resource,
    exchange_dir: Path,
) -> None:
    source = upload(exchange_dir, "words.txt", b"a b c\n")
    text = workflow(
        {"sleep": {"run": "cerise/test/sleep.cwl", "in": {"delay": {"default": 2}}, "out": []},
         "wc": {"run": "cerise/test/wc.cwl", "in": {"file": "file"}, "out": ["output"]}},
        {"file": "File"}, {"counts": {"type": "File", "outputSource": "wc/output"}})
    submit(control_plane, resource, text, {"file": source})
    job = await wait_for_job(control_plane, resource.namespace, "job", {"Running", "Waiting"})
    operator.kill()
    operator.start()
    job = await wait_for_job(control_plane, resource.namespace, "job", FINAL)
    assert job["status"]["phase"] == "Success", job["status"]
    uid = job["metadata"]["uid"]
    runs = await resource.remote.run(f"cat '{resource.base}/jobs/{uid}/remote_id' | wc -l")
    assert runs.stdout.strip() == "1"


async def test_a_changed_compute_resource_is_used_at_once(
    control_plane: ControlPlane, operator: OperatorProcess, resource: Resource,
) -> None:
    async def observed(generation: int, what: str) -> None:
        await watch_until(
            control_plane, ComputeResource, resource.namespace, resource.name,
            lambda found: (found.get("status") or {}).get("observedGeneration") == generation,
            timeout=30, what=what)

    await observed(1, "the worker reporting generation 1")
    control_plane.kubectl("patch", "cres", resource.name, "-n", resource.namespace,
                          "--type=merge", "-p", '{"spec": {"refreshSeconds": 0.3}}')
    await observed(2, "the worker taking up the new spec")
    submit(control_plane, resource, HOSTNAME)
    job = await wait_for_job(control_plane, resource.namespace, "job", FINAL)
    assert job["status"]["phase"] == "Success", job["status"]
