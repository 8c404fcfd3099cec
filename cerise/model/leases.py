"""Which compute resources' Leases an operator replica takes, keeps and hands over.

One `coordination.k8s.io` Lease per ComputeResource says which replica does its work; each
replica also renews a heartbeat Lease of its own, so the others know how many share the
work. This module decides; `cerise.kube.leases` reads and writes the Leases.

Expiry is measured as Kubernetes' leader election measures it: from the moment *this*
replica saw a Lease's record change, on its own monotonic clock, never from the
`renewTime` another machine wrote (clocks differ). A holder stops its work once it has not
renewed for `renew_deadline`; others may take a Lease only after `duration` without a
change, so the two never work at once unless a holder is paused — and against that, every
job status write carries a fencing token (see `FencingToken`, and docs/operating.md,
"Operator replicas").
"""

from __future__ import annotations

import enum
import hashlib
import math
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, NewType

Identity = NewType("Identity", str)
"""A replica's identity: its pod's name and a random suffix, new at every start."""


@dataclass(frozen=True)
class ResourceKey:
    """A ComputeResource, whose Lease lives in the same namespace."""

    namespace: str
    name: str

    def __str__(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclass(frozen=True)
class Timings:
    """Lease timings, in seconds; the defaults are controller-runtime's."""

    duration: float = 15.0
    """Without a change for this long, a Lease may be taken by another replica."""
    renew_deadline: float = 10.0
    """A holder that has not renewed for this long stops the resource's work."""
    retry: float = 2.0
    """How often a replica renews its Leases and looks for Leases to take."""


@dataclass(frozen=True)
class LeaseRecord:
    """What a Lease's spec says."""

    holder: Identity | None
    """None once released: anyone may take it at once."""
    renew_time: str
    duration_seconds: int
    transitions: int


@dataclass(frozen=True)
class LeaseSeen:
    """A Lease's record and when this replica saw it change (its monotonic clock)."""

    record: LeaseRecord
    observed_at: float


@dataclass(frozen=True)
class FencingToken:
    """One tenure of one Lease: its holder and its transitions count when taken.

    Every acquisition raises the count, so a token names one tenure only and a later
    tenure's token compares greater.
    """

    holder: Identity
    transitions: int

    def as_status(self) -> dict[str, Any]:
        """The token as a job's `status.fence`."""
        return {"holder": self.holder, "transitions": self.transitions}

    @classmethod
    def from_status(cls, value: Any) -> FencingToken | None:
        """The token in a job's `status.fence`, or None if it has none (or a malformed one)."""
        if not isinstance(value, Mapping):
            return None
        holder, transitions = value.get("holder"), value.get("transitions")
        if not isinstance(holder, str) or not isinstance(transitions, int):
            return None
        return cls(Identity(holder), transitions)


@dataclass(frozen=True)
class LeasePlan:
    """What a replica does with the Leases in one tick.

    Work stops for every resource not in `acquire`, `renew` or `keep` at once, before any
    write: `release` hands a Lease over (stop first, then release), `delete` is a held
    Lease of a resource that no longer exists (stop first, then delete), `drop` is one this
    replica failed to renew in time and must no longer act for.
    """

    acquire: tuple[ResourceKey, ...] = ()
    renew: tuple[ResourceKey, ...] = ()
    keep: tuple[ResourceKey, ...] = ()
    """Held and renewed recently enough: work goes on, no write this tick."""
    release: tuple[ResourceKey, ...] = ()
    delete: tuple[ResourceKey, ...] = ()
    drop: tuple[ResourceKey, ...] = ()
    orphaned: tuple[ResourceKey, ...] = ()
    """Free or expired Leases of resources this replica does not know: deleted once the
    API server confirms the resource is gone (this replica's list may only be behind)."""


def observe(previous: LeaseSeen | None, record: LeaseRecord, now: float) -> LeaseSeen:
    """This replica's view of a Lease after reading `record` at `now`: the clock restarts
    only when the record changed."""
    if previous is not None and previous.record == record:
        return previous
    return LeaseSeen(record, now)


def acquired(record: LeaseRecord | None, me: Identity, renew_time: str,
             duration_seconds: int, *, first: int = 0) -> LeaseRecord:
    """The record of a Lease `me` takes (a new one, counting from `first`, if `record` is
    None)."""
    transitions = first if record is None else record.transitions + 1
    return LeaseRecord(me, renew_time, duration_seconds, transitions)


def first_transitions(fences: Iterable[FencingToken | None]) -> int:
    """Where a resource's new Lease starts counting: above every fence on its jobs, so a
    Lease deleted and created again does not make its new holder look older than a former
    one."""
    return max((fence.transitions + 1 for fence in fences if fence is not None), default=0)


def renewed(record: LeaseRecord, renew_time: str) -> LeaseRecord:
    """The record of a Lease its holder renews: same tenure, new time."""
    return LeaseRecord(record.holder, renew_time, record.duration_seconds, record.transitions)


def released(record: LeaseRecord, renew_time: str) -> LeaseRecord:
    """The record of a Lease handed over: no holder, so any replica may take it at once."""
    return LeaseRecord(None, renew_time, record.duration_seconds, record.transitions)


def token(record: LeaseRecord) -> FencingToken:
    """The fencing token of a held Lease's current tenure."""
    if record.holder is None:
        raise ValueError("a released Lease has no fencing token")
    return FencingToken(record.holder, record.transitions)


def expired(seen: LeaseSeen, now: float) -> bool:
    """Whether a Lease went unchanged for its whole duration, as this replica saw it."""
    return now - seen.observed_at >= seen.record.duration_seconds


def live_replicas(heartbeats: Mapping[Identity, LeaseSeen], me: Identity,
                  now: float) -> frozenset[Identity]:
    """The replicas whose heartbeat Lease has not expired, and `me`."""
    alive = {identity for identity, seen in heartbeats.items() if not expired(seen, now)}
    return frozenset(alive | {me})


def departed(heartbeats: Mapping[Identity, LeaseSeen], me: Identity, now: float,
             timings: Timings) -> frozenset[Identity]:
    """The other replicas whose heartbeat has been silent so long (four lease durations)
    that its Lease may be deleted: a killed replica never deletes its own."""
    return frozenset(identity for identity, seen in heartbeats.items()
                     if identity != me and now - seen.observed_at >= 4 * timings.duration)


def fair_share(resources: int, replicas: int) -> int:
    """The most Leases one replica holds: every resource, spread evenly, rounded up."""
    return math.ceil(resources / max(replicas, 1))


def plan(
    *,
    me: Identity,
    resources: Collection[ResourceKey],
    leases: Mapping[ResourceKey, LeaseSeen],
    replicas: Collection[Identity],
    now: float,
    timings: Timings,
    stopping: bool = False,
) -> LeasePlan:
    """Which Leases `me` takes, renews and hands over at `now`.

    `resources` are the ComputeResources that exist, `leases` the Leases seen (a resource
    missing there has none yet), `replicas` the live replicas. `me` takes free and expired
    Leases up to its fair share and hands any surplus over (another replica then has room:
    the shares add up to at least every resource); a graceful stop (`stopping`) releases
    everything at once. The Lease of a resource that is gone is deleted by its holder, or,
    once free or expired, by any replica. Replicas prefer different resources (rendezvous
    hashing), so they seldom race for the same Lease.
    """
    mine = [key for key, seen in leases.items() if seen.record.holder == me]
    current = [key for key in mine if now - leases[key].observed_at < timings.renew_deadline]
    drop = tuple(sorted((key for key in mine if key not in current), key=_order))
    if stopping:
        return LeasePlan(release=tuple(sorted(current, key=_order)), drop=drop)
    existing = set(resources)
    gone = [key for key in current if key not in existing]
    current = [key for key in current if key in existing]
    sharers = set(replicas) | {me}
    share = fair_share(len(existing), len(sharers))
    current.sort(key=lambda key: _preference(me, key), reverse=True)
    current, surplus = current[:share], current[share:]
    free = [key for key in existing if key not in leases or _takeable(leases[key], now)]
    free.sort(key=lambda key: _preference(me, key), reverse=True)
    acquire = free[:max(share - len(current), 0)]
    due = [key for key in current if now - leases[key].observed_at >= timings.retry]
    keep = [key for key in current if key not in due]
    orphaned = [key for key, seen in leases.items()
                if key not in existing and _takeable(seen, now)]
    return LeasePlan(
        acquire=tuple(sorted(acquire, key=_order)), renew=tuple(sorted(due, key=_order)),
        keep=tuple(sorted(keep, key=_order)), release=tuple(sorted(surplus, key=_order)),
        delete=tuple(sorted(gone, key=_order)), drop=drop,
        orphaned=tuple(sorted(orphaned, key=_order)),
    )


class Claim(enum.Enum):
    """What a Lease holder does with a job's fence before acting on the job."""

    WRITE = "write"
    """The fence is older (or missing): write ours, then act on the job as written."""
    HELD = "held"
    """The fence is ours already."""
    STALE = "stale"
    """The fence is newer than ours: our tenure is over; do nothing for this job."""


def claim(fence: FencingToken | None, mine: FencingToken) -> Claim:
    """Whether the holder of `mine` must write its fence on a job whose fence is `fence`."""
    if fence == mine:
        return Claim.HELD
    if fence is None or fence.transitions < mine.transitions:
        return Claim.WRITE
    return Claim.STALE


def fence_test(mine: FencingToken) -> dict[str, Any]:
    """The JSON Patch operation that makes a job status write land only for `mine`."""
    return {"op": "test", "path": "/status/fence", "value": mine.as_status()}


def _takeable(seen: LeaseSeen, now: float) -> bool:
    # Our own expired Lease too: its old tenure is dropped, a new one begins.
    return seen.record.holder is None or expired(seen, now)


def _preference(me: Identity, key: ResourceKey) -> int:
    digest = hashlib.sha256(f"{me}\0{key.namespace}\0{key.name}".encode()).digest()
    return int.from_bytes(digest[:8], "big")


def _order(key: ResourceKey) -> tuple[str, str]:
    return key.namespace, key.name
