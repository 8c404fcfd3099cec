"""Phase transitions as compare-and-swap on a real API server, and tenant isolation."""

from __future__ import annotations

import asyncio
import json
import ssl
from collections.abc import AsyncIterator

import httpx
import pytest
from lightkube import AsyncClient
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.types import PatchType

from cerise.devenv.controlplane import ControlPlane
from cerise.devenv.operator import IDENTITY
from cerise.kube import jobs
from cerise.kube.jobs import TransitionConflict, WorkflowJob
from cerise.model.states import IllegalTransition, Phase
from tests.integration.kube_fixtures import kube_config

pytestmark = pytest.mark.integration

WRITERS = 24

LIFE = [
    Phase.SUBMITTED,
    Phase.STAGING_IN,
    Phase.WAITING,
    Phase.RUNNING,
    Phase.FINISHED,
    Phase.STAGING_OUT,
    Phase.SUCCESS,
]


async def create_job(kube: AsyncClient, namespace: str, name: str = "race") -> str:
    """Create a WorkflowJob and return its resourceVersion."""
    created = await kube.create(
        WorkflowJob(metadata=ObjectMeta(name=name, namespace=namespace),
                    spec={"workflow": "x.cwl", "computeResource": "local"}),
    )
    assert created.metadata is not None and created.metadata.resourceVersion
    return created.metadata.resourceVersion


@pytest.fixture
async def writers(control_plane: ControlPlane) -> AsyncIterator[list[AsyncClient]]:
    """Independent API clients (separate connection pools), as separate processes would be."""
    clients = [AsyncClient(config=kube_config(control_plane)) for _ in range(WRITERS)]
    try:
        yield clients
    finally:
        await asyncio.gather(*(c.close() for c in clients))


async def race(
    clients: list[AsyncClient], namespace: str, source: Phase | None, targets: list[Phase],
    resource_version: str | None = None,
) -> list[Phase | None]:
    """Every client tries its transition at once; the target each got, or None on conflict."""

    async def attempt(client: AsyncClient, target: Phase) -> Phase | None:
        try:
            await jobs.transition(client, namespace=namespace, name="race", source=source,
                                  target=target, resource_version=resource_version)
        except TransitionConflict:
            return None
        return target

    return list(await asyncio.gather(*(
        attempt(client, target) for client, target in zip(clients, targets, strict=True))))


async def current_phase(kube: AsyncClient, namespace: str) -> Phase | None:
    return jobs.phase_of(await kube.get(WorkflowJob, "race", namespace=namespace))


async def test_concurrent_writers_exactly_one_wins_each_round(
    kube: AsyncClient, writers: list[AsyncClient], namespace: str
) -> None:
    resource_version = await create_job(kube, namespace)
    source: Phase | None = None
    for target in LIFE:
        outcome = await race(writers, namespace, source, [target] * WRITERS,
                             resource_version=resource_version)
        assert outcome.count(target) == 1, f"round {source} -> {target}: {outcome}"
        assert outcome.count(None) == WRITERS - 1
        assert await current_phase(kube, namespace) == target
        source = target


async def test_cancel_racing_progress_has_one_winner_and_it_sticks(
    kube: AsyncClient, writers: list[AsyncClient], namespace: str
) -> None:
    resource_version = await create_job(kube, namespace)
    await jobs.transition(kube, namespace=namespace, name="race", source=None,
                          target=Phase.SUBMITTED, resource_version=resource_version)
    for source, next_phase in [(Phase.SUBMITTED, Phase.STAGING_IN),
                               (Phase.STAGING_IN, Phase.WAITING),
                               (Phase.WAITING, Phase.RUNNING)]:
        await jobs.transition(kube, namespace=namespace, name="race", source=source,
                              target=next_phase)
    half = WRITERS // 2
    targets = [Phase.RUNNING_CR] * half + [Phase.FINISHED] * (WRITERS - half)
    outcome = await race(writers, namespace, Phase.RUNNING, targets)
    winners = [t for t in outcome if t is not None]
    assert len(winners) == 1
    job = await kube.get(WorkflowJob, "race", namespace=namespace)
    assert jobs.phase_of(job) == winners[0]
    assert job["status"]["state"] == "Running"


async def test_first_transition_is_guarded_by_resource_version(
    kube: AsyncClient, namespace: str
) -> None:
    stale = await create_job(kube, namespace)
    await kube.patch(WorkflowJob, "race", {"metadata": {"labels": {"touched": "yes"}}},
                     namespace=namespace, patch_type=PatchType.MERGE)
    with pytest.raises(TransitionConflict):
        await jobs.transition(kube, namespace=namespace, name="race", source=None,
                              target=Phase.SUBMITTED, resource_version=stale)
    assert await current_phase(kube, namespace) is None


async def test_transition_writes_rest_state_message_and_fields(
    kube: AsyncClient, namespace: str
) -> None:
    resource_version = await create_job(kube, namespace)
    await jobs.transition(kube, namespace=namespace, name="race", source=None,
                          target=Phase.SUBMITTED, resource_version=resource_version)
    job = await jobs.transition(
        kube, namespace=namespace, name="race", source=Phase.SUBMITTED,
        target=Phase.PERMANENT_FAILURE, message="step 'x/y.cwl' is not installed",
        fields={"output": {}},
    )
    status = job["status"]
    assert status["phase"] == "PermanentFailure"
    assert status["state"] == "PermanentFailure"
    assert status["message"] == "step 'x/y.cwl' is not installed"
    assert status["output"] == {}
    assert status["finishedAt"].endswith("Z")


async def test_illegal_transition_writes_nothing(kube: AsyncClient, namespace: str) -> None:
    resource_version = await create_job(kube, namespace)
    await jobs.transition(kube, namespace=namespace, name="race", source=None,
                          target=Phase.SUBMITTED, resource_version=resource_version)
    with pytest.raises(IllegalTransition):
        await jobs.transition(kube, namespace=namespace, name="race",
                              source=Phase.SUBMITTED, target=Phase.SUCCESS)
    assert await current_phase(kube, namespace) == Phase.SUBMITTED


def test_status_cannot_be_set_through_the_main_resource(
    control_plane: ControlPlane, namespace: str
) -> None:
    body = {"apiVersion": "cerise.dev/v1alpha1", "kind": "WorkflowJob",
            "metadata": {"name": "sneaky", "namespace": namespace},
            "spec": {"workflow": "x.cwl", "computeResource": "local"},
            "status": {"phase": "Success"}}
    control_plane.kubectl("create", "-f", "-", stdin=json.dumps(body))
    stored = json.loads(control_plane.kubectl(
        "get", "wfj", "sneaky", "-n", namespace, "-o", "json").stdout)
    assert "status" not in stored


# --- tenants --------------------------------------------------------------------------------

def api(plane: ControlPlane, user: str, method: str, path: str,
        body: object | None = None) -> httpx.Response:
    """A raw request to the API server with `user`'s bearer token."""
    token = plane.identities[user].token
    headers = {"Authorization": f"Bearer {token}"}
    content = None
    if body is not None:
        headers["Content-Type"] = ("application/merge-patch+json" if method == "PATCH"
                                   else "application/json")
        content = json.dumps(body)
    return httpx.request(method, f"{plane.api_url}{path}", headers=headers, content=content,
                         verify=ssl.create_default_context(cafile=plane.ca_cert), timeout=10)


def jobs_path(namespace: str, name: str = "") -> str:
    base = f"/apis/cerise.dev/v1alpha1/namespaces/{namespace}/workflowjobs"
    return f"{base}/{name}" if name else base


def wait_allowed(plane: ControlPlane, user: str, namespace: str) -> None:
    """RBAC is served from informers: poll until `user`'s binding has taken effect."""
    from cerise.devenv.process import wait_until

    wait_until(lambda: api(plane, user, "GET", jobs_path(namespace)).status_code == 200,
               timeout=10, what=f"RBAC for {user} in {namespace}")


@pytest.fixture
def tenant_jobs(control_plane: ControlPlane) -> dict[str, str]:
    """One job in each tenant namespace, created by its owner; {namespace: job name}."""
    names = {}
    for user, namespace in (("alice", "team-a"), ("bob", "team-b")):
        wait_allowed(control_plane, user, namespace)
        name = f"job-of-{user}"
        api(control_plane, user, "DELETE", jobs_path(namespace, name))
        response = api(control_plane, user, "POST", jobs_path(namespace), {
            "apiVersion": "cerise.dev/v1alpha1", "kind": "WorkflowJob",
            "metadata": {"name": name},
            "spec": {"workflow": "x.cwl", "computeResource": "local"}})
        assert response.status_code == 201, response.text
        names[namespace] = name
    return names


@pytest.mark.parametrize(("user", "own", "other"), [("alice", "team-a", "team-b"),
                                                    ("bob", "team-b", "team-a")])
def test_tenant_sees_only_its_own_namespace(
    control_plane: ControlPlane, tenant_jobs: dict[str, str], user: str, own: str, other: str
) -> None:
    listed = api(control_plane, user, "GET", jobs_path(own))
    assert listed.status_code == 200
    assert [i["metadata"]["name"] for i in listed.json()["items"]] == [tenant_jobs[own]]

    theirs = tenant_jobs[other]
    assert api(control_plane, user, "GET", jobs_path(other)).status_code == 403
    assert api(control_plane, user, "GET", jobs_path(other, theirs)).status_code == 403
    patched = api(control_plane, user, "PATCH", jobs_path(other, theirs),
                  {"spec": {"cancel": True}})
    assert patched.status_code == 403
    assert api(control_plane, user, "DELETE", jobs_path(other, theirs)).status_code == 403
    cluster_wide = api(control_plane, user, "GET", "/apis/cerise.dev/v1alpha1/workflowjobs")
    assert cluster_wide.status_code == 403

    untouched = api(control_plane, "bob" if user == "alice" else "alice", "GET",
                    jobs_path(other, theirs))
    assert untouched.json()["spec"]["cancel"] is False


def test_tenant_can_cancel_but_not_write_status(
    control_plane: ControlPlane, tenant_jobs: dict[str, str]
) -> None:
    name = tenant_jobs["team-a"]
    cancelled = api(control_plane, "alice", "PATCH", jobs_path("team-a", name),
                    {"spec": {"cancel": True}})
    assert cancelled.status_code == 200
    assert cancelled.json()["spec"]["cancel"] is True
    forged = api(control_plane, "alice", "PATCH", jobs_path("team-a", name) + "/status",
                 {"status": {"phase": "Success"}})
    assert forged.status_code == 403


def test_kubectl_contexts_of_tenants_are_isolated(
    control_plane: ControlPlane, tenant_jobs: dict[str, str]
) -> None:
    mine = control_plane.kubectl("get", "wfj", "-o", "name", user="alice")
    assert mine.stdout.split() == [f"workflowjob.cerise.dev/{tenant_jobs['team-a']}"]
    theirs = control_plane.kubectl("get", "wfj", "-n", "team-b", user="alice", check=False)
    assert theirs.returncode != 0
    assert "forbidden" in theirs.stderr


@pytest.mark.parametrize(
    ("verb", "resource", "allowed"),
    [
        ("patch", "workflowjobs.cerise.dev/status", True),
        ("watch", "computeresources.cerise.dev", True),
        ("get", "secrets", True),
        ("create", "events", True),
        ("list", "secrets", False),
        ("delete", "workflowjobs.cerise.dev", True),  # finished ones past their retention
        ("delete", "computeresources.cerise.dev", False),
        ("create", "workflowjobs.cerise.dev", False),
        ("create", "pods", False),
    ],
)
def test_operator_identity_has_least_privilege(
    control_plane: ControlPlane, verb: str, resource: str, allowed: bool
) -> None:
    user, groups = IDENTITY
    answer = control_plane.kubectl(
        "auth", "can-i", verb, resource, "-n", "team-a", "--as", user, "--as-group", groups[0],
        check=False).stdout.strip()
    assert answer == ("yes" if allowed else "no")
