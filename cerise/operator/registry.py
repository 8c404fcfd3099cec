"""What the operator knows: the newest copy of every WorkflowJob and Specialisation, the
ComputeResources that exist, and the resource workers.

Fed by the watch (kopf's event handlers); read by the workers on every tick, so a worker
never lists jobs from the API server. 10,000 jobs are 10,000 dict entries, not tasks.
With replicas (`sharing`), a resource's worker runs only while this replica holds the
resource's Lease, and stops at once when it does not.
"""

from __future__ import annotations

import asyncio
import collections
import datetime
import logging
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import kopf
from lightkube import ApiError, AsyncClient

from cerise.archive import published, records
from cerise.kube import jobs as kube_jobs
from cerise.kube import objects
from cerise.model import callbacks, compute, leases, states, submissions
from cerise.model.compute import InvalidResource
from cerise.model.exchange import Layout
from cerise.model.states import Phase
from cerise.operator import resources
from cerise.operator.context import Body
from cerise.operator.deletion import StillStopping
from cerise.operator.sharing import Sharing
from cerise.operator.specialisations import Specialisations
from cerise.operator.transitions import Transitions
from cerise.operator.worker import ResourceChanged, ResourceWorker
from cerise.remote import executor
from cerise.remote.protocol import Remote
from cerise.remote.schedulers import Scheduler

logger = logging.getLogger(__name__)

RETRY_BROKEN_RESOURCE = 30.0
"""Seconds before a ComputeResource that could not be used is tried again."""
GIVE_UP_REMOTE_CLEANUP = 30
"""Tries (10 s apart) at removing a deleted job's remote files before leaving them."""
HELD_ELSEWHERE_DELAY = 5.0
"""Seconds between looks at a deleted job whose resource another replica works for."""

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
    sharing: Sharing | None = None
    """This replica's share of the resources; None: it works alone, for every resource."""
    resources: dict[ResourceKey, Mapping[str, Any]] = field(default_factory=dict)
    """The ComputeResources that exist, with their spec as the watch last showed it."""
    absent: set[ResourceKey] = field(default_factory=set)
    """ComputeResources known to be gone: deleted while watched, or found missing by a read
    (deleted before this replica started); not read again unless the watch shows them."""
    jobs: dict[str, Body] = field(default_factory=dict)
    phases: collections.Counter[tuple[str, str, str | None]] = field(
        default_factory=collections.Counter)
    """How many jobs there are per namespace, resource and phase (None: none yet), kept as
    jobs come and go: a metrics scrape does not go through every job."""
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

    @property
    def own_jobs(self) -> dict[str, Body]:
        """The jobs this replica sweeps and archives: those of the resources it holds, and
        those of resources nobody holds (gone: any replica may); all, working alone."""
        if self.sharing is None:
            return self.jobs
        held = {(key.namespace, key.name) for key in self.sharing.held}
        return {uid: body for uid, body in self.jobs.items()
                if (key := resource_of(body)) in held or key not in self.resources}

    def jobs_on(self, key: ResourceKey) -> list[Body]:
        """The active jobs of one compute resource."""
        return list(self.active.get(key, {}).values())

    def _store(self, body: Body) -> None:
        # managedFields (who wrote which field) is most of a job's size and of no use here:
        # 10,000 jobs would hold hundreds of MB of it.
        body = _compact({**body, "metadata": {
            key: value for key, value in body["metadata"].items() if key != "managedFields"}})
        uid = body["metadata"]["uid"]
        self._count(self.jobs.get(uid), -1)
        self.jobs[uid] = body
        self._count(body, 1)
        on_resource = self.active.setdefault(resource_of(body), {})
        finished = kube_jobs.phase_of(body) in states.FINAL and not callbacks.pending(body)
        if finished or body["metadata"].get("deletionTimestamp"):
            on_resource.pop(uid, None)
        else:
            on_resource[uid] = body

    def _forget(self, body: Body) -> None:
        uid = body["metadata"]["uid"]
        self._count(self.jobs.pop(uid, None), -1)
        self.active.get(resource_of(body), {}).pop(uid, None)

    def _count(self, body: Body | None, step: int) -> None:
        if body is None:
            return
        key = (*resource_of(body), kube_jobs.phase_of(body))
        self.phases[key] += step
        if self.phases[key] <= 0:
            del self.phases[key]

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
        """Give a new job its first phase (a lost race: a newer version is on its way),
        with the fence of the worker that holds its resource here, if one does: it need
        not claim the job with a write of its own."""
        resource = body["spec"]["computeResource"]
        key = resource_of(body)
        waiting = "" if key in self.workers or key in self.resources else (
            f"; waiting for ComputeResource {resource!r}")
        worker = self.workers.get(key)
        fence = worker.context.transitions.fence if worker is not None else None
        await self.transitions.change_phase(
            body, None, Phase.SUBMITTED, f"accepted{waiting}",
            {"fence": fence.as_status()} if fence is not None else None)

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

    def resource_event(self, event_type: str | None, namespace: str, name: str,
                       spec: Mapping[str, Any]) -> bool:
        """Record that a ComputeResource exists with `spec`, or no longer does; whether its
        existence is news."""
        key = (namespace, name)
        known = key in self.resources
        if event_type == "DELETED":
            self.resources.pop(key, None)
            self.absent.add(key)
        else:
            self.resources[key] = spec
            self.absent.discard(key)
        return known != (key in self.resources)

    def shared_resources(self) -> list[leases.ResourceKey]:
        """The ComputeResources to share out among the replicas."""
        return [leases.ResourceKey(*key) for key in sorted(self.resources)]

    def first_transitions(self, key: leases.ResourceKey) -> int:
        """Where a new Lease of `key` starts counting: above every fence on its jobs."""
        return leases.first_transitions(
            leases.FencingToken.from_status((body.get("status") or {}).get("fence"))
            for body in self.jobs.values() if resource_of(body) == (key.namespace, key.name))

    def remember(self, body: Body) -> None:
        """Keep a body the operator itself just wrote (newer than the watch may have yet)."""
        known = self.jobs.get(body["metadata"]["uid"])
        if known is None or _version(known) <= _version(body):
            self._store(body)

    async def run_worker(
        self, namespace: str, name: str, spec: dict[str, Any], stopped: kopf.DaemonStopped,
        generation: Callable[[], int | None] = lambda: None, uid: str = "",
    ) -> None:
        """Run the worker of one ComputeResource until the daemon is stopped: with replicas,
        only while this replica holds the resource's Lease, stopped at once when it loses
        it (and started again, with a new tenure, if it takes it again)."""
        if self.sharing is None:
            await self._work(namespace, name, spec, stopped, generation, uid, None)
            return
        key = leases.ResourceKey(namespace, name)
        stop = asyncio.ensure_future(_stopped(stopped))
        try:
            while not stopped:
                held = asyncio.ensure_future(self.sharing.until_held(key))
                await asyncio.wait({held, stop}, return_when=asyncio.FIRST_COMPLETED)
                if not held.done():
                    held.cancel()
                    return
                token = held.result()
                work = asyncio.ensure_future(
                    self._work(namespace, name, spec, stopped, generation, uid, token))
                lost = asyncio.ensure_future(self.sharing.until_lost(key, token))
                await asyncio.wait({work, lost}, return_when=asyncio.FIRST_COMPLETED)
                lost.cancel()
                if work.done():
                    work.result()  # kopf's TemporaryError (start again), or stopped
                    return
                work.cancel()
                await asyncio.gather(work, return_exceptions=True)
                logger.warning("ComputeResource %s/%s: its Lease is no longer held here; "
                               "its work stopped", namespace, name)
        finally:
            stop.cancel()

    async def _work(
        self, namespace: str, name: str, spec: dict[str, Any], stopped: kopf.DaemonStopped,
        generation: Callable[[], int | None], uid: str, fence: leases.FencingToken | None,
    ) -> None:
        """Run the worker of one ComputeResource (acting under `fence`, if sharing).

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
            worker = await self._worker(namespace, name, parsed, remote, scheduler, generation,
                                        uid, secret, fence)
        except BaseException:
            await remote.close()  # the worker closes it once it runs
            raise
        self.workers[(namespace, name)] = worker
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

    async def _worker(
        self, namespace: str, name: str, parsed: compute.ResourceSpec, remote: Remote,
        scheduler: Scheduler, generation: Callable[[], int | None], uid: str,
        secret: dict[str, str] | None, fence: leases.FencingToken | None,
    ) -> ResourceWorker:
        """A new worker of the resource, with its namespace's jobs and Specialisations
        known, and its new jobs given their first phase."""
        try:
            await self.specialisations.load(namespace)
            # Not to wait for the watch to go through every job (10,000 take kopf a while)
            # before polling the ones in flight again after a restart.
            for body in await objects.live_jobs(self.kube, namespace, name):
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
            fence=fence,
        )
        # Its budget starts from the jobs' own record, ended ones' included: a worker
        # started again (a change of the resource, a Lease handed over) opens no new minute.
        worker.context.budget.recall(time.monotonic(), submissions.ages(
            ((body.get("status") or {}).get("submittedAt") for body in self.jobs.values()
             if resource_of(body) == (namespace, name)),
            datetime.datetime.now(datetime.UTC)))
        for body in self.jobs_on((namespace, name)):
            if kube_jobs.phase_of(body) is None:
                await self._initialise(body)
        return worker

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
        if worker is None and self._held_elsewhere(resource_of(body)):
            if retry < GIVE_UP_REMOTE_CLEANUP:
                raise kopf.TemporaryError("the replica holding its ComputeResource cleans up",
                                          delay=HELD_ELSEWHERE_DELAY)
            kopf.event(cast(kopf.Body, body), type="Warning", reason="CleanupIncomplete",
                       message="remote files of the job were left behind: no replica of the "
                               "operator worked for its ComputeResource")
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


    def _held_elsewhere(self, key: ResourceKey) -> bool:
        """Whether the resource exists and its work is another replica's (or nobody's, in a
        takeover): not this one's to clean up after."""
        return (self.sharing is not None and key in self.resources
                and leases.ResourceKey(*key) not in self.sharing.held)


async def _stopped(stopped: kopf.DaemonStopped) -> None:
    await stopped.wait()


SHARED_TEXT = 64
"""Strings up to this long in a kept job are shared with every other job's equal ones."""


def _compact(value: Any) -> Any:
    """A copy of a JSON value whose keys and short strings are interned: each job decoded
    from the API has its own copy of every key ("lastTransitionTime"…) and of common
    values ("True", its resource), a third of what 10,000 kept jobs weigh."""
    if isinstance(value, dict):
        return {sys.intern(key): _compact(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_compact(item) for item in value]
    if isinstance(value, str) and len(value) <= SHARED_TEXT:
        return sys.intern(value)
    return value


def _version(body: Body) -> int:
    """The resourceVersion as a number: kube-apiserver's are etcd revisions, which only grow.

    Used only to keep the operator's own newer writes from being replaced by an older watch
    event; a wrong order would merely cost a failed compare-and-swap and a re-read.
    """
    try:
        return int(body["metadata"].get("resourceVersion") or 0)
    except ValueError:
        return 0

