"""The ComputeResource's own status: whether it answers, its Ready condition and Events.

Written from the resource's own observations only — the probe when its worker starts and
the one status command of each refresh — as `cerise.model.resource_health` decides; a
job's failed work never changes it (see there).
"""

from __future__ import annotations

import logging
import time
from typing import Any, cast

import kopf
from lightkube import ApiError

from cerise.kube import jobs as kube_jobs
from cerise.kube import objects
from cerise.model import resource_health
from cerise.model.resource_health import Health
from cerise.operator.context import Body, ResourceContext
from cerise.remote.failures import CommandTimedOut, RemoteUnavailable

logger = logging.getLogger(__name__)

PROBE_TIMEOUT = 30


class ResourceStatus:
    """Writes one resource's status when its health changes, and now and then."""

    def __init__(self, context: ResourceContext, observed_generation: int | None) -> None:
        self.context = context
        self.observed_generation = observed_generation
        """The ComputeResource's spec generation its worker runs with."""
        self._resource: Body = {
            "apiVersion": f"{kube_jobs.GROUP}/{kube_jobs.VERSION}", "kind": "ComputeResource",
            "metadata": {"namespace": context.namespace, "name": context.name,
                         "uid": context.uid}}
        """What Events about the resource are about."""
        self._written: tuple[Health, dict[str, Any]] | None = None
        """The health and pilot fields as last written."""
        self._written_at = float("-inf")
        self._ready_since = ""

    async def probe(self, *, survey: bool = True) -> None:
        """Say at once whether the resource answers, and for which generation of its spec;
        `survey`: list the input cache too (when the worker starts)."""
        context = self.context
        try:
            await context.remote.run("true", timeout=PROBE_TIMEOUT)
        except (RemoteUnavailable, CommandTimedOut) as error:
            await self.report(connected=False, error=str(error))
            return
        if survey and context.input_cache is not None:
            try:
                await context.input_cache.survey(context.remote)  # lists it, evicts over the limit
            except OSError as error:
                logger.warning("resource %s/%s: input cache not listed: %s",
                               context.namespace, context.name, error)
        await self.report(connected=True)

    async def report(self, *, connected: bool, error: str = "",
                     reason: str = "Unreachable") -> None:
        """Write what an observation of the resource found (`connected`, `lastError`, its
        Ready condition, pilot mode's allocations) when it changed or has not been written
        for a while; a change of its health is also an Event."""
        context = self.context
        pilot = context.pilot
        health = resource_health.judge(
            connected=connected, error=error, reason=reason,
            allocation_problem=pilot.problem if pilot is not None else None)
        extra = pilot.status_fields() if pilot is not None else {}
        previous, previous_extra = self._written or (None, None)
        now = time.monotonic()
        if not resource_health.write_due(previous, health, extra_changed=extra != previous_extra,
                                         since_written=now - self._written_at):
            return
        self._written, self._written_at = (health, extra), now
        status: dict[str, Any] = {"connected": health.connected, "lastError": health.error,
                                  **extra, "lastPoll": kube_jobs.now()}
        if self.observed_generation is not None:
            status["observedGeneration"] = self.observed_generation
        if resource_health.flipped(previous, health):
            self._ready_since = status["lastPoll"]
        status["conditions"] = [resource_health.ready_condition(health, self._ready_since)]
        if context.input_cache is not None:
            status["inputCache"] = context.input_cache.status_fields()
        notice = resource_health.notice(previous, health)
        if notice is not None:
            kopf.event(cast(kopf.Body, self._resource), type=notice.type, reason=notice.reason,
                       message=notice.message)
        try:
            await objects.patch_resource_status(context.kube, context.namespace, context.name,
                                                status)
        except ApiError as failure:
            logger.warning("resource %s/%s: status not written: %s", context.namespace,
                           context.name, failure)
