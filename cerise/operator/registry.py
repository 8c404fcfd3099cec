"""What the operator knows: the newest copy of every WorkflowJob and Specialisation, and
the resource workers.

Fed by the watch (kopf's event handlers); read by the workers on every tick, so a worker
never lists jobs from the API server. 10,000 jobs are 10,000 dict entries, not tasks.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import kopf
from lightkube import ApiError, AsyncClient

from cerise.archive import published, records
from cerise.kube import jobs as kube_jobs
from cerise.kube import objects
from cerise.model import callbacks, compute, states
from cerise.model.compute import InvalidResource
from cerise.model.exchange import Layout
from cerise.model.states import Phase
from cerise.operator import resources
from cerise.operator.context import Body
from cerise.operator.deletion import StillStopping
from cerise.operator.specialisations import Specialisations
from cerise.operator.transitions import Transitions
from cerise.operator.worker import ResourceChanged, ResourceWorker
from cerise.remote import executor

logger = logging.getLogger(__name__)

RETRY_BROKEN_RESOURCE = 30.0
"""Seconds before a ComputeResource that could not be used is tried again."""
GIVE_UP_REMOTE_CLEANUP = 30
"""Tries (10 s apart) at removing a deleted job's remote files before leaving them."""

ResourceKey = tuple[str, str]
"""(namespace, name) of a ComputeResource."""


def resource_of(body: Body) -> ResourceKey:
    """The ComputeResource a job runs on."""
    return body["metadata"]["namespace"], body["spec"]["computeResource"]


@dataclass
class Registry:
    """The operator's shared state, created at start-up."""

    kube: AsyncClient
    exchange: Layout
    """The file exchange; a namespace's own when its URL names ``{namespace}``."""
    jobs: dict[str, Body] = field(default_factory=dict)
    workers: dict[ResourceKey, ResourceWorker] = field(default_factory=dict)
    active: dict[ResourceKey, dict[str, Body]] = field(default_factory=dict)
    """The jobs a worker still has work for (not final or with a callback to deliver, not
    being deleted), per resource:
    a tick costs in proportion to them, not to every job ever run."""
    specialisations: Specialisations = field(init=False)
    transitions: Transitions = field(init=False)
    """Writes a new job's first phase."""

    def __post_init__(self) -> None:
        self.specialisations = Specialisations(self.kube)
        self.transitions = Transitions(self.kube, remember=self.remember,
                                       log_path=self._log_path)

    def jobs_on(self, key: ResourceKey) -> list[Body]:
        """The active jobs of one compute resource."""
        return list(self.active.get(key, {}).values())

    def _store(self, body: Body) -> None:
        # managedFields (who wrote which field) is most of a job's size and of no use here:
        # 10,000 jobs would hold hundreds of MB of it.
        body = {**body, "metadata": {key: value for key, value in body["metadata"].items()
                                     if key != "managedFields"}}
        uid = body["metadata"]["uid"]
        self.jobs[uid] = body
        on_resource = self.active.setdefault(resource_of(body), {})
        finished = kube_jobs.phase_of(body) in states.FINAL and not callbacks.pending(body)
        if finished or body["metadata"].get("deletionTimestamp"):
            on_resource.pop(uid, None)
        else:
            on_resource[uid] = body

    def _forget(self, body: Body) -> None:
        uid = body["metadata"]["uid"]
        self.jobs.pop(uid, None)
        self.active.get(resource_of(body), {}).pop(uid, None)

    async def job_event(self, event_type: str | None, body: Body) -> None:
        """Record a job's newest state; give a new job its first phase; wake its worker."""
        if event_type == "DELETED":
            self._forget(body)
            return
        known = self.jobs.get(body["metadata"]["uid"])
        if known is not None and _version(known) > _version(body):
            return  # our own write already gave us something newer
        self._store(body)
        if kube_jobs.phase_of(body) is None and not body["metadata"].get("deletionTimestamp"):
            await self._initialise(body)
        worker = self.workers.get(resource_of(body))
        if worker is not None:
            worker.wake.set()

    async def _initialise(self, body: Body) -> None:
        """Give a new job its first phase (a lost race: a newer version is on its way)."""
        resource = body["spec"]["computeResource"]
        waiting = "" if resource_of(body) in self.workers else (
            f"; waiting for ComputeResource {resource!r}")
        await self.transitions.move(body, None, Phase.SUBMITTED, f"accepted{waiting}")

    def _log_path(self, body: Body) -> Path:
        meta = body["metadata"]
        return self.exchange.for_namespace(meta["namespace"]).log_path(meta["uid"])

    async def specialisation_event(self, event_type: str | None, body: Body) -> None:
        """Record a Specialisation's newest state; the workers of its namespace re-plan."""
        if event_type == "DELETED":
            self.specialisations.forget(body)
        else:
            self.specialisations.store(body)
            await self.specialisations.publish(
                (body["metadata"]["namespace"], body["metadata"]["name"]))
        for (namespace, _), worker in self.workers.items():
            if namespace == body["metadata"]["namespace"]:
                worker.wake.set()

    def remember(self, body: Body) -> None:
        """Keep a body the operator itself just wrote (newer than the watch may have yet)."""
        known = self.jobs.get(body["metadata"]["uid"])
        if known is None or _version(known) <= _version(body):
            self._store(body)

    async def run_worker(
        self, namespace: str, name: str, spec: dict[str, Any], stopped: kopf.DaemonStopped,
        generation: Callable[[], int | None] = lambda: None, uid: str = "",
    ) -> None:
        """Run the worker of one ComputeResource until the daemon is stopped.

        A resource that cannot be used (bad spec or Secret) says why in its status, and
        kopf retries it later: the Secret may yet be created or fixed. When the spec
        changes (`generation` tells the current one), kopf starts the worker again at once
        with the new spec.
        """
        try:
            parsed = compute.parse_spec(spec)
            secret = await self._credentials(namespace, parsed.credentials_secret)
            jump_secrets = await objects.secrets_data(
                self.kube, namespace, (jump.credentials_secret for jump in parsed.jump_hosts))
            remote = await resources.remote_for(parsed, secret, jump_secrets)
            scheduler = resources.scheduler_for(parsed)
        except (InvalidResource, objects.SecretUnavailable) as error:
            await objects.patch_resource_status(
                self.kube, namespace, name,
                {"connected": False, "lastError": str(error), "lastPoll": kube_jobs.now()})
            raise kopf.TemporaryError(str(error), delay=RETRY_BROKEN_RESOURCE) from None
        try:
            await self.specialisations.load(namespace)
            # Not to wait for the watch to go through every job (10,000 take kopf a while)
            # before polling the ones in flight again after a restart.
            for body in await objects.list_jobs(self.kube, namespace):
                self.remember(body)
        except ApiError as error:  # the watch delivers them all the same
            logger.warning("Specialisations or jobs of %s not listed: %s", namespace, error)
        worker = ResourceWorker(
            namespace=namespace, name=name, spec=parsed, remote=remote, scheduler=scheduler,
            kube=self.kube, exchange=self.exchange.for_namespace(namespace),
            jobs=lambda: self.jobs_on((namespace, name)), remember=self.remember,
            specialisations=self.specialisations, generation=generation, uid=uid,
            secret=secret,
            credentials=lambda: self._credentials(namespace, parsed.credentials_secret),
        )
        self.workers[(namespace, name)] = worker
        for body in self.jobs_on((namespace, name)):
            if kube_jobs.phase_of(body) is None:
                await self._initialise(body)
        try:
            await worker.run(stopped)
        except ResourceChanged as changed:
            raise kopf.TemporaryError(str(changed), delay=0.5) from None
        finally:
            if self.workers.get((namespace, name)) is worker:
                del self.workers[(namespace, name)]
            reason = stopped.reason or kopf.DaemonStoppingReason(0)
            if kopf.DaemonStoppingReason.RESOURCE_DELETED in reason:  # not when exiting
                await self.specialisations.resource_gone(namespace, name)

    async def _credentials(self, namespace: str, secret: str | None) -> dict[str, str] | None:
        """The data of a resource's credentials Secret, read now (None if it names none)."""
        if not secret:
            return None
        return await objects.secret_data(self.kube, namespace, secret)

    async def delete_job(self, body: Body, retry: int) -> None:
        """Clean up after a job that is being deleted: remote side, then published files.

        While its remote job is stopping, the deletion is tried again shortly; while the
        compute resource is unreachable or its commands fail (time-outs included), every
        10 s, and after `GIVE_UP_REMOTE_CLEANUP` tries it goes ahead and says what was
        left behind.
        """
        worker = self.workers.get(resource_of(body))
        if worker is not None:
            try:
                await worker.delete(body, retry)
            except StillStopping as waiting:
                raise kopf.TemporaryError(str(waiting), delay=waiting.delay) from None
            except (OSError, executor.RemoteCommandFailed) as error:
                # OSError: the connection (RemoteUnavailable, CommandTimedOut) or SFTP.
                if retry < GIVE_UP_REMOTE_CLEANUP:
                    raise kopf.TemporaryError(f"cannot clean up yet: {error}", delay=10) from None
                kopf.event(cast(kopf.Body, body), type="Warning", reason="CleanupIncomplete",
                           message=f"remote files of the job were left behind: {error}")
        if not records.is_archive_prune(body):  # archived: its files stay for now
            await asyncio.to_thread(published.remove, self.exchange.for_namespace(
                body["metadata"]["namespace"]), body["metadata"]["uid"])
        self._forget(body)


def _version(body: Body) -> int:
    """The resourceVersion as a number: kube-apiserver's are etcd revisions, which only grow.

    Used only to keep the operator's own newer writes from being replaced by an older watch
    event; a wrong order would merely cost a failed compare-and-swap and a re-read.
    """
    try:
        return int(body["metadata"].get("resourceVersion") or 0)
    except ValueError:
        return 0

