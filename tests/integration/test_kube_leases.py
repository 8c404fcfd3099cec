"""Compute resources shared out by Leases among operator replicas, on a real API server.

Each "replica" is a `LeaseKeeper` with its own API clients acting as the operator's identity
(so the RBAC rules of deploy/rbac are the ones tested) and its own watch-fed copy of the
Leases, ticking as a replica would; the resources are real ComputeResources (their Leases
are owned by them).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import httpx2 as httpx
import pytest
from lightkube import AsyncClient
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.coordination_v1 import Lease

from cerise.devenv.controlplane import ControlPlane
from cerise.devenv.operator import IDENTITY
from cerise.kube import cache, jobs, objects
from cerise.kube import leases as kube_leases
from cerise.kube.jobs import ComputeResource, WorkflowJob
from cerise.kube.leases import FenceRefused, LeaseConflict, LeaseKeeper, Role
from cerise.model import leases
from cerise.model.leases import Claim, FencingToken, Identity, ResourceKey, Timings
from cerise.model.states import Phase
from tests.integration.kube_fixtures import kube_config

pytestmark = pytest.mark.integration

TIMINGS = Timings(duration=3.0, renew_deadline=2.0, retry=0.5)
Holdings = dict[ResourceKey, FencingToken]


class Replica:
    """What one replica's process holds: its API clients and the keepers made on them,
    whose copies of the Leases it keeps current."""

    def __init__(self, client: AsyncClient, http: httpx.AsyncClient) -> None:
        self.client, self.http = client, http
        self.following: list[asyncio.Task[None]] = []

    def keeper(self, me: str, namespace: str,
               clock: Callable[[], float] = time.monotonic) -> LeaseKeeper:
        made = LeaseKeeper(self.client, self.http, me=Identity(me), namespace=namespace,
                           timings=TIMINGS, clock=clock)
        self.following.append(asyncio.create_task(made.cache.run()))
        return made


@pytest.fixture
async def processes(control_plane: ControlPlane) -> AsyncIterator[list[Replica]]:
    """Two replicas' clients as the operator's own identity."""
    config = kube_config(control_plane, IDENTITY[0])
    made = [Replica(AsyncClient(config=config), cache.http_client(config)) for _ in range(2)]
    try:
        yield made
    finally:
        for replica in made:
            for task in replica.following:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await replica.client.close()
            await replica.http.aclose()


@pytest.fixture
def clients(processes: list[Replica]) -> list[AsyncClient]:
    return [replica.client for replica in processes]


def keepers(processes: list[Replica], namespace: str) -> list[LeaseKeeper]:
    return [replica.keeper(f"replica-{index}-{uuid.uuid4().hex[:6]}", namespace)
            for index, replica in enumerate(processes)]


async def resources(kube: AsyncClient, namespace: str, count: int = 8) -> list[ResourceKey]:
    """`count` ComputeResources, made in `namespace`."""
    keys = [ResourceKey(namespace, f"cluster-{index}") for index in range(count)]
    for key in keys:
        await kube.create(ComputeResource(
            metadata=ObjectMeta(name=key.name, namespace=namespace),
            spec={"files": {"protocol": "local", "path": "/tmp"},
                  "jobs": {"protocol": "local", "scheduler": "none"}}))
    return keys


async def tick_until(
    running: Sequence[LeaseKeeper], keys: list[ResourceKey],
    done: Callable[[list[Holdings]], bool], timeout: float = 30.0,
) -> list[Holdings]:
    """Tick every running replica once per retry period until `done` holds of what they hold."""
    deadline = time.monotonic() + timeout
    while True:
        held = [await keeper.tick(keys) for keeper in running]
        if done(held):
            return held
        assert time.monotonic() < deadline, f"not settled after {timeout} s: {held}"
        await asyncio.sleep(TIMINGS.retry)  # a replica's own period between ticks


async def holders(kube: AsyncClient, namespace: str) -> dict[str, str | None]:
    """Each resource Lease's holder, as the API server has it."""
    found = {}
    async for lease in kube.list(Lease, namespace=namespace,
                                 labels={kube_leases.ROLE_LABEL: Role.RESOURCE.value}):
        assert lease.metadata is not None and lease.spec is not None
        found[str(lease.metadata.name)] = lease.spec.holderIdentity
    return found


def even(held: list[Holdings]) -> bool:
    return [len(h) for h in held] == [4, 4] and not set(held[0]) & set(held[1])


async def test_two_replicas_share_eight_resources_four_each(
    kube: AsyncClient, processes: list[Replica], namespace: str
) -> None:
    a, b = keepers(processes, namespace)
    keys = await resources(kube, namespace)
    held = await tick_until([a, b], keys, even)
    stored = await holders(kube, namespace)
    assert len(stored) == 8
    assert sorted(list(stored.values()).count(me) for me in (a.me, b.me)) == [4, 4]
    for keeper, tokens in zip((a, b), held, strict=True):
        for key, token in tokens.items():
            assert token.holder == keeper.me
            assert stored[kube_leases.lease_name(Role.RESOURCE, key.name)] == keeper.me


async def test_a_replica_that_stops_renewing_is_taken_over_after_the_lease_duration(
    kube: AsyncClient, processes: list[Replica], namespace: str
) -> None:
    a, b = keepers(processes, namespace)
    keys = await resources(kube, namespace)
    await tick_until([a, b], keys, even)
    # A replica renews a Lease only once its last renewal is a retry period old: a round
    # right after the one that shared them out would renew nothing, and b may have seen a's
    # takes (which its duration is then counted from) before `silent_since`.
    await asyncio.sleep(TIMINGS.retry)
    # a's last tick: b sees its renewal at or after this moment (b's clock, not the end of
    # the round, is what the lease duration is counted from), and a never renews again
    silent_since = time.monotonic()
    before = [await keeper.tick(keys) for keeper in (a, b)]
    assert even(before)
    after = await tick_until([b], keys, lambda held: len(held[0]) == 8)
    took = time.monotonic() - silent_since
    assert took >= TIMINGS.duration, f"taken over after {took:.1f} s, before the lease expired"
    assert took <= TIMINGS.duration + 4 * TIMINGS.retry, f"takeover took {took:.1f} s"
    assert set((await holders(kube, namespace)).values()) == {b.me}
    for key, token in before[0].items():
        assert after[0][key] == FencingToken(b.me, token.transitions + 1)


async def test_a_graceful_stop_hands_every_lease_over_at_once(
    kube: AsyncClient, processes: list[Replica], namespace: str
) -> None:
    a, b = keepers(processes, namespace)
    keys = await resources(kube, namespace)
    await tick_until([a, b], keys, even)
    assert await a.tick(keys, stopping=True) == {}
    assert set((await holders(kube, namespace)).values()) == {b.me, None}
    stopped = time.monotonic()
    await tick_until([b], keys, lambda held: len(held[0]) == 8)
    assert time.monotonic() - stopped < TIMINGS.duration, "waited for the lease to expire"
    assert set((await holders(kube, namespace)).values()) == {b.me}


async def create_job(kube: AsyncClient, namespace: str, resource: str) -> dict[str, Any]:
    await kube.create(WorkflowJob(metadata=ObjectMeta(name="fenced", namespace=namespace),
                                  spec={"workflow": "x.cwl", "computeResource": resource}))
    job = await objects.get_job(kube, namespace, "fenced")
    assert job is not None
    return job


async def test_a_paused_former_holder_cannot_write_after_the_takeover(
    kube: AsyncClient, processes: list[Replica], clients: list[AsyncClient], namespace: str
) -> None:
    a, b = keepers(processes, namespace)
    keys = await resources(kube, namespace, count=1)
    [held_a] = await tick_until([a], keys, lambda held: len(held[0]) == 1)
    old = held_a[keys[0]]
    job = await create_job(kube, namespace, keys[0].name)
    assert leases.claim(FencingToken.from_status((job.get("status") or {}).get("fence")),
                        old) is Claim.WRITE
    job = await kube_leases.claim_job(clients[0], job, old)
    first = jobs.transition_patch(None, Phase.SUBMITTED,
                                  resource_version=job["metadata"]["resourceVersion"],
                                  fields={"fence": old.as_status()})
    await kube_leases.write_fenced(clients[0], namespace, "fenced", old, first)
    lease_as_a_saw_it = await read_lease(clients[0], keys[0])

    # a pauses (no more ticks); b takes the Lease once it expires and fences the job.
    [held_b] = await tick_until([b], keys, lambda held: len(held[0]) == 1)
    new = held_b[keys[0]]
    assert new == FencingToken(b.me, old.transitions + 1)
    seen_by_b = await objects.get_job(clients[1], namespace, "fenced")
    assert seen_by_b is not None
    assert leases.claim(FencingToken.from_status(seen_by_b["status"]["fence"]),
                        new) is Claim.WRITE
    await kube_leases.claim_job(clients[1], seen_by_b, new)

    # a wakes up and carries on as if it still held the resource: nothing it writes lands.
    step = jobs.transition_patch(Phase.SUBMITTED, Phase.STAGING_IN, message="from a")
    with pytest.raises(FenceRefused):
        await kube_leases.write_fenced(clients[0], namespace, "fenced", old, step)
    stale = await objects.get_job(clients[0], namespace, "fenced")
    assert stale is not None
    assert jobs.phase_of(stale) is Phase.SUBMITTED
    assert FencingToken.from_status(stale["status"]["fence"]) == new
    assert leases.claim(FencingToken.from_status(stale["status"]["fence"]), old) is Claim.STALE
    with pytest.raises(LeaseConflict):  # and its renewal of the Lease it lost
        await kube_leases.renew(clients[0], lease_as_a_saw_it)

    step = jobs.transition_patch(Phase.SUBMITTED, Phase.STAGING_IN, message="from b")
    moved = await kube_leases.write_fenced(clients[1], namespace, "fenced", new, step)
    assert jobs.phase_of(moved) is Phase.STAGING_IN
    assert moved["status"]["message"] == "from b"


async def test_a_lease_created_again_does_not_strand_the_jobs_fenced_before(
    kube: AsyncClient, processes: list[Replica], clients: list[AsyncClient], namespace: str
) -> None:
    a, _ = keepers(processes, namespace)
    keys = await resources(kube, namespace, count=1)
    job = await create_job(kube, namespace, keys[0].name)
    earlier = FencingToken(Identity("replica-of-a-deleted-lease"), 6)
    job = await kube_leases.claim_job(kube, job, earlier)
    fences = [FencingToken.from_status(job["status"].get("fence"))]
    held = await a.tick(keys, first=lambda key: leases.first_transitions(fences))
    assert held[keys[0]] == FencingToken(a.me, 7)
    assert leases.claim(fences[0], held[keys[0]]) is Claim.WRITE
    job = await kube_leases.claim_job(clients[0], job, held[keys[0]])
    step = jobs.transition_patch(None, Phase.SUBMITTED,
                                 resource_version=job["metadata"]["resourceVersion"],
                                 fields={"fence": held[keys[0]].as_status()})
    moved = await kube_leases.write_fenced(clients[0], namespace, "fenced", held[keys[0]], step)
    assert jobs.phase_of(moved) is Phase.SUBMITTED


async def test_a_holder_cut_off_from_the_api_server_stops_by_its_own_clock(
    kube: AsyncClient, processes: list[Replica], namespace: str
) -> None:
    clock = [1000.0]
    keeper = processes[0].keeper("cut-off", namespace, clock=lambda: clock[0])
    keys = await resources(kube, namespace, count=2)
    assert len(await keeper.tick(keys)) == 2
    clock[0] += TIMINGS.renew_deadline - 0.1  # no tick gets through meanwhile
    assert len(keeper.held()) == 2
    clock[0] += 0.1
    assert keeper.held() == {}


async def test_the_heartbeat_of_a_killed_replica_is_cleared_away(
    kube: AsyncClient, processes: list[Replica], namespace: str
) -> None:
    clock = [1000.0]
    a, b = (replica.keeper(name, namespace, clock=lambda: clock[0])
            for replica, name in zip(processes, ("killed", "survivor"), strict=True))
    keys = await resources(kube, namespace, count=2)
    await a.tick(keys)
    killed = kube_leases.lease_name(Role.REPLICA, "killed")
    await until(lambda: b.cache.get(namespace, killed) is not None, "b seeing a's heartbeat")
    await b.tick(keys)
    clock[0] += 4 * TIMINGS.duration  # a never ticks again
    await b.tick(keys)
    left = [lease async for lease in kube.list(
        Lease, namespace=namespace, labels={kube_leases.ROLE_LABEL: Role.REPLICA.value})]
    assert [lease.metadata.name for lease in left if lease.metadata] == [
        kube_leases.lease_name(Role.REPLICA, "survivor")]


async def test_a_resource_lease_is_owned_by_its_compute_resource_and_goes_with_it(
    kube: AsyncClient, processes: list[Replica], namespace: str
) -> None:
    [a] = keepers(processes[:1], namespace)
    [key] = await resources(kube, namespace, count=1)
    await tick_until([a], [key], lambda held: len(held[0]) == 1)
    resource = await objects.get_resource(kube, namespace, key.name)
    assert resource is not None
    lease = await kube.get(Lease, kube_leases.lease_name(Role.RESOURCE, key.name),
                           namespace=namespace)
    assert lease.metadata is not None and lease.metadata.ownerReferences is not None
    assert [(owner.kind, owner.name, owner.uid) for owner in lease.metadata.ownerReferences] \
        == [("ComputeResource", key.name, resource["metadata"]["uid"])]
    # a stops ticking (killed, say); the garbage collector deletes the Lease with its owner
    await kube.delete(ComputeResource, key.name, namespace=namespace)
    assert await eventually_gone(kube, namespace, key), "the Lease outlived its resource"


async def test_the_holder_deletes_the_lease_of_a_resource_that_is_gone(
    kube: AsyncClient, processes: list[Replica], namespace: str
) -> None:
    [a] = keepers(processes[:1], namespace)
    keys = await resources(kube, namespace, count=2)
    await tick_until([a], keys, lambda held: len(held[0]) == 2)
    # as the operator's list of resources says once it has seen keys[0] deleted
    assert set(await a.tick(keys[1:])) == {keys[1]}
    assert set(await holders(kube, namespace)) == {
        kube_leases.lease_name(Role.RESOURCE, keys[1].name)}


async def test_any_replica_clears_away_a_free_lease_whose_resource_is_gone(
    kube: AsyncClient, processes: list[Replica], clients: list[AsyncClient], namespace: str
) -> None:
    [existing] = await resources(kube, namespace, count=1)
    gone = ResourceKey(namespace, "deleted-long-ago")
    for key in (gone, existing):  # left free, without an owner, as an older operator did
        made = await kube_leases.create(clients[0], namespace, Role.RESOURCE, key.name,
                                        Identity("stopped"), 3)
        await kube_leases.release(clients[0], kube_leases.stored(made))
    [b] = keepers(processes[1:], namespace)
    await b.tick([])  # its list of resources is behind: it does not know `existing` yet
    assert set(await holders(kube, namespace)) == {
        kube_leases.lease_name(Role.RESOURCE, existing.name)}


async def read_lease(client: AsyncClient, key: ResourceKey) -> kube_leases.StoredLease:
    """A resource's Lease as the API server has it now."""
    lease = await client.get(Lease, kube_leases.lease_name(Role.RESOURCE, key.name),
                             namespace=key.namespace)
    return kube_leases.stored(lease.to_dict())


async def eventually_gone(kube: AsyncClient, namespace: str, key: ResourceKey) -> bool:
    name = kube_leases.lease_name(Role.RESOURCE, key.name)
    for _ in range(300):
        if name not in await holders(kube, namespace):
            return True
        await asyncio.sleep(0.1)
    return False


async def until(condition: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"{what} did not happen within {timeout} s"
        await asyncio.sleep(0.05)


async def test_a_holder_whose_copy_is_behind_stops_when_its_renewal_is_refused(
    kube: AsyncClient, processes: list[Replica], clients: list[AsyncClient], namespace: str
) -> None:
    clock = [1000.0]
    a = processes[0].keeper("a", namespace, clock=lambda: clock[0])
    [key] = await resources(kube, namespace, count=1)
    held = await a.tick([key])
    for task in processes[0].following:  # a's watch stops: its copy falls behind
        task.cancel()
    taken = await kube_leases.take(clients[1], await read_lease(kube, key), Identity("b"), 3)
    clock[0] += TIMINGS.retry  # a's next look, when its renewal is due
    assert await a.tick([key]) == {}
    assert await a.tick([key]) == {}
    stored = a.cache.get(namespace, kube_leases.lease_name(Role.RESOURCE, key.name))
    assert stored is not None and kube_leases.stored(stored).record.holder == "b"
    assert taken["metadata"]["resourceVersion"] == stored["metadata"]["resourceVersion"]
    assert held[key].holder == a.me
