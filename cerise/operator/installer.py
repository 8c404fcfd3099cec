"""The Specialisation projects of one ComputeResource: every tick, decide what to install
(`specialisation.plan`), install it in the background over the resource's connection,
report to the Specialisations' status and the ComputeResource's, and tell the worker which
projects new jobs must wait for.

What is installed is read from the resource when the worker starts (and again after the
connection was lost during an install); afterwards the installer knows, since it is the
only one installing there. Every install and every failure is an Event on its
Specialisation. A failure concerns only its project on this resource.

An installed development version's source is read again from time to time and installed
again when its content digest changed. A project no Specialisation wants any more is
removed (`cerise.remote.uninstall`: running jobs keep its files), once the namespace's
Specialisations have been listed, so that an operator starting never removes a project
whose Specialisation it has not seen yet.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import tempfile
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, cast

import kopf
from lightkube import AsyncClient

from cerise.kube import objects
from cerise.model import specialisation
from cerise.model.project_files import InvalidProject
from cerise.model.specialisation import (
    Action,
    Attempt,
    Claim,
    Decision,
    Failure,
    Installed,
    Report,
    State,
)
from cerise.model.webfence import Fence
from cerise.operator import metrics, sources
from cerise.operator.specialisations import Specialisations
from cerise.remote import install, uninstall
from cerise.remote.failures import RemoteUnavailable
from cerise.remote.protocol import Remote

logger = logging.getLogger(__name__)

SOURCE_RETRY = 30.0
"""Seconds before a source that was unavailable is tried again."""
REMOVAL_RETRY = 60.0
"""Seconds before a removal that failed is tried again."""


class Installer:
    """Installs the projects that Specialisations want on one ComputeResource."""

    def __init__(
        self, *, namespace: str, resource: str, remote: Remote, api: str, prologue: str,
        kube: AsyncClient, specialisations: Specialisations, on_change: Callable[[], None],
        fence: Fence | None = None,
    ) -> None:
        self.namespace, self.resource, self.remote, self.api = namespace, resource, remote, api
        self.fence = fence
        """Where project archives may be fetched from (None: the operator's fence)."""
        self.prologue, self.kube, self.specialisations = prologue, kube, specialisations
        self._on_change = on_change
        self.attempts = specialisations.attempts.setdefault((namespace, resource), {})
        self.installed: dict[str, Installed] | None = None
        self._unknown = "checking what is installed"
        self._decisions: list[Decision] = []
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._announced: set[tuple[str, str, int, str]] = set()
        self._listed: list[dict[str, str]] | None = None
        self._installing: set[str] = set()
        self._removal_retry: dict[str, float] = {}
        self._swept = False

    async def tick(self) -> None:
        """Read what is installed (if not known), decide, start installs, report."""
        if self.installed is None:
            try:
                self.installed = await install.read_installed(self.remote, self.api)
            except OSError as error:  # RemoteUnavailable included
                self._unknown = f"cannot read what is installed: {error}"
        claims = self.specialisations.claims_on(self.namespace, self.resource)
        reports: list[Report]
        if self.installed is None:
            self._decisions = []
            reports = [Report(owner=c.owner, project=c.project, state=State.PENDING,
                              reason="Unknown", message=self._unknown) for c in claims]
        else:
            now = time.monotonic()
            self._decisions = specialisation.plan(claims, self.installed, self.attempts, now)
            reports = [self._act(decision, self.installed) for decision in self._decisions]
            for claim in specialisation.content_checks(self._decisions, self.attempts, now):
                self._start(claim.project, self._check_content(claim))
            if self.specialisations.listed(self.namespace):
                for found in specialisation.unclaimed(claims, self.installed, self.namespace):
                    if now >= self._removal_retry.get(found.project, 0.0):
                        self._start(found.project, self._remove(found))
            else:
                await self.specialisations.try_load(self.namespace)
        await self.specialisations.observe(self.namespace, self.resource, reports)
        await self._list_on_resource()

    def _act(self, decision: Decision, installed: dict[str, Installed]) -> Report:
        claim = decision.claim
        log = ""
        if decision.action is Action.INSTALL:
            self._start(claim.project, self._install(claim), installing=True)
        elif decision.action in (Action.FAILED, Action.REFUSE):
            attempt = self.attempts.get((claim.project, claim.owner.uid))
            log = attempt.failure.log if attempt and attempt.failure else ""
            announce = (claim.project, claim.owner.uid, claim.owner.generation, decision.reason)
            if decision.action is Action.REFUSE and announce not in self._announced:
                self._announced.add(announce)
                self._event(claim, "Warning", decision.reason, decision.message)
        return specialisation.report(decision, installed.get(claim.project), log)

    def waiting(self) -> dict[str, str]:
        """The projects new jobs must wait for, and why."""
        if self.installed is None:
            return {c.project: self._unknown
                    for c in self.specialisations.claims_on(self.namespace, self.resource)}
        waiting = {d.claim.project: d.message for d in self._decisions
                   if d.action is Action.INSTALL}
        return waiting | {p: "being installed" for p in self._installing if p not in waiting}

    def failures(self) -> dict[str, str]:
        """Why projects that were wanted here are not installed as wanted."""
        return {d.claim.project: d.message for d in self._decisions
                if d.action in (Action.FAILED, Action.REFUSE)
                and d.reason != specialisation.CLASH}

    def projects(self) -> frozenset[str]:
        """The projects installed here."""
        return frozenset(self.installed or {})

    async def close(self) -> None:
        """Stop installs in progress (their new directories are left for the next one)."""
        for task in self._tasks.values():
            task.cancel()
        await asyncio.gather(*self._tasks.values(), return_exceptions=True)

    def _start(self, project: str, work: Coroutine[Any, Any, None], *,
               installing: bool = False) -> None:
        """Run `work` on `project` in the background, unless something already does."""
        if project in self._tasks:
            work.close()
            return
        task = asyncio.create_task(work, name=f"project-{project}")
        self._tasks[project] = task
        if installing:
            self._installing.add(project)
        task.add_done_callback(lambda _: self._done(project))

    def _done(self, project: str) -> None:
        self._tasks.pop(project, None)
        self._installing.discard(project)
        self._on_change()

    async def _check_content(self, claim: Claim) -> None:
        """Read a development version's source again; forget its install if it changed."""
        key = (claim.project, claim.owner.uid)
        scratch = Path(await asyncio.to_thread(tempfile.mkdtemp, prefix="cerise-project-"))
        try:
            files = await sources.project(self.kube, claim.owner.namespace, claim.source,
                                          scratch, self.fence)
            digest = await asyncio.to_thread(sources.digest, files)
        except (sources.SourceUnavailable, InvalidProject) as error:
            logger.info("project %s: source not read again: %s", claim.project, error)
            digest = None
        except Exception:
            logger.exception("project %s: reading its source again failed", claim.project)
            digest = None
        finally:
            await asyncio.to_thread(shutil.rmtree, scratch, ignore_errors=True)
        attempt = self.attempts.get(key)
        if attempt is None:
            return
        # A source that cannot be read now leaves the install as it is, until the next look.
        after = specialisation.after_check(attempt, attempt.digest if digest is None else digest,
                                           claim.source, time.monotonic())
        if after is None:
            del self.attempts[key]
            self._event(claim, "Normal", "SourceChanged",
                        f"the files of {claim.project} {claim.version} changed; installing "
                        "them again")
        else:
            self.attempts[key] = after

    async def _remove(self, found: Installed) -> None:
        """Remove a project that no Specialisation wants here any more."""
        try:
            await uninstall.remove(self.remote, self.api, found)
            if not self._swept:
                await uninstall.sweep(self.remote, self.api)
                self._swept = True
        except RemoteUnavailable:
            self.installed = None
            return
        except (OSError, uninstall.RemovalFailed) as error:
            logger.warning("ComputeResource %s/%s: %s", self.namespace, self.resource, error)
            self._removal_retry[found.project] = time.monotonic() + REMOVAL_RETRY
            return
        logger.info("ComputeResource %s/%s: removed project %s of Specialisation %s, which "
                    "no Specialisation wants any more", self.namespace, self.resource,
                    found.project, found.owner)
        if self.installed is not None and self.installed.get(found.project) == found:
            del self.installed[found.project]

    async def _install(self, claim: Claim) -> None:
        what = f"project {claim.project} {claim.version} on {self.resource}"
        self._event(claim, "Normal", "Installing", f"installing {what}")
        scratch = Path(await asyncio.to_thread(tempfile.mkdtemp, prefix="cerise-project-"))
        retry_at = None
        try:
            files = await sources.project(self.kube, claim.owner.namespace, claim.source,
                                          scratch, self.fence)
            digest = await asyncio.to_thread(sources.digest, files)
            done = await install.install(
                self.remote, api=self.api, project=claim.project, version=claim.version.text,
                owner=claim.owner, files=files, prologue=self.prologue)
        except RemoteUnavailable:
            self.installed = None  # read it again once the connection is back
            return
        except sources.SourceUnavailable as error:
            failure = Failure("SourceUnavailable", f"{claim.source}: {error}; trying again "
                              f"in {SOURCE_RETRY:g} s")
            retry_at = time.monotonic() + SOURCE_RETRY
        except InvalidProject as error:
            failure = Failure("InvalidProject", f"{claim.source}: {error}")
        except install.InstallFailed as error:
            failure = error.failure
        except Exception as error:
            logger.exception("installing %s failed unexpectedly", what)
            failure = Failure("InternalError", f"{type(error).__name__}: {error}")
        else:
            if self.installed is not None:
                self.installed[claim.project] = done
            self.attempts[(claim.project, claim.owner.uid)] = specialisation.succeeded(
                claim, digest, time.monotonic())
            self._event(claim, "Normal", "Installed", f"installed {what}")
            return
        finally:
            await asyncio.to_thread(shutil.rmtree, scratch, ignore_errors=True)
        self.attempts[(claim.project, claim.owner.uid)] = Attempt(
            claim.owner.generation, claim.version.text, failure, retry_at)
        metrics.install_failed(self.namespace, self.resource)
        self._event(claim, "Warning", failure.reason, f"{what}: {failure.message}")

    def _event(self, claim: Claim, kind: str, reason: str, message: str) -> None:
        body = self.specialisations.body_of(claim.owner)
        if body is not None:
            kopf.event(cast(kopf.Body, body), type=kind, reason=reason, message=message[:1000])

    async def _list_on_resource(self) -> None:
        """Write the ComputeResource's `installedProjects` when they changed."""
        if self.installed is None:
            return
        listed = [{"name": i.project, "version": i.version, "specialisation": i.owner}
                  for _, i in sorted(self.installed.items())]
        if listed == self._listed:
            return
        status: dict[str, Any] = {"installedProjects": listed}
        try:
            await objects.patch_resource_status(self.kube, self.namespace, self.resource, status)
        except Exception as error:
            logger.warning("ComputeResource %s/%s: installed projects not written: %s",
                           self.namespace, self.resource, error)
            return
        self._listed = listed
