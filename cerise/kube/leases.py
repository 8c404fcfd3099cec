"""The Leases that share compute resources out among operator replicas, and fenced job writes.

Every Lease write is a compare-and-swap on its `resourceVersion` (a replace), so of two
replicas that try to take the same Lease exactly one succeeds; `LeaseConflict` tells the
other. `LeaseKeeper.tick` carries out what `cerise.model.leases.plan` decides. A job status
write made for a resource is fenced: `claim_job` writes the holder's token into the job's
`status.fence`, and `write_fenced` lands only while that token is still there (see
docs/operating.md, "Operator replicas").
"""

from __future__ import annotations

import contextlib
import datetime
import enum
import hashlib
import logging
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Any

from lightkube import ApiError, AsyncClient
from lightkube.generic_resource import GenericNamespacedResource
from lightkube.models.coordination_v1 import LeaseSpec
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.coordination_v1 import Lease
from lightkube.types import PatchType

from cerise.kube.jobs import WorkflowJob
from cerise.model import leases as model
from cerise.model.leases import FencingToken, Identity, LeaseRecord, ResourceKey

logger = logging.getLogger(__name__)

ROLE_LABEL = "cerise.dev/lease"
SUBJECT_ANNOTATION = "cerise.dev/subject"
"""The ComputeResource or replica a Lease is for (a name may be too long for the Lease's)."""

_MAX_NAME = 253
# 409: the resourceVersion precondition failed, or the Lease exists already; 404: deleted.
_LOST_CODES = frozenset({404, 409})
# 422: a JSON Patch `test` failed; 409: the resourceVersion precondition failed.
_REFUSED_CODES = frozenset({409, 422})

Body = dict[str, Any]

DEFAULT_TIMINGS = model.Timings()


class Role(enum.StrEnum):
    """What a Lease is for."""

    RESOURCE = "compute-resource"
    REPLICA = "replica"


class LeaseConflict(Exception):
    """Another replica wrote the Lease first: read it again and decide again."""


class FenceRefused(Exception):
    """The job's fence or phase is not what the write expected: a newer holder took over,
    or another writer moved the job first."""


@dataclass(frozen=True)
class StoredLease:
    """A Lease as read from the API server."""

    namespace: str
    name: str
    role: Role
    subject: str
    record: LeaseRecord
    resource_version: str


def lease_name(role: Role, subject: str) -> str:
    """The Lease's name: `cerise-resource-<name>` or `cerise-replica-<identity>`, shortened
    with a digest when too long."""
    prefix = "cerise-resource-" if role is Role.RESOURCE else "cerise-replica-"
    name = f"{prefix}{subject}"
    if len(name) <= _MAX_NAME:
        return name
    digest = hashlib.sha256(subject.encode()).hexdigest()[:16]
    return f"{name[:_MAX_NAME - 17]}-{digest}"


async def list_leases(client: AsyncClient, namespace: str, role: Role) -> list[StoredLease]:
    """Cerise's Leases of `role` in `namespace`."""
    return [_stored(item) async for item in client.list(
        Lease, namespace=namespace, labels={ROLE_LABEL: role.value})]


async def create(client: AsyncClient, namespace: str, role: Role, subject: str,
                 holder: Identity, duration_seconds: int, *, first: int = 0) -> StoredLease:
    """Create the Lease of `subject`, held by `holder`, its transitions counted from
    `first`; LeaseConflict if it exists."""
    record = model.acquired(None, holder, _now(), duration_seconds, first=first)
    lease = Lease(
        metadata=ObjectMeta(
            name=lease_name(role, subject), namespace=namespace,
            labels={ROLE_LABEL: role.value, "app.kubernetes.io/part-of": "cerise"},
            annotations={SUBJECT_ANNOTATION: subject}),
        spec=_spec(record))
    try:
        return _stored(await client.create(lease))
    except ApiError as error:
        if error.status.code in _LOST_CODES:
            raise LeaseConflict(f"Lease {namespace}/{lease_name(role, subject)} exists") from None
        raise


async def take(client: AsyncClient, stored: StoredLease, holder: Identity,
               duration_seconds: int) -> StoredLease:
    """Take a free or expired Lease: a new tenure (its transitions count goes up)."""
    return await _write(client, stored, model.acquired(
        stored.record, holder, _now(), duration_seconds))


async def renew(client: AsyncClient, stored: StoredLease) -> StoredLease:
    """Renew a held Lease; LeaseConflict if it was taken meanwhile."""
    return await _write(client, stored, model.renewed(stored.record, _now()))


async def release(client: AsyncClient, stored: StoredLease) -> StoredLease:
    """Hand a held Lease over: no holder, so another replica takes it at once."""
    return await _write(client, stored, model.released(stored.record, _now()))


async def delete(client: AsyncClient, stored: StoredLease) -> None:
    """Delete a Lease as it was read (a replica's heartbeat, at a graceful stop)."""
    try:
        await client.delete(Lease, stored.name, namespace=stored.namespace)
    except ApiError as error:
        if error.status.code != 404:
            raise


async def claim_job(client: AsyncClient, job: Mapping[str, Any], mine: FencingToken) -> Body:
    """Write `mine` as the job's fence, if the job is unchanged since it was read; the new job.

    Check `model.claim` first: only a fence older than `mine` may be replaced, and the
    resourceVersion test keeps a newer one from being written over meanwhile. FenceRefused
    if the job changed: read it again and decide again.
    """
    meta = job["metadata"]
    status = job.get("status")
    write = ({"op": "add", "path": "/status/fence", "value": mine.as_status()} if status
             else {"op": "add", "path": "/status", "value": {"fence": mine.as_status()}})
    patch = [{"op": "test", "path": "/metadata/resourceVersion",
              "value": meta["resourceVersion"]}, write]
    return await _patch_status(client, meta["namespace"], meta["name"], patch)


async def write_fenced(client: AsyncClient, namespace: str, name: str, mine: FencingToken,
                       patch: list[dict[str, Any]]) -> Body:
    """Apply the JSON Patch `patch` to the job's status only while its fence is `mine`."""
    return await _patch_status(client, namespace, name, [model.fence_test(mine), *patch])


class LeaseKeeper:
    """One replica's Leases: its heartbeat and the compute resources it holds.

    `tick` is called every `timings.retry` seconds (and at a graceful stop, with
    `stopping`); it returns `held()`: the fencing token of every resource this replica may
    act for. Work for any other resource must stop at once.
    """

    def __init__(self, client: AsyncClient, *, me: Identity, namespace: str,
                 timings: model.Timings = DEFAULT_TIMINGS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._client, self.me, self._namespace = client, me, namespace
        self._timings, self._clock = timings, clock
        self._seen: dict[tuple[Role, str, str], model.LeaseSeen] = {}

    async def tick(self, resources: Collection[ResourceKey], *,
                   first: Callable[[ResourceKey], int] | None = None,
                   stopping: bool = False) -> dict[ResourceKey, FencingToken]:
        """Renew, take and hand over Leases as the plan says; the tokens now held.

        `first` says where a resource's Lease, if it has to be created, starts counting
        (`model.first_transitions` of its jobs' fences; 0 if not given). It is asked only
        then: it reads every job of the resource.
        """
        now = self._clock()
        heartbeats = await list_leases(self._client, self._namespace, Role.REPLICA)
        replicas = await self._beat(heartbeats, now, stopping)
        namespaces = sorted({key.namespace for key in resources}
                            | {key[1] for key in self._seen if key[0] is Role.RESOURCE})
        stored: dict[ResourceKey, StoredLease] = {}
        for namespace in namespaces:
            for lease in await list_leases(self._client, namespace, Role.RESOURCE):
                stored[ResourceKey(lease.namespace, lease.subject)] = lease
        seen = {key: self._observe(Role.RESOURCE, key.namespace, key.name, lease.record, now)
                for key, lease in stored.items()}
        self._forget(Role.RESOURCE, {(key.namespace, key.name) for key in stored})
        decided = model.plan(me=self.me, resources=resources, leases=seen, replicas=replicas,
                             now=now, timings=self._timings, stopping=stopping)
        for key in decided.drop:
            logger.warning("%s: not renewed within %.0f s: its work stops", key,
                           self._timings.renew_deadline)
        for key in decided.release:
            # The work stops first, whether or not the release lands.
            self._seen.pop((Role.RESOURCE, key.namespace, key.name), None)
            logger.info("%s: handing its Lease over", key)
            await self._write(release, stored[key], now)
        for key in decided.renew:
            await self._write(renew, stored[key], now)
        for key in decided.acquire:
            if await self._acquire(key, stored.get(key), first, now):
                logger.info("%s: took its Lease", key)
        return self.held()

    def held(self) -> dict[ResourceKey, FencingToken]:
        """The resources this replica may act for now, with their fencing tokens: Leases it
        holds and renewed within the renew deadline, by its own clock, so that a replica cut
        off from the API server stops in time even though its ticks fail."""
        now = self._clock()
        return {ResourceKey(namespace, subject): model.token(seen.record)
                for (role, namespace, subject), seen in self._seen.items()
                if role is Role.RESOURCE and seen.record.holder == self.me
                and now - seen.observed_at < self._timings.renew_deadline}

    async def _beat(self, heartbeats: list[StoredLease], now: float,
                    stopping: bool) -> frozenset[Identity]:
        """Renew (or, stopping, delete) this replica's heartbeat; the live replicas."""
        seen = {Identity(lease.subject): self._observe(
            Role.REPLICA, lease.namespace, lease.subject, lease.record, now)
            for lease in heartbeats}
        self._forget(Role.REPLICA, {(lease.namespace, lease.subject) for lease in heartbeats})
        own = next((lease for lease in heartbeats if lease.subject == self.me), None)
        if stopping:
            if own is not None:
                await delete(self._client, own)
        elif own is None:
            with contextlib.suppress(LeaseConflict):
                self._note(await create(self._client, self._namespace, Role.REPLICA, self.me,
                                        self.me, self._duration_seconds), now)
        elif now - seen[self.me].observed_at >= self._timings.retry:
            await self._write(renew, own, now)
        gone = model.departed(seen, self.me, now, self._timings)
        for lease in heartbeats:
            if lease.subject in gone:  # if it was alive after all, it creates its own again
                await delete(self._client, lease)
        return model.live_replicas(seen, self.me, now)

    async def _acquire(self, key: ResourceKey, stored: StoredLease | None,
                       first: Callable[[ResourceKey], int] | None, now: float) -> bool:
        try:
            if stored is None:
                new = await create(self._client, key.namespace, Role.RESOURCE, key.name,
                                   self.me, self._duration_seconds,
                                   first=first(key) if first is not None else 0)
            else:
                new = await take(self._client, stored, self.me, self._duration_seconds)
        except LeaseConflict:
            return False
        self._note(new, now)
        return True

    async def _write(self, verb: Callable[[AsyncClient, StoredLease], Any],
                     stored: StoredLease, now: float) -> None:
        """Renew or release; if another replica wrote the Lease first, forget it until it
        is read again."""
        try:
            new: StoredLease = await verb(self._client, stored)
        except LeaseConflict:
            self._seen.pop((stored.role, stored.namespace, stored.subject), None)
            return
        self._note(new, now)

    def _note(self, new: StoredLease, now: float) -> None:
        # Our own write counts from the tick's start, before the request: conservative
        # for the renew deadline.
        self._seen[(new.role, new.namespace, new.subject)] = model.LeaseSeen(new.record, now)

    def _observe(self, role: Role, namespace: str, subject: str, record: LeaseRecord,
                 now: float) -> model.LeaseSeen:
        key = (role, namespace, subject)
        self._seen[key] = model.observe(self._seen.get(key), record, now)
        return self._seen[key]

    def _forget(self, role: Role, present: set[tuple[str, str]]) -> None:
        for key in [key for key in self._seen if key[0] is role and key[1:] not in present]:
            del self._seen[key]

    @property
    def _duration_seconds(self) -> int:
        return max(1, round(self._timings.duration))


async def _write(client: AsyncClient, stored: StoredLease, record: LeaseRecord) -> StoredLease:
    lease = Lease(
        metadata=ObjectMeta(
            name=stored.name, namespace=stored.namespace,
            resourceVersion=stored.resource_version,
            labels={ROLE_LABEL: stored.role.value, "app.kubernetes.io/part-of": "cerise"},
            annotations={SUBJECT_ANNOTATION: stored.subject}),
        spec=_spec(record))
    try:
        return _stored(await client.replace(lease))
    except ApiError as error:
        if error.status.code in _LOST_CODES:
            raise LeaseConflict(
                f"Lease {stored.namespace}/{stored.name} changed since it was read") from None
        raise


async def _patch_status(client: AsyncClient, namespace: str, name: str,
                        patch: list[dict[str, Any]]) -> Body:
    try:
        job: GenericNamespacedResource = await client.patch(
            WorkflowJob.Status,  # type: ignore[arg-type]
            name, patch, namespace=namespace, patch_type=PatchType.JSON)
    except ApiError as error:
        if error.status.code in _REFUSED_CODES:
            raise FenceRefused(f"{namespace}/{name} was changed or taken over") from None
        raise
    body: Body = job.to_dict()  # type: ignore[no-untyped-call]
    return body


def _spec(record: LeaseRecord) -> LeaseSpec:
    return LeaseSpec(holderIdentity=record.holder, renewTime=_parse(record.renew_time),
                     leaseDurationSeconds=record.duration_seconds,
                     leaseTransitions=record.transitions)


def _stored(lease: Lease) -> StoredLease:
    meta, spec = lease.metadata, lease.spec or LeaseSpec()
    assert meta is not None and meta.name and meta.namespace and meta.resourceVersion
    renew_time = spec.renewTime.isoformat() if spec.renewTime else ""
    holder = Identity(spec.holderIdentity) if spec.holderIdentity else None
    return StoredLease(
        namespace=meta.namespace, name=meta.name,
        role=Role((meta.labels or {}).get(ROLE_LABEL, Role.RESOURCE.value)),
        subject=(meta.annotations or {}).get(SUBJECT_ANNOTATION, meta.name),
        record=LeaseRecord(holder, renew_time, spec.leaseDurationSeconds or 0,
                           spec.leaseTransitions or 0),
        resource_version=meta.resourceVersion)


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat()


def _parse(value: str) -> datetime.datetime | None:
    return datetime.datetime.fromisoformat(value) if value else None
