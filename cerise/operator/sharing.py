"""This replica's share of the compute resources: its Lease loop, and what it holds now.

`Sharing.run` keeps the replica's watch-fed copy of the Leases current and, every
`Timings.retry` seconds, `LeaseKeeper.tick` renews, takes, hands over and deletes this
replica's Leases as `cerise.model.leases.plan` decides, reading that copy; `Sharing`
publishes the resources held now with their fencing tokens, and each resource's worker runs
only while its resource is held, with that tenure's token (`cerise.operator.registry`). A
tick that hangs or fails does not keep work going: what is held is judged on this replica's
own clock (a Lease not renewed within the renew deadline is dropped) at every retry period,
tick or no tick. Settings, from the environment:

* ``CERISE_OPERATOR_IDENTITY`` (default ``POD_NAME``, else the host name): the replica's
  name; a random suffix is added at every start, so a restarted replica never acts on its
  former self's tenure.
* ``CERISE_LEASE_NAMESPACE`` (default ``POD_NAMESPACE``, else ``default``): where the
  replicas' heartbeat Leases live. When the operator watches that one namespace (as the
  Helm chart's does), it follows the Leases there only; otherwise in every namespace.
* ``CERISE_LEASE_DURATION``, ``CERISE_LEASE_RENEW_DEADLINE``, ``CERISE_LEASE_RETRY``:
  the timings in seconds (default 15, 10 and 2, controller-runtime's).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import socket
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass

from cerise.kube.leases import LeaseKeeper
from cerise.model.leases import FencingToken, Identity, ResourceKey, Timings
from cerise.operator.retention import positive_number

logger = logging.getLogger(__name__)

Held = Mapping[ResourceKey, FencingToken]


@dataclass(frozen=True)
class SharingSettings:
    """Who this replica is, where its heartbeat lives, and the Lease timings."""

    identity: Identity
    namespace: str
    timings: Timings
    watched: str | None = None
    """The one namespace whose Leases the replica follows (None: every namespace's)."""


def settings(environ: Mapping[str, str],
             watched: tuple[bool, tuple[str, ...]] | None = None) -> SharingSettings:
    """The sharing settings; ValueError for timings that cannot work.

    `watched` is what kopf watches (`cerise.operator.settings.watched_namespaces`)."""
    name = (environ.get("CERISE_OPERATOR_IDENTITY") or environ.get("POD_NAME")
            or socket.gethostname()).strip()
    defaults = Timings()
    timings = Timings(
        duration=positive_number(environ, "CERISE_LEASE_DURATION", defaults.duration),
        renew_deadline=positive_number(environ, "CERISE_LEASE_RENEW_DEADLINE",
                                       defaults.renew_deadline),
        retry=positive_number(environ, "CERISE_LEASE_RETRY", defaults.retry))
    if not timings.retry < timings.renew_deadline < timings.duration:
        raise ValueError(
            "the Lease timings must be CERISE_LEASE_RETRY < CERISE_LEASE_RENEW_DEADLINE < "
            f"CERISE_LEASE_DURATION, not {timings.retry} < {timings.renew_deadline} < "
            f"{timings.duration}: a holder must stop before another replica may take over")
    namespace = (environ.get("CERISE_LEASE_NAMESPACE") or environ.get("POD_NAMESPACE")
                 or "default").strip()
    return SharingSettings(
        identity=Identity(f"{name[:200]}-{secrets.token_hex(4)}"), namespace=namespace,
        timings=timings, watched=namespace if watched == (False, (namespace,)) else None)


class Sharing:
    """The resources this replica holds now, kept up to date by `run`."""

    def __init__(self, keeper: LeaseKeeper, *, timings: Timings,
                 resources: Callable[[], Collection[ResourceKey]],
                 first: Callable[[ResourceKey], int]) -> None:
        """`resources` are the ComputeResources that exist; `first(key)` is where a new
        Lease of `key` starts counting (above its jobs' fences)."""
        self._keeper, self._timings = keeper, timings
        self._resources, self._first = resources, first
        self.held: dict[ResourceKey, FencingToken] = {}
        self._changed = asyncio.Event()
        self._poked = asyncio.Event()

    @property
    def identity(self) -> Identity:
        return self._keeper.me

    async def run(self) -> None:
        """Follow the Leases and tick every retry period (or sooner, when poked), for ever."""
        following = asyncio.ensure_future(self._keeper.cache.run())
        try:
            while True:
                self._poked.clear()
                await self._tick()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self._timings.retry):
                        await self._poked.wait()
        finally:
            following.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await following

    def poke(self) -> None:
        """Tick soon: a ComputeResource appeared, or went."""
        self._poked.set()

    async def stop(self) -> None:
        """A graceful stop, once the workers have stopped: hand every Lease over at once."""
        self._publish({})
        try:
            await self._keeper.tick(self._resources(), stopping=True)
        except Exception as error:  # the others take them over after the lease duration
            logger.warning("Leases not handed over: %s", error)

    async def _tick(self) -> None:
        resources = list(self._resources())
        tick = asyncio.ensure_future(self._keeper.tick(
            resources, first=self._first))
        try:
            while not tick.done():
                await asyncio.wait({tick}, timeout=self._timings.retry)
                self._publish(self._keeper.held())  # a hung tick drops Leases all the same
        except asyncio.CancelledError:
            tick.cancel()  # stopping: no tick of ours goes on behind the hand-over
            raise
        if not tick.cancelled() and (error := tick.exception()) is not None:
            logger.warning("Leases not renewed or taken: %s", error)
        self._publish(self._keeper.held())

    def _publish(self, held: Held) -> None:
        if dict(held) == self.held:
            return
        for key in self.held.keys() - held.keys():
            logger.info("%s: no longer held by %s", key, self.identity)
        for key in held.keys() - self.held.keys():
            logger.info("%s: held by %s", key, self.identity)
        self.held = dict(held)
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    async def until_held(self, key: ResourceKey) -> FencingToken:
        """The fencing token of `key` once this replica holds it."""
        while (token := self.held.get(key)) is None:
            await self._changed.wait()
        return token

    async def until_lost(self, key: ResourceKey, token: FencingToken) -> None:
        """Return once the tenure of `token` is over."""
        while self.held.get(key) == token:
            await self._changed.wait()
