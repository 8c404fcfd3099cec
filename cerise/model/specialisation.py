"""Which Specialisation projects to install on a compute resource, what jobs must wait for,
and the status that says so (pure: no I/O). The rules are in docs/specialisations.md.

Every Specialisation that names a compute resource *claims* its projects there. For each
project name on a resource, `plan` decides from the claims, what is installed there (read
from the resource) and what this operator has tried since it started:

* two claims on one name: the owner of the installed copy keeps it, else the oldest
  Specialisation; the others are refused (``ProjectClash``), never installed over it;
* not installed, or a higher version wanted: install;
* a lower version wanted: refused (``DowngradeRefused``) unless ``allowDowngrade``;
* a development version (see `cerise.model.versions`): installed once per operator run
  and Specialisation generation, and again whenever its source's content changes (the
  installer compares its digest every `DEV_CHECK` seconds, `content_checks`);
* a failed attempt is not repeated for the same generation, except after a source
  that was unavailable (``retry_at``).

A project that a Specialisation of this namespace installed and that no claim on the
resource wants any more (its Specialisation was deleted, or no longer names it or the
resource) is removed (`unclaimed`), unless another Specialisation still claims the name.
"""

from __future__ import annotations

import difflib
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any

import yaml

from cerise.model import versions
from cerise.model.versions import Version


class State(StrEnum):
    """Where a project stands on one compute resource."""

    PENDING = "Pending"
    INSTALLING = "Installing"
    INSTALLED = "Installed"
    FAILED = "Failed"


class Action(StrEnum):
    """What `plan` says to do about a claim."""

    INSTALL = "install"
    KEEP = "keep"
    FAILED = "failed"
    """The last attempt for this generation failed: leave it until the spec changes."""
    REFUSE = "refuse"


@dataclass(frozen=True)
class Owner:
    """The Specialisation a claim comes from."""

    namespace: str
    name: str
    uid: str
    generation: int
    created: str
    """creationTimestamp (RFC 3339 UTC, so it sorts as time)."""

    def __str__(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclass(frozen=True)
class Source:
    """Where a project's files come from: `kind` is configMap, url or path."""

    kind: str
    value: str

    def __str__(self) -> str:
        return f"{self.kind} {self.value}"


@dataclass(frozen=True)
class Claim:
    """One project of one Specialisation, wanted on one compute resource."""

    owner: Owner
    project: str
    version: Version
    source: Source
    allow_downgrade: bool = False


@dataclass(frozen=True)
class Installed:
    """A project found installed on the compute resource."""

    project: str
    version: str
    owner_uid: str = ""
    owner: str = ""
    """The installing Specialisation as namespace/name ('' if unknown)."""
    directory: str = ""
    """The install directory its name links to ('' for a plain directory)."""


@dataclass(frozen=True)
class Failure:
    """Why an install did not happen: a CamelCase reason, a message, the script's log tail."""

    reason: str
    message: str
    log: str = ""


@dataclass(frozen=True)
class Attempt:
    """An install this operator made (or tried) for one claim."""

    generation: int
    version: str
    failure: Failure | None = None
    retry_at: float | None = None
    """For a failure that may pass (an unavailable source): when to try again."""
    digest: str = ""
    """The content digest of the files installed (for a development version)."""
    check_at: float | None = None
    """For a development version installed: when to compare its source's digest again."""


@dataclass(frozen=True)
class Decision:
    """What to do about one claim, and why."""

    claim: Claim
    action: Action
    reason: str
    message: str


@dataclass(frozen=True)
class Report:
    """One claim's state on one compute resource, as its Specialisation's status shows it."""

    owner: Owner
    project: str
    state: State
    version: str = ""
    """The installed version ('' if none)."""
    reason: str = ""
    message: str = ""
    log: str = field(default="", repr=False)

    def to_status(self) -> dict[str, Any]:
        """The entry in ``status.resources[].projects``."""
        entry: dict[str, Any] = {"name": self.project, "state": self.state.value,
                                 "reason": self.reason, "message": self.message[:MAX_MESSAGE]}
        if self.version:
            entry["version"] = self.version
        if self.log:
            entry["log"] = self.log[-MAX_MESSAGE:]
        return entry


CLASH = "ProjectClash"
DEV_CHECK = {"configMap": 5.0, "path": 5.0, "url": 60.0}
"""Seconds between two looks at a development version's source, by source kind."""
MAX_MESSAGE = 4000
"""Characters of a message (or log tail) kept in the status."""

AttemptKey = tuple[str, str]
"""(project, Specialisation uid)."""


def claims(body: Mapping[str, Any], resource: str) -> list[Claim]:
    """The claims a Specialisation makes on `resource` (none if it does not name it).

    Projects whose version does not parse are left out (the CRD's pattern keeps them out).
    """
    spec = body.get("spec") or {}
    if resource not in (spec.get("computeResources") or []):
        return []
    meta = body["metadata"]
    owner = Owner(namespace=meta["namespace"], name=meta["name"], uid=meta["uid"],
                  generation=int(meta.get("generation") or 0),
                  created=str(meta.get("creationTimestamp") or ""))
    found = []
    for project in spec.get("projects") or []:
        source = project.get("source") or {}
        kind = next((k for k in ("configMap", "url", "path") if source.get(k)), "")
        try:
            version = versions.parse(str(project.get("version", "")))
        except versions.InvalidVersion:
            continue
        found.append(Claim(owner=owner, project=project["name"], version=version,
                           source=Source(kind, str(source.get(kind, ""))),
                           allow_downgrade=bool(project.get("allowDowngrade"))))
    return found


def plan(
    claimed: Iterable[Claim], installed: Mapping[str, Installed],
    attempts: Mapping[AttemptKey, Attempt], now: float,
) -> list[Decision]:
    """A decision for every claim on one compute resource (see the module docstring)."""
    by_project: dict[str, list[Claim]] = {}
    for claim in claimed:
        by_project.setdefault(claim.project, []).append(claim)
    decisions = []
    for project, group in sorted(by_project.items()):
        present = installed.get(project)
        owners = [c for c in group if present is not None and c.owner.uid == present.owner_uid]
        winner = owners[0] if owners else min(
            group, key=lambda c: (c.owner.created, c.owner.name))
        for claim in group:
            if claim is not winner:
                decisions.append(Decision(
                    claim, Action.REFUSE, CLASH,
                    f"project {project!r} on this compute resource belongs to Specialisation "
                    f"{str(winner.owner)!r}; rename one of them"))
        decisions.append(_decide(winner, present, attempts.get((project, winner.owner.uid)), now))
    return decisions


def _decide(claim: Claim, present: Installed | None, attempt: Attempt | None,
            now: float) -> Decision:
    wanted = claim.version
    if attempt is not None and (attempt.generation, attempt.version) == (
            claim.owner.generation, wanted.text):
        if attempt.failure is None:
            return Decision(claim, Action.KEEP, "Installed", f"{wanted} is installed")
        if attempt.retry_at is None or now < attempt.retry_at:
            return Decision(claim, Action.FAILED, attempt.failure.reason,
                            attempt.failure.message)
    if present is None:
        return Decision(claim, Action.INSTALL, "Installing", f"installing {wanted}")
    try:
        have = versions.parse(present.version)
    except versions.InvalidVersion:
        return Decision(claim, Action.INSTALL, "Installing",
                        f"installing {wanted} over unreadable version {present.version!r}")
    if wanted < have and not claim.allow_downgrade:
        return Decision(
            claim, Action.REFUSE, "DowngradeRefused",
            f"{have} is installed, which is newer than {wanted}; set allowDowngrade: true "
            f"on the project to install {wanted} anyway")
    if wanted.dev:
        return Decision(claim, Action.INSTALL, "Installing",
                        f"installing development version {wanted}")
    if wanted > have:
        return Decision(claim, Action.INSTALL, "Installing", f"upgrading {have} to {wanted}")
    if wanted < have:
        return Decision(claim, Action.INSTALL, "Installing", f"downgrading {have} to {wanted}")
    return Decision(claim, Action.KEEP, "Installed", f"{have} is installed")


def content_checks(decisions: Iterable[Decision], attempts: Mapping[AttemptKey, Attempt],
                   now: float) -> list[Claim]:
    """The installed development versions whose source is due to be compared again."""
    due = []
    for decision in decisions:
        claim = decision.claim
        attempt = attempts.get((claim.project, claim.owner.uid))
        if decision.action is Action.KEEP and claim.version.dev and attempt is not None \
                and attempt.failure is None and attempt.check_at is not None \
                and now >= attempt.check_at:
            due.append(claim)
    return due


def after_check(attempt: Attempt, digest: str, source: Source, now: float) -> Attempt | None:
    """The attempt after its source was read again: None (install again) if the content
    changed, else the same with its next check."""
    if digest != attempt.digest:
        return None
    return replace(attempt, check_at=now + DEV_CHECK.get(source.kind, 60.0))


def succeeded(claim: Claim, digest: str, now: float) -> Attempt:
    """The attempt of a successful install (a development version's is checked again)."""
    check_at = now + DEV_CHECK.get(claim.source.kind, 60.0) if claim.version.dev else None
    return Attempt(claim.owner.generation, claim.version.text, digest=digest,
                   check_at=check_at)


def unclaimed(claimed: Iterable[Claim], present: Mapping[str, Installed],
              namespace: str) -> list[Installed]:
    """The projects to remove: installed by a Specialisation of `namespace`, and claimed by
    none on this resource now. Those installed by hand (no owner) or by another
    namespace's Specialisation stay."""
    wanted = {claim.project for claim in claimed}
    return [found for name, found in sorted(present.items())
            if name not in wanted and found.owner_uid and found.directory
            and found.owner.startswith(f"{namespace}/")]


def report(decision: Decision, present: Installed | None, log: str = "") -> Report:
    """How a decision shows in the Specialisation's status."""
    state = {Action.INSTALL: State.INSTALLING, Action.KEEP: State.INSTALLED}.get(
        decision.action, State.FAILED)
    claim = decision.claim
    # A clash's loser has nothing installed: the copy there is the winner's.
    version = present.version if present is not None and decision.reason != CLASH else ""
    return Report(owner=claim.owner, project=claim.project, state=state, version=version,
                  reason=decision.reason, message=decision.message, log=log)


# --- the Specialisation's status ---------------------------------------------------------

def status(
    body: Mapping[str, Any], observed: Mapping[str, Sequence[Report] | None], now: str
) -> dict[str, Any]:
    """The whole status of a Specialisation from what each target resource reported.

    A resource that has not reported yet keeps its last entry (an operator restarting must
    not flip the status); one without an entry, or whose worker is gone (None), is Pending.
    The status observes the current generation once every resource reported on it.
    """
    spec = body.get("spec") or {}
    generation = int(body["metadata"].get("generation") or 0)
    last = {entry.get("computeResource"): entry
            for entry in (body.get("status") or {}).get("resources") or []}
    current = True
    entries = []
    for resource in spec.get("computeResources") or []:
        reports = observed.get(resource)
        if reports is None:
            if resource not in observed and resource in last:
                entries.append(last[resource])
                current = False
            else:
                entries.append({"computeResource": resource, "phase": State.PENDING.value,
                                "message": f"waiting for ComputeResource {resource!r}",
                                "projects": []})
            continue
        current = current and all(r.owner.generation == generation for r in reports)
        problems = [f"{r.project}: {r.message}" for r in reports
                    if r.state is not State.INSTALLED]
        entries.append({"computeResource": resource,
                        "phase": _phase([r.state for r in reports]).value,
                        "message": "; ".join(problems)[:4 * MAX_MESSAGE],
                        "projects": [r.to_status() for r in reports]})
    phases = [State(entry["phase"]) for entry in entries]
    overall = _phase(phases) if phases else State.PENDING
    not_ready = [f"{e['computeResource']}: {e['message']}" for e in entries
                 if e["phase"] != State.INSTALLED.value]
    ready = condition(
        (body.get("status") or {}).get("conditions") or [], "Ready",
        "True" if overall is State.INSTALLED else "False",
        {State.INSTALLED: "Installed", State.INSTALLING: "Installing",
         State.FAILED: "InstallFailed", State.PENDING: "Pending"}[overall],
        "every project is installed on every compute resource" if not not_ready
        else "; ".join(not_ready)[:MAX_MESSAGE], now)
    if not current:  # some resource has not decided on this generation yet
        generation = int((body.get("status") or {}).get("observedGeneration") or 0)
    return {"observedGeneration": generation, "resources": entries, "conditions": [ready]}


def _phase(states: Collection[State]) -> State:
    for state in (State.FAILED, State.INSTALLING, State.PENDING):
        if state in states:
            return state
    return State.INSTALLED


def condition(
    old: Iterable[Mapping[str, Any]], kind: str, value: str, reason: str, message: str, now: str
) -> dict[str, Any]:
    """A condition whose lastTransitionTime changes only when its status flips."""
    previous = next((c for c in old if c.get("type") == kind), None)
    since = now
    if previous is not None and previous.get("status") == value:
        since = previous.get("lastTransitionTime") or now
    return {"type": kind, "status": value, "reason": reason, "message": message,
            "lastTransitionTime": since}


# --- jobs ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class StepUse:
    """A workflow step's use of a project."""

    step: str
    run: str


def projects_used(text: str) -> dict[str, StepUse]:
    """The projects a workflow's steps run (each with its first step), read leniently.

    Whatever is not a well-formed workflow yields nothing here: the full check says why.
    """
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError:
        return {}
    steps = document.get("steps") if isinstance(document, dict) else None
    if not isinstance(steps, dict):
        return {}
    used: dict[str, StepUse] = {}
    for name, step in steps.items():
        run = step.get("run") if isinstance(step, dict) else None
        if isinstance(run, str) and "/" in run.removeprefix("./"):
            used.setdefault(run.removeprefix("./").split("/", 1)[0], StepUse(str(name), run))
    return used


def waiting_message(projects: Mapping[str, str], resource: str) -> str:
    """What a job waiting for project installs says; `projects` maps each to why."""
    each = ", ".join(f"{name!r} ({why})" for name, why in sorted(projects.items()))
    plural = "s" if len(projects) > 1 else ""
    return f"waiting for project{plural} {each} on compute resource {resource!r}"


def missing_project(
    project: str, use: StepUse, installed: Collection[str], failures: Mapping[str, str],
    resource: str,
) -> str:
    """Why a step of a project that is not installed cannot run, with the closest names."""
    where = f"step {use.step!r} runs {use.run!r}"
    if project in failures:
        return (f"{where}, but project {project!r} could not be installed on compute resource "
                f"{resource!r}: {failures[project]}")
    close = difflib.get_close_matches(project, sorted(installed), n=3, cutoff=0.6)
    hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
    known = ", ".join(sorted(installed)) or "none"
    return (f"{where}, but there is no project {project!r} on compute resource {resource!r}"
            f"{hint} (installed: {known})")
