"""Requirements and hints: the classes a workflow may use, and the cores, memory and time it
asks for."""

from __future__ import annotations

import json
from typing import Any

import pytest

from cerise.model import cwl
from cerise.model.cwl import Resources, requirements
from tests.unit.cwl_samples import INSTALLED, flat, parse, refusal, with_step, workflow_doc


@pytest.mark.parametrize("section", ["hints", "requirements"])
@pytest.mark.parametrize(
    "form",
    [
        {"ResourceRequirement": {"coresMin": 4}, "ScatterFeatureRequirement": {}},
        [{"class": "ResourceRequirement", "coresMin": 4}, {"class": "ScatterFeatureRequirement"}],
    ],
    ids=["map", "list"],
)
def test_requirements_and_hints_in_map_and_list_form_are_accepted(section: str, form: Any) -> None:
    assert parse(workflow_doc(**{section: form})).resources == Resources(cores=4)
    assert parse(with_step(**{section: form})).steps[0].resources == Resources(cores=4)


def test_empty_requirements_and_hints_are_accepted() -> None:
    assert parse(workflow_doc(hints={}, requirements=[])).resources == Resources()


@pytest.mark.parametrize(
    "kind",
    [
        "EnvVarRequirement",
        "InitialWorkDirRequirement",
        "DockerRequirement",
        "ShellCommandRequirement",
        "SoftwareRequirement",
        "NetworkAccess",
        "cwltool:MPIRequirement",
        "http://commonwl.org/cwltool#LoadListingRequirement",
    ],
)
@pytest.mark.parametrize("section", ["hints", "requirements"])
@pytest.mark.parametrize("form", ["map", "list"])
@pytest.mark.parametrize("level", ["workflow", "step"])
def test_requirements_that_would_change_installed_steps_are_refused(
    kind: str, section: str, form: str, level: str
) -> None:
    value: Any = {kind: {}} if form == "map" else [{"class": kind}]
    document = (
        workflow_doc(**{section: value}) if level == "workflow" else with_step(**{section: value})
    )

    message = refusal(document)

    prefix = "step 'wc': " if level == "step" else ""
    assert message.startswith(f"{prefix}{kind!r} is not allowed in a submitted workflow")
    assert "allowed are MultipleInputFeatureRequirement, ResourceRequirement, " in message


@pytest.mark.parametrize("form", ["map", "list"])
def test_schema_definitions_are_refused_as_outside_content(form: str) -> None:
    value: Any = {"SchemaDefRequirement": {"types": []}}
    if form == "list":
        value = [{"class": "SchemaDefRequirement", "types": []}]

    assert refusal(workflow_doc(requirements=value)) == (
        "SchemaDefRequirement is not allowed: it can pull in outside content; "
        "write record and enum types inline"
    )


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("ResourceRequirement", "'/hints': 'hints' must be a mapping or a list"),
        (["ResourceRequirement"], "'/hints/0': each entry of 'hints' must be a mapping with"),
        ([{"coresMin": 2}], "'/hints/0': each entry of 'hints' must be a mapping with a 'class'"),
        ([{"class": 7}], "each entry of 'hints' must be a mapping with a 'class'"),
    ],
)
def test_malformed_hints_are_refused(value: Any, expected: str) -> None:
    assert expected in refusal(workflow_doc(hints=value))


def test_a_requirement_that_is_not_a_mapping_is_left_to_the_loader() -> None:
    message = refusal(workflow_doc(hints={"ResourceRequirement": 4}))

    assert "mapSubject 'ResourceRequirement' value None is not a dict" in flat(message)


@pytest.mark.parametrize(
    ("hints", "expected"),
    [
        ({}, Resources()),
        ({"ResourceRequirement": {"coresMin": 2}}, Resources(cores=2)),
        ({"ResourceRequirement": {"coresMax": 8}}, Resources(cores=8)),
        ({"ResourceRequirement": {"coresMin": 2, "coresMax": 8}}, Resources(cores=2)),
        ({"ResourceRequirement": {"coresMin": "$(inputs.n)", "coresMax": 8}}, Resources(cores=8)),
        ({"ResourceRequirement": {"coresMin": "$(inputs.n)"}}, Resources()),
        ({"ResourceRequirement": {"coresMin": 1.5}}, Resources(cores=2)),
        ({"ResourceRequirement": {"ramMin": 1024}}, Resources(memory=1024)),
        ({"ResourceRequirement": {"ramMax": 2048}}, Resources(memory=2048)),
        ({"ResourceRequirement": {"ramMin": 100, "ramMax": 2048}}, Resources(memory=100)),
        ({"ResourceRequirement": {"ramMin": 1.5}}, Resources(memory=2)),
        ({"ResourceRequirement": {"ramMin": "$(inputs.n)"}}, Resources()),
        ({"ToolTimeLimit": {"timelimit": 30}}, Resources(time_limit=30)),
        ({"ToolTimeLimit": {"timelimit": "$(inputs.t)"}}, Resources()),
        ([{"class": "TimeLimit", "timeLimit": 45}], Resources(time_limit=45)),
        (
            [
                {"class": "ResourceRequirement", "coresMin": 3},
                {"class": "ToolTimeLimit", "timelimit": 5},
            ],
            Resources(cores=3, time_limit=5),
        ),
    ],
)
def test_resources_declared_by_a_document(hints: Any, expected: Resources) -> None:
    assert parse(workflow_doc(hints=hints)).resources == expected
    assert requirements.declared({"class": "CommandLineTool", "hints": hints}) == expected


def test_the_larger_of_hints_and_requirements_counts() -> None:
    document = {
        "hints": {"ResourceRequirement": {"coresMin": 2}, "ToolTimeLimit": {"timelimit": 100}},
        "requirements": [
            {"class": "ResourceRequirement", "coresMin": 6},
            {"class": "ToolTimeLimit", "timelimit": 10},
        ],
    }

    assert requirements.declared(document) == Resources(cores=6, time_limit=100)


@pytest.mark.parametrize(
    ("hints", "expected"),
    [
        (
            {"ResourceRequirement": {"coresMin": -1}},
            "'/hints/ResourceRequirement/coresMin' must not be negative, not -1",
        ),
        (
            {"ResourceRequirement": {"coresMax": -0.5}},
            "'/hints/ResourceRequirement/coresMax' must not be negative, not -0.5",
        ),
        (
            {"ToolTimeLimit": {"timelimit": -5}},
            "'/hints/ToolTimeLimit/timelimit' must not be negative, not -5",
        ),
        (
            [{"class": "TimeLimit", "timeLimit": 1.5}],
            "'/hints/0/timeLimit': a time limit is a whole number of seconds",
        ),
    ],
)
def test_resource_values_the_loader_allows_but_make_no_sense_are_refused(
    hints: Any, expected: str
) -> None:
    assert refusal(workflow_doc(hints=hints)) == expected


@pytest.mark.parametrize(
    ("hints", "expected"),
    [
        ({"ResourceRequirement": {"coresMin": "four"}}, "'coresMin' field is not valid"),
        ({"ResourceRequirement": {"coresMax": [4]}}, "'coresMax' field is not valid"),
        ({"ToolTimeLimit": {"timelimit": "soon"}}, "'timelimit' field is not valid"),
    ],
)
def test_resource_values_of_the_wrong_kind_are_left_to_the_loader(
    hints: Any, expected: str
) -> None:
    assert expected in flat(refusal(workflow_doc(requirements=hints)))


def steps_with(*hints: dict[str, Any]) -> dict[str, Any]:
    return {
        f"s{index}": {"run": "cerise/test/sleep.cwl", "in": {}, "out": [], "hints": step_hints}
        for index, step_hints in enumerate(hints)
    }


def limit(seconds: int) -> dict[str, Any]:
    return {"ToolTimeLimit": {"timelimit": seconds}}


def cores(count: int) -> dict[str, Any]:
    return {"ResourceRequirement": {"coresMin": count}}


def ram(mebibytes: int) -> dict[str, Any]:
    return {"ResourceRequirement": {"ramMin": mebibytes}}


@pytest.mark.parametrize(
    ("workflow_hints", "step_hints", "expected"),
    [
        ({}, [], Resources()),
        (cores(4), [{}], Resources(cores=4)),
        (cores(4), [cores(2), {"ResourceRequirement": {"coresMax": 16}}], Resources(cores=16)),
        ({}, [limit(60), limit(30)], Resources(time_limit=90)),
        (limit(100), [limit(60), limit(30)], Resources(time_limit=100)),
        (limit(50), [limit(60), limit(30)], Resources(time_limit=90)),
        ({}, [limit(60), {}], Resources()),
        (limit(20), [limit(60), {}], Resources(time_limit=20)),
        (ram(512), [ram(4096), ram(1024)], Resources(memory=4096)),
        ({}, [ram(300), {}], Resources(memory=300)),
    ],
)
def test_required_resources_combine_workflow_and_steps(
    workflow_hints: dict[str, Any], step_hints: list[dict[str, Any]], expected: Resources
) -> None:
    workflow = parse(workflow_doc(hints=workflow_hints, outputs={}, steps=steps_with(*step_hints)))

    assert cwl.required_resources(workflow) == expected


def test_installed_steps_contribute_what_their_tools_declare() -> None:
    # hostname.cwl declares 2 cores and 5 s; sleep.cwl nothing.
    steps = {
        "where": {"run": "cerise/test/hostname.cwl", "in": {}, "out": []},
        "nap": {"run": "cerise/test/sleep.cwl", "in": {}, "out": [], "hints": limit(10)},
        "again": {"run": "cerise/test/hostname.cwl", "in": {}, "out": [], "hints": limit(1)},
    }
    workflow = parse(workflow_doc(outputs={}, steps=steps))

    assert [step.resources for step in workflow.steps] == [
        Resources(cores=2, time_limit=5),
        Resources(time_limit=10),
        Resources(cores=2, time_limit=5),
    ]
    assert cwl.required_resources(workflow) == Resources(cores=2, time_limit=20)


def test_an_installed_tool_in_json_contributes_too() -> None:
    tool = {
        "cwlVersion": "v1.2",
        "class": "CommandLineTool",
        "baseCommand": "hostname",
        "requirements": [{"class": "ResourceRequirement", "coresMax": 3}],
        "inputs": [],
        "outputs": [],
    }
    installed = {**INSTALLED, "cerise/test/hostname.cwl": json.dumps(tool)}
    document = workflow_doc(
        outputs={}, steps={"h": {"run": "cerise/test/hostname.cwl", "in": {}, "out": []}}
    )

    workflow = cwl.parse_workflow(json.dumps(document), installed_steps=installed)

    assert cwl.required_resources(workflow) == Resources(cores=3)
