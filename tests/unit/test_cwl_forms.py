"""Every form CWL allows: versions v1.0 to v1.2, list forms, and inline subworkflows."""

from __future__ import annotations

import json
from typing import Any

import pytest

from cerise.model import cwl
from cerise.model.cwl import Origin, Resources
from tests.unit.cwl_samples import a_file, flat, parse, ref, refusal, workflow_doc

WC_STEP = {"run": "cerise/test/wc.cwl", "in": {"file": "file"}, "out": ["output"]}
API = "https://cluster.example/base/api"
WC_REMOTE = f"{API}/cerise/steps/cerise/test/wc.cwl"


@pytest.mark.parametrize("version", ["v1.0", "v1.1", "v1.2"])
def test_every_released_cwl_version_is_accepted(version: str) -> None:
    workflow = parse(workflow_doc(cwlVersion=version))

    assert [step.run for step in workflow.steps] == ["cerise/test/wc.cwl"]


def test_the_originals_v1_0_workflow_is_accepted() -> None:
    text = """\
cwlVersion: v1.0
class: Workflow
inputs:
  input_file: File
outputs:
  counts:
    type: File
    outputSource: wc/output
steps:
  wc:
    run: cerise/test/wc.cwl
    in:
      file: input_file
    out: [output]
"""
    assert parse(text).inputs[0].name == "input_file"


@pytest.mark.parametrize(
    "hint",
    [
        {"class": "LoadListingRequirement", "loadListing": "deep_listing"},
        {"class": "NetworkAccess", "networkAccess": True},
        {"class": "cwltool:LoadListingRequirement", "loadListing": "deep_listing"},
        {"class": "http://commonwl.org/cwltool#NetworkAccess", "networkAccess": True},
    ],
)
def test_what_the_upgrade_adds_is_still_refused_when_the_user_writes_it(
    hint: dict[str, Any],
) -> None:
    message = refusal(workflow_doc(cwlVersion="v1.0", hints=[hint]))

    assert message.startswith(f"{hint['class']!r} is not allowed in a submitted workflow")


def test_steps_inputs_outputs_and_step_inputs_in_list_form_are_accepted() -> None:
    document = workflow_doc(
        inputs=[{"id": "file", "type": "File"}, {"id": "#spare", "type": "File?"}],
        outputs=[{"id": "counts", "type": "File", "outputSource": "wc/output"}],
        steps=[
            {"id": "wc", "run": "cerise/test/wc.cwl", "in": [{"id": "file", "source": "file"}],
             "out": ["output"]},
            {"id": "#nap", "run": "cerise/test/sleep.cwl", "in": [], "out": []},
        ],
    )

    workflow = parse(document)

    assert [(step.id, step.run, step.at) for step in workflow.steps] == [
        ("wc", "cerise/test/wc.cwl", ("steps", 0)),
        ("nap", "cerise/test/sleep.cwl", ("steps", 1)),
    ]
    translated = cwl.translate_workflow(workflow, api_base=API)
    assert [step["run"] for step in translated["steps"]] == [
        WC_REMOTE, f"{API}/cerise/steps/cerise/test/sleep.cwl"
    ]
    assert [p.name for p in workflow.inputs] == ["file", "spare"]


def test_a_step_input_the_tool_does_not_declare_is_accepted() -> None:
    step = {**WC_STEP, "in": [{"id": "file", "source": "file"}, {"id": "lines", "source": "file"}]}

    assert parse(workflow_doc(steps={"wc": step})).steps[0].id == "wc"


def nested(levels: int, **inner_step: Any) -> dict[str, Any]:
    """A workflow whose wc step sits `levels` inline workflows deep."""
    process: dict[str, Any] = {
        "class": "Workflow",
        "inputs": {"file": "File"},
        "outputs": {"counts": {"type": "File", "outputSource": "wc/output"}},
        "steps": {"wc": {**WC_STEP, **inner_step}},
    }
    for _ in range(levels):
        process = {
            "class": "Workflow",
            "requirements": {"SubworkflowFeatureRequirement": {}},
            "inputs": {"file": "File"},
            "outputs": {"counts": {"type": "File", "outputSource": "sub/counts"}},
            "steps": {"sub": {"run": process, "in": {"file": "file"}, "out": ["counts"]}},
        }
    return {"cwlVersion": "v1.2", **process}


@pytest.mark.parametrize("levels", [1, 2, 5])
def test_inline_workflows_of_installed_steps_are_accepted_at_any_depth(levels: int) -> None:
    workflow = parse(nested(levels))

    prefix = "sub/" * levels
    run_path = ("steps", "sub", "run") * levels
    assert [(s.id, s.run, s.at) for s in workflow.steps] == [
        (f"{prefix}wc", "cerise/test/wc.cwl", (*run_path, "steps", "wc"))
    ]
    translated = cwl.translate_workflow(workflow, api_base=API)
    entry: Any = translated
    for part in workflow.steps[0].at:
        entry = entry[part]
    assert entry["run"] == WC_REMOTE
    assert workflow.document == nested(levels)  # the checked document is left as it was


@pytest.mark.parametrize(
    ("inner", "expected"),
    [
        ({"run": "/bin/sh"}, "step 'sub/sub/wc' runs '/bin/sh', which is an absolute path"),
        ({"run": "cerise/test/wcc.cwl"}, "step 'sub/sub/wc' runs 'cerise/test/wcc.cwl', which is "
         "not an installed step; did you mean 'cerise/test/wc.cwl'?"),
        ({"run": {"class": "CommandLineTool", "baseCommand": "id", "inputs": [], "outputs": []}},
         "step 'sub/sub/wc' runs an inline CommandLineTool; inline tools are not allowed"),
        ({"run": {"class": "ExpressionTool", "expression": "$({})", "inputs": [], "outputs": []}},
         "step 'sub/sub/wc' runs an inline ExpressionTool"),
        ({"run": {"class": "Operation", "inputs": [], "outputs": []}},
         "step 'sub/sub/wc' runs an inline Operation"),
        ({"hints": {"DockerRequirement": {"dockerPull": "evil"}}},
         "step 'sub/sub/wc': 'DockerRequirement' is not allowed in a submitted workflow"),
        ({"cwl:run": "cerise/test/echo.cwl"},
         "the key 'cwl:run' at '/steps/sub/run/steps/sub/run/steps/wc' is not allowed"),
        ({"in": {"file": {"source": "file", "valueFrom": "${return 1}"}}},
         "'/steps/sub/run/steps/sub/run/steps/wc/in/file/valueFrom': the JavaScript block"),
        ({"in": {"file": {"default": a_file(basename="..")}}},
         "step 'sub/sub/wc': default at '/steps/sub/run/steps/sub/run/steps/wc/in/file/default/"
         "basename': the basename '..' is not a file name"),
    ],
)
def test_every_rule_applies_to_the_steps_of_inline_workflows(
    inner: dict[str, Any], expected: str
) -> None:
    assert flat(refusal(nested(2, **inner))).startswith(expected)


def test_an_inline_workflows_own_requirements_are_checked() -> None:
    document = nested(1)
    document["steps"]["sub"]["run"]["requirements"] = {"EnvVarRequirement": {"envDef": {}}}

    assert refusal(document).startswith(
        "step 'sub': 'EnvVarRequirement' is not allowed in a submitted workflow"
    )


@pytest.mark.parametrize("key", ["$schemas", "$base", "$namespaces", "$graph"])
def test_an_inline_workflow_may_not_pull_in_outside_content(key: str) -> None:
    document = nested(1)
    document["steps"]["sub"]["run"][key] = ["https://evil.example/x"]

    assert refusal(document).startswith(
        f"step 'sub': '{key}' is not allowed in an inline workflow: it can pull in outside content"
    )


def test_an_inline_workflow_needs_the_subworkflow_feature() -> None:
    document = nested(1)
    del document["requirements"]

    assert "SubworkflowFeatureRequirement not in requirements" in refusal(document)


def test_defaults_inside_inline_workflows_are_staged() -> None:
    document = nested(1, **{"in": {"file": {"source": "file", "default": a_file("s.txt")}}})
    inner = document["steps"]["sub"]["run"]
    inner["inputs"] = {"file": {"type": "File", "default": a_file("i.txt")}}

    workflow = parse(document)

    wf = Origin.WORKFLOW
    assert workflow.step_defaults == (
        ref(("steps", "sub", "run", "inputs", "file", "default"), "i.txt", origin=wf),
        ref(("steps", "sub", "run", "steps", "wc", "in", "file", "default"), "s.txt", origin=wf),
    )


def test_a_subworkflow_counts_as_one_step_of_the_reservation() -> None:
    document = nested(1)
    document["steps"]["nap"] = {
        "run": "cerise/test/hostname.cwl", "in": {}, "out": [],
    }
    inner = document["steps"]["sub"]["run"]
    inner["hints"] = {"ToolTimeLimit": {"timelimit": 100}, "ResourceRequirement": {"coresMin": 3}}

    workflow = parse(document)

    assert cwl.required_resources(workflow) == Resources(cores=3, time_limit=105)


def test_a_list_form_workflow_translates_to_json_for_the_runner() -> None:
    document = nested(1)
    document["steps"] = [{"id": "sub", **document["steps"]["sub"]}]

    workflow = parse(json.dumps(document))

    assert workflow.steps[0].at == ("steps", 0, "run", "steps", "wc")
    assert WC_REMOTE in cwl.to_json(cwl.translate_workflow(workflow, api_base=API))
