"""The Leases that share compute resources out among operator replicas, and fenced job writes.

A replica reads the Leases from a watch-fed copy (`lease_cache`: one watch over every Cerise
Lease it may see), never by a LIST per tick, and keeps its own writes in that copy. Every
Lease write is a compare-and-swap on its `resourceVersion` (a replace, or a delete with
preconditions), so of two replicas that try to take the same Lease exactly one succeeds;
`LeaseConflict` tells the other, which reads that one Lease again. A resource's Lease is
owned by its ComputeResource (an ownerReference), so Kubernetes' garbage collector deletes
it with the resource; its holder deletes it too when the resource goes, and any replica
deletes a free or expired one whose resource is gone. `LeaseKeeper.tick` carries out what
`cerise.model.leases.plan` decides. A job status write made for a resource is fenced:
`claim_job` writes the holder's token into the job's `status.fence`, and `write_fenced`
lands only while that token is still there (see docs/operating.md, "Operator replicas").
"""

from __future__ import annotations

import datetime
import enum
import hashlib
import logging
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Any

import httpx2 as httpx
from lightkube import ApiError, AsyncClient
from lightkube.generic_resource import GenericNamespacedResource
from lightkube.models.coordination_v1 import LeaseSpec
from lightkube.models.meta_v1 import ObjectMeta, OwnerReference
from lightkube.resources.coordination_v1 import Lease
from lightkube.types import PatchType

from cerise.kube import cache, objects
from cerise.kube.cache import ObjectCache
from cerise.kube.jobs import GROUP, VERSION, WorkflowJob
from cerise.model import leases as model
from cerise.model.leases import FencingToken, Identity, LeaseRecord, ResourceKey

logger = logging.getLogger(__name__)

ROLE_LABEL = "cerise.dev/lease"
SUBJECT_ANNOTATION = "cerise.dev/subject"
"""The ComputeResource or replica a Lease is for (a name may be too long for the Lease's)."""
LEASES = cache.Kind("coordination.k8s.io", "v1", "leases", "Lease")

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
    uid: str
    owners: tuple[OwnerReference, ...] = ()
    """A resource's Lease: its ComputeResource."""


def lease_name(role: Role, subject: str) -> str:
    """The Lease's name: `cerise-resource-<name>` or `cerise-replica-<identity>`, shortened
    with a digest when too long."""
    prefix = "cerise-resource-" if role is Role.RESOURCE else "cerise-replica-"
    name = f"{prefix}{subject}"
    if len(name) <= _MAX_NAME:
        return name
    digest = hashlib.sha256(subject.encode()).hexdigest()[:16]
    return f"{name[:_MAX_NAME - 17]}-{digest}"


def lease_cache(http: httpx.AsyncClient, namespace: str | None) -> ObjectCache:
    """A watch-fed copy of Cerise's Leases, of both roles, in `namespace` (None: in every
    namespace); `ObjectCache.run` keeps it current."""
    return ObjectCache(http, LEASES, namespace=namespace, selector=ROLE_LABEL)


def stored(body: Body) -> StoredLease:
    """The Lease of an API server's answer (a Lease's JSON)."""
    meta, spec = body["metadata"], body.get("spec") or {}
    holder = spec.get("holderIdentity")
    # Parsed and written again, so that a Lease read back from a watch equals the one written.
    renew_time = _parse(spec.get("renewTime") or "")
    return StoredLease(
        namespace=meta["namespace"], name=meta["name"],
        role=Role((meta.get("labels") or {}).get(ROLE_LABEL, Role.RESOURCE.value)),
        subject=(meta.get("annotations") or {}).get(SUBJECT_ANNOTATION, meta["name"]),
        record=LeaseRecord(Identity(holder) if holder else None,
                           renew_time.isoformat() if renew_time else "",
                           spec.get("leaseDurationSeconds") or 0,
                           spec.get("leaseTransitions") or 0),
        resource_version=meta["resourceVersion"], uid=meta.get("uid") or "",
        owners=tuple(_owner(owner) for owner in meta.get("ownerReferences") or ()))


def has_role(body: Body, role: Role) -> bool:
    """Whether a Lease's JSON is one of `role`'s."""
    return bool((body["metadata"].get("labels") or {}).get(ROLE_LABEL) == role.value)


async def create(client: AsyncClient, namespace: str, role: Role, subject: str,
                 holder: Identity, duration_seconds: int, *, first: int = 0,
                 owner: Mapping[str, Any] | None = None) -> Body:
    """Create the Lease of `subject`, held by `holder`, its transitions counted from
    `first`, owned by `owner` (a ComputeResource's JSON) if given; the Lease as created.
    LeaseConflict if it exists."""
    record = model.acquired(None, holder, _now(), duration_seconds, first=first)
    owners = () if owner is None else (OwnerReference(
        apiVersion=f"{GROUP}/{VERSION}", kind="ComputeResource",
        name=owner["metadata"]["name"], uid=owner["metadata"]["uid"]),)
    lease = Lease(metadata=_meta(lease_name(role, subject), namespace, role, subject, owners),
                  spec=_spec(record))
    try:
        created: Lease = await client.create(lease)
    except ApiError as error:
        if error.status.code in _LOST_CODES:
            raise LeaseConflict(f"Lease {namespace}/{lease_name(role, subject)} exists") from None
        raise
    return _body(created)


async def take(client: AsyncClient, lease: StoredLease, holder: Identity,
               duration_seconds: int) -> Body:
    """Take a free or expired Lease: a new tenure (its transitions count goes up)."""
    return await _write(client, lease, model.acquired(
        lease.record, holder, _now(), duration_seconds))


async def renew(client: AsyncClient, lease: StoredLease) -> Body:
    """Renew a held Lease; LeaseConflict if it was taken meanwhile."""
    return await _write(client, lease, model.renewed(lease.record, _now()))


async def release(client: AsyncClient, lease: StoredLease) -> Body:
    """Hand a held Lease over: no holder, so another replica takes it at once."""
    return await _write(client, lease, model.released(lease.record, _now()))


async def read(client: AsyncClient, namespace: str, name: str) -> Body | None:
    """The Lease as the API server has it now, or None if there is none."""
    try:
        found: Lease = await client.get(Lease, name, namespace=namespace)
    except ApiError as error:
        if error.status.code == 404:
            return None
        raise
    return _body(found)


async def delete(http: httpx.AsyncClient, lease: StoredLease) -> None:
    """Delete a Lease as it was read: LeaseConflict if it changed since (gone already is
    fine)."""
    preconditions = {"uid": lease.uid, "resourceVersion": lease.resource_version}
    response = await http.request(
        "DELETE", f"{LEASES.path(lease.namespace)}/{lease.name}",
        json={"apiVersion": "v1", "kind": "DeleteOptions", "preconditions": preconditions})
    if response.status_code == 409:
        raise LeaseConflict(f"Lease {lease.namespace}/{lease.name} changed since it was read")
    if response.status_code != 404:
        response.raise_for_status()


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

    `cache` must be kept current (`ObjectCache.run`) while the keeper is used. `tick` is
    called every `timings.retry` seconds (and at a graceful stop, with `stopping`); it
    returns `held()`: the fencing token of every resource this replica may act for. Work for
    any other resource must stop at once.
    """

    def __init__(self, client: AsyncClient, http: httpx.AsyncClient, *, me: Identity,
                 namespace: str, watched: str | None = None,
                 timings: model.Timings = DEFAULT_TIMINGS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        """`namespace` holds the replicas' heartbeats; `watched` is the one namespace whose
        Leases the replica follows (None: every namespace's)."""
        self._client, self._http, self.me, self._namespace = client, http, me, namespace
        self._timings, self._clock = timings, clock
        self.cache = lease_cache(http, watched)
        self._seen: dict[tuple[Role, str, str], model.LeaseSeen] = {}

    async def tick(self, resources: Collection[ResourceKey], *,
                   first: Callable[[ResourceKey], int] | None = None,
                   stopping: bool = False) -> dict[ResourceKey, FencingToken]:
        """Renew, take, hand over and delete Leases as the plan says; the tokens now held.

        `first` says where a resource's Lease, if it has to be created, starts counting
        (`model.first_transitions` of its jobs' fences; 0 if not given). It is asked only
        then: it reads every job of the resource.
        """
        if not self.cache.synced.is_set():
            if stopping:  # nothing was read, so nothing was taken
                return self.held()
            await self.cache.synced.wait()
        now = self._clock()
        replicas = await self._beat(self._read(self._namespace, Role.REPLICA), now, stopping)
        found = {ResourceKey(lease.namespace, lease.subject): lease
                 for namespace in self.cache.namespaces()
                 for lease in self._read(namespace, Role.RESOURCE)}
        seen = {key: self._observe(Role.RESOURCE, key.namespace, key.name, lease.record, now)
                for key, lease in found.items()}
        self._forget(Role.RESOURCE, {(key.namespace, key.name) for key in found})
        decided = model.plan(me=self.me, resources=resources, leases=seen, replicas=replicas,
                             now=now, timings=self._timings, stopping=stopping)
        for key in decided.drop:
            logger.warning("%s: not renewed within %.0f s: its work stops", key,
                           self._timings.renew_deadline)
        for key in decided.release + decided.delete:
            # The work stops first, whether or not the write lands.
            self._seen.pop((Role.RESOURCE, key.namespace, key.name), None)
        for key in decided.release:
            logger.info("%s: handing its Lease over", key)
            await self._write(release, found[key], now)
        for key in decided.delete:
            logger.info("%s: the ComputeResource is gone: deleting its Lease", key)
            await self._delete(found[key], now)
        for key in decided.renew:
            await self._write(renew, found[key], now)
        for key in decided.acquire:
            if await self._acquire(key, found.get(key), first, now):
                logger.info("%s: took its Lease", key)
        for key in decided.orphaned:
            # Our list of resources may be behind (just started, say): ask the API server.
            if await objects.get_resource(self._client, key.namespace, key.name) is None:
                logger.info("%s: deleting the Lease left by a ComputeResource that is gone", key)
                await self._delete(found[key], now)
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

    def _read(self, namespace: str, role: Role) -> list[StoredLease]:
        return [stored(body) for body in self.cache.in_namespace(namespace)
                if has_role(body, role)]

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
                await self._delete(own, now)
        elif own is None:
            try:
                created = await create(self._client, self._namespace, Role.REPLICA, self.me,
                                       self.me, self._duration_seconds)
                self._remember_own_write(created, now)
            except LeaseConflict:
                await self._reread((Role.REPLICA, self._namespace, self.me),
                                   lease_name(Role.REPLICA, self.me), now)
        elif now - seen[self.me].observed_at >= self._timings.retry:
            await self._write(renew, own, now)
        gone = model.departed(seen, self.me, now, self._timings)
        for lease in heartbeats:
            if lease.subject in gone:  # if it renewed after all, the delete does not land
                await self._delete(lease, now)
        return model.live_replicas(seen, self.me, now)

    async def _acquire(self, key: ResourceKey, lease: StoredLease | None,
                       first: Callable[[ResourceKey], int] | None, now: float) -> bool:
        try:
            if lease is None:
                owner = await objects.get_resource(self._client, key.namespace, key.name)
                if owner is None:  # deleted meanwhile: no Lease for it
                    return False
                new = await create(self._client, key.namespace, Role.RESOURCE, key.name,
                                   self.me, self._duration_seconds,
                                   first=first(key) if first is not None else 0, owner=owner)
            else:
                new = await take(self._client, lease, self.me, self._duration_seconds)
        except LeaseConflict:
            await self._reread((Role.RESOURCE, key.namespace, key.name),
                               lease_name(Role.RESOURCE, key.name), now)
            return False
        self._remember_own_write(new, now)
        return True

    async def _write(self, verb: Callable[[AsyncClient, StoredLease], Any],
                     lease: StoredLease, now: float) -> None:
        """Renew or release (compare-and-swap)."""
        try:
            new: Body = await verb(self._client, lease)
        except LeaseConflict:
            await self._reread((lease.role, lease.namespace, lease.subject), lease.name, now)
            return
        self._remember_own_write(new, now)

    async def _delete(self, lease: StoredLease, now: float) -> None:
        try:
            await delete(self._http, lease)
        except LeaseConflict:
            await self._reread((lease.role, lease.namespace, lease.subject), lease.name, now)
            return
        self.cache.forget(lease.namespace, lease.name)

    async def _reread(self, key: tuple[Role, str, str], name: str, now: float) -> None:
        """A write was refused: the copy was behind the API server (the watch not yet
        arrived). Read that Lease again (one GET, only after a conflict) into the copy, and
        into what this replica has seen of a Lease it follows, so that a Lease another
        replica took stops being held at once, and one this replica still holds is renewed
        at the next look (one it hands over stays handed over)."""
        body = await read(self._client, key[1], name)
        if body is None:
            self.cache.forget(key[1], name)
            self._seen.pop(key, None)
            return
        self.cache.remember(body)
        if key in self._seen:
            self._observe(*key, stored(body).record, now)

    def _remember_own_write(self, new: Body, now: float) -> None:
        # Our own write counts from the tick's start, before the request: conservative
        # for the renew deadline.
        self.cache.remember(new)
        lease = stored(new)
        self._seen[(lease.role, lease.namespace, lease.subject)] = model.LeaseSeen(
            lease.record, now)

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


async def _write(client: AsyncClient, lease: StoredLease, record: LeaseRecord) -> Body:
    replacement = Lease(
        metadata=_meta(lease.name, lease.namespace, lease.role, lease.subject, lease.owners,
                       resource_version=lease.resource_version),
        spec=_spec(record))
    try:
        written: Lease = await client.replace(replacement)
    except ApiError as error:
        if error.status.code in _LOST_CODES:
            raise LeaseConflict(
                f"Lease {lease.namespace}/{lease.name} changed since it was read") from None
        raise
    return _body(written)


def _meta(name: str, namespace: str, role: Role, subject: str,
          owners: tuple[OwnerReference, ...], *, resource_version: str | None = None,
          ) -> ObjectMeta:
    return ObjectMeta(
        name=name, namespace=namespace, resourceVersion=resource_version,
        labels={ROLE_LABEL: role.value, "app.kubernetes.io/part-of": "cerise"},
        annotations={SUBJECT_ANNOTATION: subject}, ownerReferences=list(owners) or None)


def _body(lease: Lease) -> Body:
    body: Body = lease.to_dict()
    return body


def _owner(reference: Mapping[str, Any]) -> OwnerReference:
    return OwnerReference(
        apiVersion=reference["apiVersion"], kind=reference["kind"], name=reference["name"],
        uid=reference["uid"], controller=reference.get("controller"),
        blockOwnerDeletion=reference.get("blockOwnerDeletion"))


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


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat()


def _parse(value: str) -> datetime.datetime | None:
    return datetime.datetime.fromisoformat(value) if value else None
