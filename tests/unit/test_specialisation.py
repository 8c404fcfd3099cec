"""What to install on a compute resource, what is refused, and the status that says so."""

from __future__ import annotations

from typing import Any

import pytest

from cerise.model import specialisation, versions
from cerise.model.specialisation import (
    Action,
    Attempt,
    Claim,
    Failure,
    Installed,
    Owner,
    Report,
    Source,
    State,
    StepUse,
)

OLD = Owner("ns", "old", "uid-old", 1, "2024-01-01T00:00:00Z")
NEW = Owner("ns", "new", "uid-new", 3, "2025-01-01T00:00:00Z")


def claim(version: str, owner: Owner = OLD, project: str = "p", **more: Any) -> Claim:
    return Claim(owner=owner, project=project, version=versions.parse(version),
                 source=Source("path", "/p"), **more)


def installed(version: str, owner: Owner = OLD, project: str = "p") -> dict[str, Installed]:
    return {project: Installed(project, version, owner_uid=owner.uid, owner=str(owner))}


def decide(wanted: Claim, present: dict[str, Installed],
           attempts: dict[tuple[str, str], Attempt] | None = None,
           now: float = 0.0) -> specialisation.Decision:
    (decision,) = specialisation.plan([wanted], present, attempts or {}, now)
    return decision


@pytest.mark.parametrize(("wanted", "present", "action"), [
    ("0.1.0", None, Action.INSTALL),
    ("0.10.0", "0.9.0", Action.INSTALL),
    ("1.0.0", "1.0.0-rc.1", Action.INSTALL),
    ("1.0.0", "1.0.0", Action.KEEP),
    ("1.0", "1.0.0", Action.KEEP),
    ("0.9.0", "0.10.0", Action.REFUSE),
    ("1.0.0-rc.1", "1.0.0", Action.REFUSE),
    ("1.3.0.dev", "1.3.0.dev", Action.INSTALL),  # not yet installed by this operator run
    ("1.3.0.dev", "1.2.0", Action.INSTALL),
    ("1.3.0.dev", "1.3.0", Action.REFUSE),
    ("1.0.0", "garbage", Action.INSTALL),
])
def test_versions_decide(wanted: str, present: str | None, action: Action) -> None:
    decision = decide(claim(wanted), installed(present) if present else {})
    assert decision.action is action, decision


def test_a_downgrade_is_refused_with_what_to_do() -> None:
    decision = decide(claim("0.9.0"), installed("0.10.0"))
    assert decision.reason == "DowngradeRefused"
    assert decision.message == ("0.10.0 is installed, which is newer than 0.9.0; set "
                                "allowDowngrade: true on the project to install 0.9.0 anyway")


def test_a_downgrade_that_is_asked_for_is_installed() -> None:
    decision = decide(claim("0.9.0", allow_downgrade=True), installed("0.10.0"))
    assert (decision.action, decision.message) == (Action.INSTALL, "downgrading 0.10.0 to 0.9.0")


def test_a_development_version_is_installed_once_per_run_and_generation() -> None:
    dev = claim("1.3.0.dev")
    done = {("p", OLD.uid): Attempt(OLD.generation, "1.3.0.dev")}
    assert decide(dev, installed("1.3.0.dev"), done).action is Action.KEEP
    changed = claim("1.3.0.dev", owner=Owner("ns", "old", "uid-old", 2, OLD.created))
    assert decide(changed, installed("1.3.0.dev"), done).action is Action.INSTALL


def test_a_failed_install_is_not_repeated_until_the_spec_changes() -> None:
    failed = {("p", OLD.uid): Attempt(OLD.generation, "2.0.0",
                                      Failure("InstallScriptFailed", "install.sh exited"))}
    decision = decide(claim("2.0.0"), installed("1.0.0"), failed)
    assert (decision.action, decision.reason) == (Action.FAILED, "InstallScriptFailed")
    assert decide(claim("2.0.1"), installed("1.0.0"), failed).action is Action.INSTALL


def test_an_unavailable_source_is_tried_again_later() -> None:
    failed = {("p", OLD.uid): Attempt(OLD.generation, "2.0.0",
                                      Failure("SourceUnavailable", "gone"), retry_at=10.0)}
    assert decide(claim("2.0.0"), {}, failed, now=9.0).action is Action.FAILED
    assert decide(claim("2.0.0"), {}, failed, now=10.0).action is Action.INSTALL


def test_a_development_version_is_compared_with_its_source_from_time_to_time() -> None:
    dev, release = claim("1.3.0.dev"), claim("1.3.0")
    assert specialisation.succeeded(release, "d1", now=0.0).check_at is None
    done = specialisation.succeeded(dev, "d1", now=0.0)
    assert done == Attempt(OLD.generation, "1.3.0.dev", digest="d1",
                           check_at=specialisation.DEV_CHECK["path"])
    decisions = specialisation.plan([dev], installed("1.3.0.dev"), {("p", OLD.uid): done}, 0.0)
    attempts = {("p", OLD.uid): done}
    assert specialisation.content_checks(decisions, attempts, now=1.0) == []
    assert specialisation.content_checks(decisions, attempts, now=5.0) == [dev]
    same = specialisation.after_check(done, "d1", dev.source, now=5.0)
    assert same is not None and same.check_at == 10.0
    assert specialisation.after_check(done, "d2", dev.source, now=5.0) is None
    # Forgotten, the attempt no longer holds the install: the plan installs it again.
    assert decide(dev, installed("1.3.0.dev"), {}).action is Action.INSTALL


def test_projects_nobody_claims_any_more_are_removed_unless_another_claims_them() -> None:
    present = {
        "p": Installed("p", "1.0.0", owner_uid=OLD.uid, owner=str(OLD), directory=".install/p/a"),
        "q": Installed("q", "1.0.0", owner_uid=OLD.uid, owner=str(OLD), directory=".install/q/a"),
        "hand": Installed("hand", "1.0.0"),
        "elsewhere": Installed("elsewhere", "1.0.0", owner_uid="uid-x", owner="other/s",
                               directory=".install/elsewhere/a"),
    }
    still = claim("1.0.0", owner=NEW, project="q")
    assert specialisation.unclaimed([still], present, "ns") == [present["p"]]
    assert specialisation.unclaimed([still, claim("1.0.0")], present, "ns") == []


def test_a_clash_goes_to_the_owner_of_the_installed_copy() -> None:
    decisions = specialisation.plan([claim("1.0.0", OLD), claim("2.0.0", NEW)],
                                    installed("1.0.0", NEW), {}, 0.0)
    by_owner = {d.claim.owner.name: d for d in decisions}
    assert by_owner["new"].action is Action.INSTALL
    assert (by_owner["old"].action, by_owner["old"].reason) == (Action.REFUSE, "ProjectClash")
    assert "belongs to Specialisation 'ns/new'" in by_owner["old"].message


def test_a_clash_on_a_free_name_goes_to_the_oldest_specialisation() -> None:
    decisions = specialisation.plan([claim("2.0.0", NEW), claim("1.0.0", OLD)], {}, {}, 0.0)
    assert {d.claim.owner.name: d.action for d in decisions} == {
        "old": Action.INSTALL, "new": Action.REFUSE}


def test_projects_side_by_side_are_decided_each_on_its_own() -> None:
    decisions = specialisation.plan(
        [claim("1.0.0", project="a"), claim("1.0.0", NEW, project="b")],
        {**installed("1.0.0", project="a"), **installed("0.5.0", NEW, project="b")}, {}, 0.0)
    assert [(d.claim.project, d.action) for d in decisions] == [
        ("a", Action.KEEP), ("b", Action.INSTALL)]


def test_claims_come_from_a_specialisation_that_names_the_resource() -> None:
    body = {"metadata": {"namespace": "ns", "name": "s", "uid": "u", "generation": 4,
                         "creationTimestamp": "2025-01-01T00:00:00Z"},
            "spec": {"computeResources": ["hpc"], "projects": [
                {"name": "a", "version": "1.0.0", "source": {"configMap": "a-files"}},
                {"name": "b", "version": "2.0.0.dev", "allowDowngrade": True,
                 "source": {"url": "https://example.org/b.tar.gz"}}]}}
    assert specialisation.claims(body, "other") == []
    a, b = specialisation.claims(body, "hpc")
    assert (a.project, a.version.text, a.source, a.allow_downgrade, a.owner.generation) == (
        "a", "1.0.0", Source("configMap", "a-files"), False, 4)
    assert (b.source.kind, b.allow_downgrade, b.version.dev) == ("url", True, True)


def body_with(resources: list[str], conditions: list[dict[str, Any]] | None = None
              ) -> dict[str, Any]:
    return {"metadata": {"namespace": "ns", "name": "old", "uid": OLD.uid,
                         "generation": OLD.generation},
            "spec": {"computeResources": resources},
            "status": {"conditions": conditions or []}}


def test_the_status_is_ready_when_every_project_is_installed_everywhere() -> None:
    reports = {"a": [Report(OLD, "p", State.INSTALLED, "1.0.0", "Installed", "1.0.0 is "
                            "installed")],
               "b": [Report(OLD, "p", State.INSTALLED, "1.0.0", "Installed", "")]}
    status = specialisation.status(body_with(["a", "b"]), reports, "T1")
    assert status["observedGeneration"] == OLD.generation
    assert [r["phase"] for r in status["resources"]] == ["Installed", "Installed"]
    assert status["resources"][0]["projects"] == [
        {"name": "p", "version": "1.0.0", "state": "Installed", "reason": "Installed",
         "message": "1.0.0 is installed"}]
    (ready,) = status["conditions"]
    assert (ready["status"], ready["reason"], ready["lastTransitionTime"]) == (
        "True", "Installed", "T1")


def test_a_failure_on_one_resource_shows_with_its_log() -> None:
    reports = {"a": [Report(OLD, "p", State.FAILED, "1.0.0", "InstallScriptFailed",
                            "install.sh exited with status 3", log="no compiler\n")]}
    status = specialisation.status(body_with(["a", "missing"]), reports, "T1")
    a, missing = status["resources"]
    assert (a["phase"], a["projects"][0]["log"]) == ("Failed", "no compiler\n")
    assert a["message"] == "p: install.sh exited with status 3"
    assert (missing["phase"], missing["message"]) == (
        "Pending", "waiting for ComputeResource 'missing'")
    (ready,) = status["conditions"]
    assert (ready["status"], ready["reason"]) == ("False", "InstallFailed")
    assert ready["message"].startswith("a: p: install.sh exited with status 3; missing: ")


def test_a_condition_keeps_its_time_until_it_flips() -> None:
    old = [{"type": "Ready", "status": "False", "lastTransitionTime": "T0"}]
    installing = {"a": [Report(OLD, "p", State.INSTALLING, "", "Installing", "installing")]}
    (same,) = specialisation.status(body_with(["a"], old), installing, "T1")["conditions"]
    assert same["lastTransitionTime"] == "T0"
    done = {"a": [Report(OLD, "p", State.INSTALLED, "1.0.0", "Installed", "")]}
    (flipped,) = specialisation.status(body_with(["a"], old), done, "T2")["conditions"]
    assert flipped["lastTransitionTime"] == "T2"


def test_the_status_observes_a_generation_once_every_resource_decided_on_it() -> None:
    body = body_with(["a", "b"])
    body["metadata"]["generation"], body["status"]["observedGeneration"] = 7, 6
    newer = Owner("ns", "old", OLD.uid, 7, OLD.created)
    reports = {"a": [Report(newer, "p", State.INSTALLED, "1.0.0", "Installed", "")],
               "b": [Report(OLD, "p", State.INSTALLED, "0.9.0", "Installed", "")]}
    assert specialisation.status(body, reports, "T")["observedGeneration"] == 6
    reports["b"] = [Report(newer, "p", State.INSTALLING, "0.9.0", "Installing", "")]
    assert specialisation.status(body, reports, "T")["observedGeneration"] == 7


def test_a_resource_that_has_not_reported_yet_keeps_its_entry() -> None:
    entry = {"computeResource": "a", "phase": "Installed", "message": "", "projects": []}
    body = body_with(["a", "gone"], [{"type": "Ready", "status": "True",
                                      "lastTransitionTime": "T0"}])
    body["status"] |= {"resources": [entry, {**entry, "computeResource": "gone"}],
                       "observedGeneration": 0}
    status = specialisation.status(body, {"gone": None}, "T1")
    kept, gone = status["resources"]
    assert kept == entry
    assert (gone["phase"], gone["message"]) == ("Pending", "waiting for ComputeResource 'gone'")
    assert status["observedGeneration"] == 0


def test_the_loser_of_a_clash_shows_no_version_of_its_own() -> None:
    decision = specialisation.plan([claim("1.0.0", OLD), claim("1.0.0", NEW)],
                                   installed("1.0.0", OLD), {}, 0.0)[0]
    assert decision.claim.owner is NEW
    report = specialisation.report(decision, installed("1.0.0", OLD)["p"])
    assert (report.state, report.version) == (State.FAILED, "")


def test_the_projects_a_workflow_uses() -> None:
    text = ("class: Workflow\nsteps:\n  a: {run: ./cerise/test/wc.cwl}\n"
            "  b: {run: example/custom_program.cwl}\n  c: {run: cerise/test/echo.cwl}\n"
            "  d: {run: {class: CommandLineTool}}\n  e: {run: plain.cwl}\n")
    assert specialisation.projects_used(text) == {
        "cerise": StepUse("a", "./cerise/test/wc.cwl"),
        "example": StepUse("b", "example/custom_program.cwl")}


@pytest.mark.parametrize("text", ["", "[", "steps: 3", "- a", "steps: [{run: a/b.cwl}]"])
def test_what_is_no_workflow_uses_no_project(text: str) -> None:
    assert specialisation.projects_used(text) == {}


def test_a_missing_project_is_named_with_the_closest_installed_ones() -> None:
    use = StepUse("host", "exampel/hostname.cwl")
    assert specialisation.missing_project("exampel", use, {"cerise", "example"}, {}, "hpc") == (
        "step 'host' runs 'exampel/hostname.cwl', but there is no project 'exampel' on compute "
        "resource 'hpc'; did you mean 'example'? (installed: cerise, example)")


def test_a_project_that_failed_to_install_says_why() -> None:
    use = StepUse("host", "example/hostname.cwl")
    message = specialisation.missing_project(
        "example", use, {"cerise"}, {"example": "install.sh exited with status 1"}, "hpc")
    assert message == ("step 'host' runs 'example/hostname.cwl', but project 'example' could "
                       "not be installed on compute resource 'hpc': install.sh exited with "
                       "status 1")


def test_the_waiting_message_names_each_project_and_why() -> None:
    assert specialisation.waiting_message({"b": "installing 2.0", "a": "upgrading"}, "hpc") == (
        "waiting for projects 'a' (upgrading), 'b' (installing 2.0) on compute resource 'hpc'")
