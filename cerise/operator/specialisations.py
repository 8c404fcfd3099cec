"""What the operator knows of Specialisations: the newest copy of each (from the watch, and
a listing when a resource's worker starts), what each resource's installer reported about
their projects, and the status written from those reports.

Each Specialisation's status is rebuilt whole from the reports (`specialisation.status`)
and written only when it differs from what the object already says.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from lightkube import ApiError, AsyncClient

from cerise.kube import jobs as kube_jobs
from cerise.kube import objects
from cerise.model import specialisation
from cerise.model.specialisation import Attempt, AttemptKey, Claim, Owner, Report

logger = logging.getLogger(__name__)

Body = dict[str, Any]
Key = tuple[str, str]
"""(namespace, name)."""


@dataclass
class Specialisations:
    """The operator's Specialisations and their install reports, per compute resource."""

    kube: AsyncClient
    bodies: dict[Key, Body] = field(default_factory=dict)
    reports: dict[Key, dict[str, list[Report] | None]] = field(default_factory=dict)
    """Per Specialisation: each compute resource's reports on its projects (None: the
    resource's worker is gone)."""
    attempts: dict[Key, dict[AttemptKey, Attempt]] = field(default_factory=dict)
    """Per ComputeResource: the installs tried since the operator started."""
    _locks: dict[Key, asyncio.Lock] = field(default_factory=dict)
    _listed: set[str] = field(default_factory=set)
    """The namespaces whose Specialisations were listed whole at least once."""

    def store(self, body: Body) -> None:
        """Keep the newest copy of a Specialisation."""
        key = _key(body)
        known = self.bodies.get(key)
        if known is None or _version(known) <= _version(body) \
                or known["metadata"].get("uid") != body["metadata"].get("uid"):
            self.bodies[key] = body

    def forget(self, body: Body) -> None:
        """A Specialisation was deleted."""
        key = _key(body)
        self.bodies.pop(key, None)
        self.reports.pop(key, None)

    async def load(self, namespace: str) -> None:
        """Read the namespace's Specialisations afresh (a worker starting must not miss one
        that the watch has not delivered yet)."""
        for body in await objects.list_specialisations(self.kube, namespace):
            self.store(body)
        self._listed.add(namespace)

    def listed(self, namespace: str) -> bool:
        """Whether every Specialisation of `namespace` is known (a listing succeeded)."""
        return namespace in self._listed

    async def try_load(self, namespace: str) -> None:
        """`load`, if the API server answers (the next caller tries again)."""
        try:
            await self.load(namespace)
        except ApiError as error:
            logger.warning("Specialisations of %s not listed: %s", namespace, error)

    def claims_on(self, namespace: str, resource: str) -> list[Claim]:
        """Every claim on one compute resource."""
        return [claim for (ns, _), body in sorted(self.bodies.items()) if ns == namespace
                for claim in specialisation.claims(body, resource)]

    def body_of(self, owner: Owner) -> Body | None:
        """The Specialisation a claim came from, if it still exists."""
        body = self.bodies.get((owner.namespace, owner.name))
        return body if body is not None and body["metadata"]["uid"] == owner.uid else None

    async def observe(self, namespace: str, resource: str, reports: Sequence[Report]) -> None:
        """Record one resource's reports; update the statuses of the Specialisations concerned."""
        for key in [k for k in self.bodies if k[0] == namespace]:
            own = [r for r in reports if r.owner.name == key[1]]
            per_resource = self.reports.setdefault(key, {})
            before = per_resource.get(resource)
            if own:
                per_resource[resource] = own
            else:
                per_resource.pop(resource, None)
            if per_resource.get(resource) != before:
                await self.publish(key)

    async def resource_gone(self, namespace: str, resource: str) -> None:
        """A resource's worker stopped: its reports no longer hold."""
        for key, per_resource in list(self.reports.items()):
            if key[0] == namespace and per_resource.get(resource) is not None:
                per_resource[resource] = None
                await self.publish(key)

    async def publish(self, key: Key) -> None:
        """Write the Specialisation's status if it changed."""
        async with self._locks.setdefault(key, asyncio.Lock()):
            body = self.bodies.get(key)
            if body is None:
                return
            status = specialisation.status(body, self.reports.get(key, {}), kube_jobs.now())
            current = body.get("status") or {}
            if all(current.get(k) == v for k, v in status.items()):
                return
            try:
                new = await objects.patch_specialisation_status(self.kube, *key, status)
            except ApiError as error:
                if error.status.code != 404:
                    logger.warning("Specialisation %s/%s: status not written: %s", *key, error)
                return
            self.store(new)


def _key(body: Body) -> Key:
    return body["metadata"]["namespace"], body["metadata"]["name"]


def _version(body: Body) -> int:
    try:
        return int(body["metadata"].get("resourceVersion") or 0)
    except ValueError:
        return 0
