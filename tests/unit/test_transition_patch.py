"""The JSON Patch of a phase transition: guarded, complete, and refused when illegal."""

from __future__ import annotations

import pytest

from cerise.kube import jobs
from cerise.kube.jobs import transition_patch
from cerise.model.states import IllegalTransition, Phase


def test_first_transition_is_guarded_by_resource_version() -> None:
    patch = transition_patch(None, Phase.SUBMITTED, resource_version="42")
    assert patch[0] == {"op": "test", "path": "/metadata/resourceVersion", "value": "42"}
    assert patch[1]["path"] == "/status"
    status = patch[1]["value"]
    assert (status["phase"], status["state"]) == ("Submitted", "Waiting")
    assert [(c["type"], c["status"], c["reason"]) for c in status["conditions"]] == [
        ("Succeeded", "Unknown", "InProgress")]


def test_first_transition_needs_a_resource_version() -> None:
    with pytest.raises(ValueError, match="resourceVersion"):
        transition_patch(None, Phase.SUBMITTED)


def test_first_transition_must_be_to_submitted() -> None:
    with pytest.raises(IllegalTransition):
        transition_patch(None, Phase.RUNNING, resource_version="1")


def test_later_transition_tests_the_phase_first() -> None:
    patch = transition_patch(Phase.WAITING, Phase.RUNNING, fields={"remoteJobId": "17"})
    assert patch[0] == {"op": "test", "path": "/status/phase", "value": "Waiting"}
    assert {(op["op"], op["path"], op["value"]) for op in patch[1:]} == {
        ("add", "/status/phase", "Running"),
        ("add", "/status/state", "Running"),
        ("add", "/status/remoteJobId", "17"),
    }


def test_final_transition_records_when() -> None:
    patch = transition_patch(Phase.STAGING_OUT, Phase.SUCCESS)
    assert any(op["path"] == "/status/finishedAt" for op in patch)


@pytest.mark.parametrize(("target", "succeeded"), [
    (Phase.SUCCESS, "True"), (Phase.PERMANENT_FAILURE, "False"), (Phase.CANCELLED, "False")])
def test_the_succeeded_condition_flips_when_the_job_ends(target: Phase, succeeded: str) -> None:
    source = Phase.SUBMITTED if target is Phase.CANCELLED else Phase.STAGING_OUT
    if target is Phase.PERMANENT_FAILURE:
        source = Phase.STAGING_IN
    patch = transition_patch(source, target, message="why", generation=3)
    values = {op["path"]: op["value"] for op in patch[1:]}
    [condition] = values["/status/conditions"]
    assert (condition["status"], condition["reason"], condition["message"]) == (
        succeeded, target.value, "why")
    assert values["/status/observedGeneration"] == 3


def test_intermediate_transitions_leave_the_condition_alone() -> None:
    patch = transition_patch(Phase.WAITING, Phase.RUNNING)
    assert not any(op["path"] == "/status/conditions" for op in patch)


def test_field_names_are_escaped_as_json_pointers() -> None:
    patch = transition_patch(Phase.WAITING, Phase.RUNNING, fields={"a/b~c": 1})
    assert any(op["path"] == "/status/a~1b~0c" for op in patch)


def test_illegal_transition_builds_no_patch() -> None:
    with pytest.raises(IllegalTransition, match="from Running to Success"):
        transition_patch(Phase.RUNNING, Phase.SUCCESS)


def test_a_fenced_observation_merges_as_a_merge_patch_would() -> None:
    """A fenced status write is a JSON Patch; its fields are merged into the status the
    writer saw, so that nested maps keep their other keys and a None removes one."""
    seen = {"callback": {"attempts": 1, "nextAttempt": "t1", "lastResult": "HTTP 503"}}
    update = {"attempts": 2, "nextAttempt": None, "delivered": "t2"}
    assert jobs.merged(seen["callback"], update) == {
        "attempts": 2, "lastResult": "HTTP 503", "delivered": "t2"}
    assert jobs.merged({"a": {"b": 1, "c": 2}}, {"a": {"c": None}, "d": [1]}) == {
        "a": {"b": 1}, "d": [1]}
    assert jobs.merged("old", {"x": 1}) == {"x": 1}
    assert jobs.merged({"x": 1}, ["replaced"]) == ["replaced"]
