"""Operator replicas sharing the compute resources through Leases, as real `kopf run`
processes against a private control plane: the resources are spread evenly, a replica
killed outright is taken over with nothing lost or done twice, a replica that joins gets its
share, a replica stopping hands its share over at once, and a paused former holder's
writes do not land.

The operator's fenced write path is tried directly too, under two tenures of one resource.
Short Lease timings (`DEV_LEASE_TIMINGS`, as `./dev up` has) keep the tests quick;
benchmarks/operator_takeover.py measures the default ones.
"""

from __future__ import annotations

import asyncio
import datetime
import json
import os
import signal
from collections.abc import AsyncGenerator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import kopf
import pytest
from lightkube import AsyncClient
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.coordination_v1 import Lease

from cerise.devenv import controlplane, specialisations
from cerise.devenv.controlplane import ControlPlane
from cerise.devenv.operator import IDENTITY, OperatorProcess
from cerise.devenv.process import free_port
from cerise.devenv.up import DEV_LEASE_TIMINGS
from cerise.kube import objects
from cerise.kube.jobs import WorkflowJob
from cerise.kube.jobs import phase_of as jobs_phase
from cerise.model.leases import FencingToken, Identity
from cerise.model.states import Phase
from cerise.operator.transitions import Transitions
from tests.integration.api_fixtures import poll_until
from tests.integration.kube_fixtures import api_requests, kube_config
from tests.integration.operator_fixtures import apply, wait_for_job
from tests.integration.test_operator_jobs import FINAL, SLEEP, job_events

pytestmark = pytest.mark.integration

NAMESPACE = "default"


@dataclass
class Replicas:
    plane: ControlPlane
    work: Path
    operators: dict[str, OperatorProcess] = field(default_factory=dict)

    def start(self, name: str) -> OperatorProcess:
        operator = OperatorProcess(
            kubeconfig=self.plane.kubeconfig_for(IDENTITY[0]), exchange_dir=self.work / "files",
            exchange_url=f"http://localhost:{free_port()}/files",
            log=self.work / f"operator-{name}.log",
            extra_env={**DEV_LEASE_TIMINGS, "CERISE_OPERATOR_IDENTITY": name,
                       "CERISE_LEASE_NAMESPACE": NAMESPACE})
        operator.start()
        self.operators[name] = operator
        return operator

    def holders(self) -> dict[str, str]:
        """Resource → the replica name (identity without its random suffix) holding it."""
        return {resource: holder(spec) for resource, spec in leases(self.plane).items()}

    def counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for holder in self.holders().values():
            counts[holder] = counts.get(holder, 0) + 1
        return counts


def leases(plane: ControlPlane, namespace: str = NAMESPACE) -> dict[str, dict[str, Any]]:
    """Resource → the spec of its Lease."""
    found = json.loads(plane.kubectl(
        "get", "leases", "-n", namespace, "-l", "cerise.dev/lease=compute-resource",
        "-o", "json").stdout)["items"]
    return {lease["metadata"]["annotations"]["cerise.dev/subject"]: lease["spec"]
            for lease in found}


def holder(spec: dict[str, Any]) -> str:
    """The replica holding a Lease: its identity without the random suffix ("" for none)."""
    return str(spec.get("holderIdentity") or "").rsplit("-", 1)[0]


@pytest.fixture
def replicas(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Replicas]:
    work = tmp_path_factory.mktemp("replicas")
    (work / "files" / "input").mkdir(parents=True)
    plane = controlplane.start(work / "control-plane", identities=[IDENTITY],
                               controller_manager=False)
    replicas = Replicas(plane, work)
    try:
        controlplane.bind_cluster_role(plane, "cerise-operator", IDENTITY[1][0])
        yield replicas
    finally:
        for operator in replicas.operators.values():
            operator.kill()
        plane.stop()


def make_resources(replicas: Replicas, count: int) -> list[str]:
    names = [f"r{i}" for i in range(count)]
    apply(replicas.plane, NAMESPACE, *({
        "apiVersion": "cerise.dev/v1alpha1", "kind": "ComputeResource",
        "metadata": {"name": name},
        "spec": {"refreshSeconds": 0.2,
                 "files": {"protocol": "local", "path": str(replicas.work / name)},
                 "jobs": {"protocol": "local", "scheduler": "none"}}} for name in names),
        specialisations.example(names))
    return names


def submit_jobs(replicas: Replicas, resources: list[str], per_resource: int,
                delay: int) -> list[str]:
    names = {f"{resource}-job-{i}": resource
             for resource in resources for i in range(per_resource)}
    apply(replicas.plane, NAMESPACE, *({
        "apiVersion": "cerise.dev/v1alpha1", "kind": "WorkflowJob",
        "metadata": {"name": name},
        "spec": {"workflow": SLEEP, "input": {"delay": delay}, "computeResource": resource}}
        for name, resource in names.items()))
    return list(names)


def jobs(plane: ControlPlane) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = json.loads(plane.kubectl(
        "get", "wfj", "-n", NAMESPACE, "-o", "json").stdout)["items"]
    return items


def submissions(files: Path, job: dict[str, Any]) -> int:
    """How many times the job was submitted, given its resource's files directory (its
    `remote_id` gets a line at each submit)."""
    path = files / "jobs" / job["metadata"]["uid"] / "remote_id"
    return len(path.read_text().splitlines())


@dataclass
class Tenure:
    """A run of a Lease's records with one holder (a replica's name, "" for none): the
    renewTime of the first and the last."""

    holder: str
    first: datetime.datetime
    last: datetime.datetime


async def follow_tenures(plane: ControlPlane, leases: int, *, then: Callable[[], None],
                         until: Callable[[dict[str, str]], bool],
                         namespace: str = NAMESPACE) -> dict[str, list[Tenure]]:
    """Each resource's Lease tenures in the order a watch saw them (every record a Lease
    had), until `until` holds for the current holders; `then` runs, in a thread, once the
    watch has delivered all `leases` Leases. Times are the API server's records, so what
    is measured from them does not depend on how fast the test looks."""
    client = AsyncClient(config=kube_config(plane))
    events = cast(AsyncGenerator[tuple[str, Lease], None], client.watch(
        Lease, namespace=namespace, labels={"cerise.dev/lease": "compute-resource"}))
    seen: dict[str, list[Tenure]] = {}
    acting: asyncio.Future[None] | None = None
    try:
        async with asyncio.timeout(60):
            async for _, lease in events:
                assert lease.metadata is not None and lease.spec is not None
                resource = (lease.metadata.annotations or {})["cerise.dev/subject"]
                holder = (lease.spec.holderIdentity or "").rsplit("-", 1)[0]
                renewed = lease.spec.renewTime
                assert renewed is not None
                tenures = seen.setdefault(resource, [])
                if tenures and tenures[-1].holder == holder:
                    tenures[-1].last = renewed
                else:
                    tenures.append(Tenure(holder, renewed, renewed))
                if acting is None and len(seen) == leases:
                    acting = asyncio.ensure_future(asyncio.to_thread(then))
                elif acting is not None and until(
                        {name: tenures[-1].holder for name, tenures in seen.items()}):
                    break
        assert acting is not None
        await acting
    finally:
        await events.aclose()
        await client.close()
    return seen


def transition_events(plane: ControlPlane, job: str, namespace: str = NAMESPACE) -> list[str]:
    """The reasons of the job's Events, each as many times as it happened (a transition
    Event for each transition that landed)."""
    return [e["reason"] for e in job_events(plane, namespace, job)
            for _ in range(e.get("count") or 1)]


async def test_a_killed_replica_is_taken_over_and_a_joining_one_gets_its_share(
    replicas: Replicas,
) -> None:
    a, _ = replicas.start("a"), replicas.start("b")
    resources = make_resources(replicas, 4)
    poll_until(lambda: replicas.counts() == {"a": 2, "b": 2}, timeout=60,
               what="the four resources shared two and two")
    names = submit_jobs(replicas, resources, per_resource=3, delay=4)
    for name in names:
        await wait_for_job(replicas.plane, NAMESPACE, name, {"Running", "Waiting"} | FINAL,
                           timeout=120)
    held_by_a = {resource for resource, holder in replicas.holders().items() if holder == "a"}
    seen = await follow_tenures(replicas.plane, len(resources), then=a.kill,
                                until=lambda holders: set(holders.values()) == {"b"})
    for name in names:
        await wait_for_job(replicas.plane, NAMESPACE, name, FINAL, timeout=120)
    finished = jobs(replicas.plane)
    assert {job["metadata"]["name"]: job["status"]["phase"] for job in finished} == {
        name: "Success" for name in names}
    assert {job["metadata"]["name"]:
            submissions(replicas.work / job["spec"]["computeResource"], job)
            for job in finished} == {
        name: 1 for name in names}
    # from a's last renewal: the Lease duration (5 s), and b's next look (1 s)
    assert {resource: [tenure.holder for tenure in seen[resource][-2:]]
            for resource in held_by_a} == {resource: ["a", "b"] for resource in held_by_a}
    taken_over = max((seen[resource][-1].first - seen[resource][-2].last).total_seconds()
                     for resource in held_by_a)
    assert taken_over < 5 + 2 * 1 + 2, seen

    replicas.start("c")
    poll_until(lambda: replicas.counts() == {"b": 2, "c": 2}, timeout=60,
               what="b handing c its share")
    # a graceful stop hands the Leases over at once: each of b's goes to no holder, which
    # c takes, rather than staying b's until it expires
    held_by_b = {resource for resource, holder in replicas.holders().items() if holder == "b"}
    seen = await follow_tenures(replicas.plane, len(resources), then=replicas.operators["b"].stop,
                                until=lambda holders: set(holders.values()) == {"c"})
    assert {resource: [tenure.holder for tenure in seen[resource]] for resource in held_by_b} \
        == {resource: ["b", "", "c"] for resource in held_by_b}, seen


async def test_a_paused_holder_writes_nothing_after_the_takeover(replicas: Replicas) -> None:
    a, _ = replicas.start("a"), replicas.start("b")
    make_resources(replicas, 1)
    poll_until(lambda: len(replicas.holders()) == 1 and "" not in replicas.holders().values(),
               timeout=60, what="r0 held")
    holder = replicas.operators[replicas.holders()["r0"]]
    other = "b" if holder is a else "a"
    [name] = submit_jobs(replicas, ["r0"], per_resource=1, delay=5)
    await wait_for_job(replicas.plane, NAMESPACE, name, {"Running"}, timeout=120)
    assert holder.daemon is not None and holder.daemon.process is not None
    pid = holder.daemon.process.pid
    os.kill(pid, signal.SIGSTOP)
    try:
        poll_until(lambda: replicas.holders()["r0"] == other, timeout=60,
                   what=f"{other} taking r0 over")
        # the runner ends meanwhile, and the new holder finishes the job
        await wait_for_job(replicas.plane, NAMESPACE, name, FINAL, timeout=120)
    finally:
        os.kill(pid, signal.SIGCONT)
    log = Path(holder.log)
    poll_until(lambda: "its work stopped" in log.read_text(errors="replace"), timeout=30,
               what="the woken former holder stopping r0's work")
    [job] = jobs(replicas.plane)
    assert job["status"]["phase"] == "Success"
    assert job["status"]["fence"]["holder"].startswith(f"{other}-")
    assert submissions(replicas.work / "r0", job) == 1
    reasons = transition_events(replicas.plane, name)
    assert len(reasons) == len(set(reasons)), f"a transition landed twice: {reasons}"


async def test_a_former_holders_writes_are_refused(
    kube: AsyncClient, namespace: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The operator's own write path (`Transitions`) under two tenures of one resource: once
    the newer one has claimed a job, nothing the older one writes lands, and the older one
    leaves the job alone."""
    events: list[str] = []
    monkeypatch.setattr(kopf, "event", lambda _, **event: events.append(event["reason"]))

    def transitions(fence: FencingToken) -> Transitions:
        return Transitions(kube, remember=lambda _: None, log_path=lambda _: tmp_path / "log",
                           fence=fence)

    await kube.create(WorkflowJob(metadata=ObjectMeta(name="fenced", namespace=namespace),
                                  spec={"workflow": "x.cwl", "computeResource": "elsewhere"}))
    job = await submitted(kube, namespace, "fenced")
    events.clear()
    older = transitions(FencingToken(Identity("a-1"), 3))
    newer = transitions(FencingToken(Identity("b-2"), 4))
    job = await claimed(older, kube, namespace)
    moved = await older.change_phase(job, Phase.SUBMITTED, Phase.STAGING_IN, "staging by a")
    assert moved is not None
    taken = await claimed(newer, kube, namespace)
    assert taken["status"]["fence"] == {"holder": "b-2", "transitions": 4}

    assert await older.change_phase(moved, Phase.STAGING_IN, Phase.STAGING_IN_CR, "late") is None
    assert not await older.observe(moved, {"message": "late"})
    assert await older.claim([taken]) == []
    latest = await objects.get_job(kube, namespace, "fenced")
    assert latest is not None
    assert (latest["status"]["phase"], latest["status"]["message"]) == (
        "StagingIn", "staging by a")
    assert events == ["StagingIn"]
    assert await newer.change_phase(
        taken, Phase.STAGING_IN, Phase.STAGING_IN_CR, "by b") is not None


async def claimed(tenure: Transitions, kube: AsyncClient, namespace: str) -> dict[str, Any]:
    """The job "fenced" as `tenure` claimed it (read again while something else, kopf adding
    the session operator's finalizer say, changes it meanwhile)."""
    for _ in range(100):
        job = await objects.get_job(kube, namespace, "fenced")
        assert job is not None
        if written := await tenure.claim([job]):
            return written[0]
    raise AssertionError("the job was never claimed")


async def submitted(kube: AsyncClient, namespace: str, name: str) -> dict[str, Any]:
    """The job in its first phase, written here or by the session's operator, if it runs."""
    registry = Transitions(kube, remember=lambda _: None, log_path=lambda _: Path("/dev/null"))
    for _ in range(100):
        job = await objects.get_job(kube, namespace, name)
        assert job is not None
        if jobs_phase(job) is Phase.SUBMITTED:
            return job
        await registry.change_phase(job, None, Phase.SUBMITTED, "accepted")
    raise AssertionError("the job never had its first phase")


def renew_time(plane: ControlPlane, resource: str) -> str:
    """The resource's Lease's last renewal (a GET of the one Lease, not a LIST)."""
    return plane.kubectl("get", "lease", f"cerise-resource-{resource}", "-n", NAMESPACE,
                         "-o", "jsonpath={.spec.renewTime}").stdout


def test_the_replicas_follow_the_leases_by_a_watch_not_a_list_per_tick(
    replicas: Replicas,
) -> None:
    replicas.start("a"), replicas.start("b")
    make_resources(replicas, 2)
    poll_until(lambda: replicas.counts() == {"a": 1, "b": 1}, timeout=60,
               what="the two resources shared one and one")
    before = api_requests(replicas.plane, verb="LIST", resource="leases")
    renewals = [renew_time(replicas.plane, "r0")]

    def renewed() -> bool:
        if (latest := renew_time(replicas.plane, "r0")) != renewals[-1]:
            renewals.append(latest)
        return len(renewals) > 5

    poll_until(renewed, timeout=30, what="five renewals of r0's Lease")
    listed = api_requests(replicas.plane, verb="LIST", resource="leases") - before
    assert listed == 0, f"the replicas listed the Leases {listed} times over five renewals"


def test_a_deleted_compute_resource_takes_its_lease_along(replicas: Replicas) -> None:
    replicas.start("a"), replicas.start("b")
    make_resources(replicas, 2)
    poll_until(lambda: replicas.counts() == {"a": 1, "b": 1}, timeout=60,
               what="the two resources shared one and one")
    logs = {name: Path(operator.log) for name, operator in replicas.operators.items()}
    before = {name: log.stat().st_size for name, log in logs.items()}
    replicas.plane.kubectl("delete", "computeresource", "r0", "-n", NAMESPACE, "--wait=false")
    poll_until(lambda: "r0" not in replicas.holders(), timeout=30, what="r0's Lease deleted")
    assert set(replicas.holders()) == {"r1"}
    for name, log in logs.items():
        with log.open("rb") as file:
            file.seek(before[name])
            since = file.read().decode(errors="replace")
        assert "ERROR" not in since and "Traceback" not in since, f"replica {name}: {since}"
