"""Watch-fed copies of Cerise's objects, so that readers never LIST per request.

`ObjectCache.run` lists the objects, then follows a watch from that list's resourceVersion
(`cerise.kube.watch` reads it). It is supervised by itself: when the watch breaks for any
reason (410 Gone, a lost connection, an API server that is down, an event it cannot read)
it logs why, waits with back-off and lists again; only cancelling stops it. `lag` says how
long the copy has not been known to be current, for health checks. `remember` takes an
object its owner has just written, so that a client reads its own writes before the watch
delivers them. A label `selector` narrows the objects followed. Per namespace the cache
keeps its objects sorted by an `order` key and counted by a `tally` key, so that listings
cost no sort and counts no pass over the objects.
"""

from __future__ import annotations

import asyncio
import bisect
import json
import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx2 as httpx
from lightkube.config import client_adapter
from lightkube.config.kubeconfig import SingleConfig

from cerise.kube import watch
from cerise.kube.watch import Expired

Body = watch.Body
"""An object as the API server sends it, parsed from JSON."""
Key = tuple[str, str]
"""(namespace, name) of an object."""

WATCH_SECONDS = 60
"""How long the API server keeps one watch open; bookmarks arrive within it."""
READ_TIMEOUT = WATCH_SECONDS + 30.0
"""A watch that sends nothing for this long (not even its end) is taken as lost."""
PAGE = 500
"""Objects per LIST request."""
FIRST_RETRY, LAST_RETRY = 0.5, 10.0
"""Back-off, in seconds, between attempts to list again after a failure."""
STEADY = 30.0
"""Seconds a copy must have followed the API before a failure starts the back-off afresh."""

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Kind:
    """A namespaced resource's API path parts (a custom one's, or another API group's)."""

    group: str
    version: str
    plural: str
    name: str
    """The kind's name, for messages (e.g. WorkflowJob)."""

    def path(self, namespace: str | None) -> str:
        """The collection's URL path: one namespace's, or every namespace's."""
        within = f"/namespaces/{namespace}" if namespace is not None else ""
        return f"/apis/{self.group}/{self.version}{within}/{self.plural}"


def http_client(config: SingleConfig) -> httpx.AsyncClient:
    """An HTTP client for the API server of `config`, with its credentials (lightkube's)."""
    return client_adapter.AsyncClient(
        config, client_adapter.ConnectionParams(timeout=httpx.Timeout(10.0)))


def retry_delay(previous: float, followed_for: float) -> float:
    """Seconds to wait before listing again, after `previous` such seconds (0 at first) and a
    try that followed the API for `followed_for` seconds before it failed."""
    if followed_for > STEADY:
        return FIRST_RETRY
    return min(max(2 * previous, FIRST_RETRY), LAST_RETRY)


def version(body: Body) -> int:
    """An object's resourceVersion as a number (kube-apiserver's only grow)."""
    try:
        return int(body["metadata"].get("resourceVersion") or 0)
    except ValueError:
        return 0


def key_of(body: Body) -> Key:
    """The object's (namespace, name)."""
    return body["metadata"]["namespace"], body["metadata"]["name"]


def _no_key(body: Body) -> str:
    return ""


class _Namespace:
    """One namespace's objects, their order and their tally."""

    def __init__(self, order: Callable[[Body], str], tally: Callable[[Body], str]) -> None:
        self.order, self.tally = order, tally
        self.objects: dict[str, Body] = {}
        self.ordered: list[tuple[str, str]] = []
        self.counts: Counter[str] = Counter()

    def put(self, body: Body) -> None:
        name = body["metadata"]["name"]
        known = self.objects.get(name)
        place = (self.order(body), name)
        if known is None:
            bisect.insort(self.ordered, place)
        else:
            self.counts[self.tally(known)] -= 1
            if (before := (self.order(known), name)) != place:
                del self.ordered[bisect.bisect_left(self.ordered, before)]
                bisect.insort(self.ordered, place)
        self.objects[name] = body
        self.counts[self.tally(body)] += 1

    def drop(self, name: str) -> bool:
        known = self.objects.pop(name, None)
        if known is None:
            return False
        del self.ordered[bisect.bisect_left(self.ordered, (self.order(known), name))]
        self.counts[self.tally(known)] -= 1
        return True


class ObjectCache:
    """The newest known copy of every object of one kind, per namespace."""

    def __init__(
        self, http: httpx.AsyncClient, kind: Kind, *, namespace: str | None = None,
        selector: str | None = None,
        order: Callable[[Body], str] = _no_key, tally: Callable[[Body], str] = _no_key,
    ) -> None:
        self._http, self.kind, self._namespace = http, kind, namespace
        self._selector = {"labelSelector": selector} if selector else {}
        self._order, self._tally = order, tally
        self._by_namespace: dict[str, _Namespace] = {}
        self._revision = 0
        self._revisions: dict[str, int] = {}
        self._relisted = 0
        self._behind_since: float | None = time.monotonic()
        self._followed = False
        self.last_error = "not listed yet"
        """Why the copy last fell behind."""
        self.synced = asyncio.Event()

    # Reading.

    def get(self, namespace: str, name: str) -> Body | None:
        """The object, or None if it is not known."""
        found = self._by_namespace.get(namespace)
        return found.objects.get(name) if found is not None else None

    def namespaces(self) -> list[str]:
        """The namespaces that have known objects."""
        return [name for name, found in self._by_namespace.items() if found.objects]

    def in_namespace(self, namespace: str) -> list[Body]:
        """Every known object of `namespace`, in `order` (then by name)."""
        found = self._by_namespace.get(namespace)
        if found is None:
            return []
        return [found.objects[name] for _, name in found.ordered]

    def after(self, namespace: str, place: tuple[str, str], limit: int,
              *, newest_first: bool = False) -> list[Body]:
        """At most `limit` objects that come after (`order`, name) `place`, in order or
        in reverse order (``place=("", "")`` with ``newest_first=False`` starts at the
        beginning; `newest_first` with a place past every key starts at the end)."""
        found = self._by_namespace.get(namespace)
        if found is None:
            return []
        ordered = found.ordered
        if newest_first:
            end = bisect.bisect_left(ordered, place)
            chosen = ordered[max(0, end - limit):end][::-1]
        else:
            start = bisect.bisect_right(ordered, place)
            chosen = ordered[start:start + limit]
        return [found.objects[name] for _, name in chosen]

    def tallied(self, namespace: str) -> Counter[str]:
        """How many of the namespace's objects have each `tally` key."""
        found = self._by_namespace.get(namespace)
        return +found.counts if found is not None else Counter()

    def revision(self, namespace: str) -> int:
        """A number that grows whenever an object of `namespace` changes (for ETags)."""
        return max(self._relisted, self._revisions.get(namespace, 0))

    # Health.

    def lag(self) -> float:
        """Seconds since the copy was last known to follow the API server (0 while it does)."""
        if self._behind_since is None:
            return 0.0
        return time.monotonic() - self._behind_since

    # Writing.

    def remember(self, body: Body) -> None:
        """Keep `body` unless the cache already holds a newer version of it."""
        namespace, name = key_of(body)
        known = self.get(namespace, name)
        if known is None or version(known) <= version(body):
            self._space(namespace).put(body)
            self._changed(namespace)

    def forget(self, namespace: str, name: str) -> None:
        """Drop an object that no longer exists."""
        found = self._by_namespace.get(namespace)
        if found is not None and found.drop(name):
            self._changed(namespace)

    # Following the API server.

    async def run(self) -> None:
        """Keep the copy current until cancelled; every failure is logged and retried."""
        delay = 0.0
        while True:
            began = time.monotonic()
            try:
                resource_version = await self._list()
                self._caught_up()
                while True:
                    resource_version = await self._watch(resource_version)
            except Exception as error:  # cancelling is a BaseException, and ends the loop
                delay = retry_delay(delay, time.monotonic() - began)
                self._report(error, delay)
            await asyncio.sleep(delay)

    def _report(self, error: Exception, delay: float) -> None:
        """Log why the copy fell behind, as expected or not."""
        if isinstance(error, Expired):
            self._fell_behind(f"the watch expired ({error})")
            log.info("the %s watch expired; listing again in %.1f s", self.kind.name, delay)
        elif isinstance(error, httpx.HTTPError | watch.WatchFailed):
            self._fell_behind(_describe(error))
            log.warning("the %s watch broke (%s); listing again in %.1f s",
                        self.kind.name, _describe(error), delay)
        else:
            self._fell_behind(f"unexpected error: {_describe(error)}")
            log.error("unexpected error following %ss; listing again in %.1f s",
                      self.kind.name, delay, exc_info=error)

    async def _list(self) -> str:
        fresh: dict[str, _Namespace] = {}
        params = {"limit": str(PAGE), **self._selector}
        while True:
            page = await self._get_json(params)
            for body in page.get("items") or []:
                namespace, _ = key_of(body)
                space = fresh.get(namespace) or fresh.setdefault(
                    namespace, _Namespace(self._order, self._tally))
                space.put(body)
            listed = page.get("metadata") or {}
            if not listed.get("continue"):
                break
            params = {"limit": str(PAGE), "continue": listed["continue"], **self._selector}
        self._by_namespace = fresh
        self._revision += 1
        self._relisted = self._revision
        self.synced.set()
        return str(listed.get("resourceVersion") or "")

    async def _get_json(self, params: dict[str, str]) -> dict[str, Any]:
        response = await self._http.get(self.kind.path(self._namespace), params=params)
        if response.status_code == 410:
            raise Expired("the list's continue token expired")
        response.raise_for_status()
        # A page of big objects is megabytes of JSON: decode it off the event loop.
        found: dict[str, Any] = await asyncio.to_thread(json.loads, response.content)
        return found

    async def _watch(self, resource_version: str) -> str:
        """Follow one watch until the API server ends it; return the newest version seen."""
        params = {"watch": "true", "resourceVersion": resource_version,
                  "allowWatchBookmarks": "true", "timeoutSeconds": str(WATCH_SECONDS),
                  **self._selector}
        timeout = httpx.Timeout(10.0, read=READ_TIMEOUT)
        async with self._http.stream("GET", self.kind.path(self._namespace), params=params,
                                     timeout=timeout) as response:
            if response.status_code == 410:
                raise Expired("resourceVersion too old")
            if response.status_code != 200:
                await response.aread()
                response.raise_for_status()
            self._caught_up()
            async for event in watch.events(response.aiter_bytes()):
                resource_version = event.body["metadata"].get("resourceVersion") \
                    or resource_version
                if event.type == "DELETED":
                    self.forget(*key_of(event.body))
                elif event.type != "BOOKMARK":
                    self.remember(event.body)
        return resource_version

    def _space(self, namespace: str) -> _Namespace:
        found = self._by_namespace.get(namespace)
        if found is None:
            found = self._by_namespace[namespace] = _Namespace(self._order, self._tally)
        return found

    def _changed(self, namespace: str) -> None:
        self._revision += 1
        self._revisions[namespace] = self._revision

    def _caught_up(self) -> None:
        if self._behind_since is not None:
            if self._followed:
                log.info("the %s cache follows the API server again", self.kind.name)
            self._behind_since, self._followed = None, True

    def _fell_behind(self, why: str) -> None:
        self.last_error = why
        if self._behind_since is None:
            self._behind_since = time.monotonic()


def _describe(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
