"""Watch-fed copies of Cerise's objects, so that readers never LIST per request.

`ObjectCache.run` lists the objects once, then follows a watch from that list's
resourceVersion; when the watch breaks (410 Gone, a lost connection) it lists again
and replaces the whole copy. `remember` takes an object its owner has just written,
so that a client reads its own writes before the watch delivers them.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import httpx
from lightkube import ApiError, AsyncClient
from lightkube.generic_resource import GenericNamespacedResource

Body = dict[str, Any]
Key = tuple[str, str]
"""(namespace, name) of an object."""

RELIST_DELAY = 1.0
"""Seconds before listing again after the watch failed."""

log = logging.getLogger(__name__)


def version(body: Body) -> int:
    """An object's resourceVersion as a number (kube-apiserver's only grow)."""
    try:
        return int(body["metadata"].get("resourceVersion") or 0)
    except ValueError:
        return 0


def key_of(body: Body) -> Key:
    """The object's (namespace, name)."""
    return body["metadata"]["namespace"], body["metadata"]["name"]


class ObjectCache:
    """The newest known copy of every object of one kind, per namespace."""

    def __init__(
        self, client: AsyncClient, resource: type[GenericNamespacedResource],
        *, namespace: str | None = None, on_change: Callable[[], None] | None = None,
    ) -> None:
        self._client, self._resource, self._namespace = client, resource, namespace
        self._on_change = on_change
        self._by_namespace: dict[str, dict[str, Body]] = {}
        self.synced = asyncio.Event()

    def get(self, namespace: str, name: str) -> Body | None:
        """The object, or None if it is not known."""
        return self._by_namespace.get(namespace, {}).get(name)

    def in_namespace(self, namespace: str) -> list[Body]:
        """Every known object of `namespace`."""
        return list(self._by_namespace.get(namespace, {}).values())

    def all(self) -> list[Body]:
        """Every known object."""
        return [body for objects in self._by_namespace.values() for body in objects.values()]

    def remember(self, body: Body) -> None:
        """Keep `body` unless the cache already holds a newer version of it."""
        namespace, name = key_of(body)
        known = self.get(namespace, name)
        if known is None or version(known) <= version(body):
            self._by_namespace.setdefault(namespace, {})[name] = body
            self._changed()

    def forget(self, namespace: str, name: str) -> None:
        """Drop an object that no longer exists."""
        if self._by_namespace.get(namespace, {}).pop(name, None) is not None:
            self._changed()

    async def run(self) -> None:
        """Keep the copy current until cancelled."""
        while True:
            try:
                resource_version = await self._list()
                self.synced.set()
                await self._watch(resource_version)
            except (ApiError, httpx.HTTPError) as error:
                log.warning("watch of %s failed (%s); listing again",
                            self._resource.__name__, error)
            await asyncio.sleep(RELIST_DELAY)

    async def _list(self) -> str:
        listing = self._client.list(self._resource, namespace=self._namespace or "*")
        fresh: dict[str, dict[str, Body]] = {}
        async for item in listing:
            body: Body = item.to_dict()  # type: ignore[no-untyped-call]
            namespace, name = key_of(body)
            fresh.setdefault(namespace, {})[name] = body
        self._by_namespace = fresh
        self._changed()
        return str(listing.resourceVersion)

    async def _watch(self, resource_version: str) -> None:
        events = self._client.watch(self._resource, namespace=self._namespace or "*",
                                    resource_version=resource_version, server_timeout=300)
        async for event_type, item in events:
            body: Body = item.to_dict()  # type: ignore[no-untyped-call]
            if event_type == "DELETED":
                self.forget(*key_of(body))
            else:
                self.remember(body)

    def _changed(self) -> None:
        if self._on_change is not None:
            self._on_change()
