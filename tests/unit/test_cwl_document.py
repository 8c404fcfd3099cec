"""Reading a submitted workflow: JSON or YAML, JSON values only, within limits, a Workflow."""

from __future__ import annotations

import json
from typing import Any

import pytest

from cerise.model import cwl
from cerise.model.cwl import Resources
from tests.unit.cwl_samples import INSTALLED, parse, refusal, workflow_doc

WC_YAML = """\
cwlVersion: v1.2
class: Workflow
inputs:
  file: File
outputs:
  counts:
    type: File
    outputSource: wc/output
steps:
  wc:
    run: cerise/test/wc.cwl
    in:
      file: file
    out: [output]
"""


@pytest.mark.parametrize(
    "text",
    [WC_YAML, WC_YAML.encode(), json.dumps(workflow_doc()), json.dumps(workflow_doc()).encode()],
    ids=["yaml", "yaml-bytes", "json", "json-bytes"],
)
def test_yaml_and_json_give_the_same_workflow(text: str | bytes) -> None:
    workflow = cwl.parse_workflow(text, installed_steps=INSTALLED)

    assert workflow.document == workflow_doc()
    assert workflow.steps == (
        cwl.Step(
            id="wc", run=cwl.StepPath("cerise/test/wc.cwl"), resources=Resources(),
            at=("steps", "wc"),
        ),
    )
    assert [(p.name, p.type, p.required) for p in workflow.inputs] == [
        ("file", cwl.Primitive.FILE, True)
    ]
    assert workflow.resources == Resources()
    assert workflow.step_defaults == ()


def test_yaml_flow_style_that_is_not_json_is_read_as_yaml() -> None:
    text = (
        "{cwlVersion: v1.2, class: Workflow, inputs: {}, outputs: {},"
        " steps: {h: {run: cerise/test/hostname.cwl, in: {}, out: []}}}"
    )

    assert parse(text).steps[0].run == "cerise/test/hostname.cwl"


def test_yaml_is_read_as_yaml_1_2_like_the_loader_reads_it() -> None:
    text = WC_YAML + "doc: no\nlabel: 2020-01-01\n"

    document = parse(text).document

    assert (document["doc"], document["label"]) == ("no", "2020-01-01")
    assert json.loads(cwl.to_json(document)) == document


def test_anchored_booleans_stay_booleans() -> None:
    text = WC_YAML.replace(
        "  file: File", "  flag: {type: boolean, default: &yes true}\n  file: File"
    )

    document = parse(text).document

    assert document["inputs"]["flag"]["default"] is True
    assert '"default": true' in cwl.to_json(document)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("class: Workflow\ninputs: [1\nsteps: {}\n", "neither JSON nor valid YAML"),
        ("class: Workflow\n  inputs: {}\n bad", "(line 2, column"),
        ("a: 1\n---\nb: 2\n", "neither JSON nor valid YAML"),
        ("a: *nowhere\n", "neither JSON nor valid YAML"),
        ("class: Workflow\nclass: Workflow\n", "neither JSON nor valid YAML: found duplicate key"),
        ("", "the workflow document is empty"),
        ("# only a comment\n", "the workflow document is empty"),
        ("null", "the workflow document is empty"),
        ("- class: Workflow\n", "must be a mapping with class: Workflow, not a list"),
        ("just some words", "not a string"),
        ("42", "not an integer"),
        ('"class: Workflow"', "not a string"),
        (b"class: Workflow\xff\xfe", "not UTF-8 text (bad byte at offset 15)"),
    ],
)
def test_malformed_or_non_mapping_documents_are_refused(text: str | bytes, expected: str) -> None:
    assert expected in refusal(text)


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        ("CommandLineTool", "inline tools are not allowed (class: CommandLineTool)"),
        ("ExpressionTool", "inline tools are not allowed (class: ExpressionTool)"),
        ("Operation", "inline tools are not allowed (class: Operation)"),
        ("workflow", "the document has class 'workflow'; a submitted workflow needs class"),
        (None, "the document has no 'class'"),
    ],
)
def test_a_document_that_is_not_a_workflow_is_refused(kind: str | None, expected: str) -> None:
    document = workflow_doc(**{"class": kind})
    if kind is None:
        del document["class"]

    message = refusal(document)

    assert expected in message
    if kind and kind.endswith(("Tool", "Operation")):
        assert "installed steps of a specialisation" in message


def test_the_originals_broken_workflow_is_refused_as_an_inline_tool() -> None:
    text = "cwlVersion: v1.0\nclass: CommandLineTool\nbaseCommand: [rm, -rf, /]\ninputs: []\n"

    assert refusal(text).startswith("inline tools are not allowed")


def test_empty_inputs_outputs_and_steps_are_accepted() -> None:
    workflow = parse(workflow_doc(inputs={}, outputs=[], steps={}))

    assert (workflow.inputs, workflow.steps) == ((), ())


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"$graph": []}, "packed documents ($graph) are not supported"),
        ({"$schemas": ["http://x/onto.rdf"]}, "'$schemas' is not allowed at the top"),
        ({"$base": "http://x/"}, "'$base' is not allowed at the top"),
        (
            {"doc": {"$include": "http://x/readme"}},
            "$include at '/doc' in the workflow is not allowed",
        ),
        (
            {"inputs": {"$import": "/etc/passwd"}},
            "$import at '/inputs' in the workflow is not allowed",
        ),
        (
            {"steps": {"wc": {"$mixin": "x.yml", "run": "cerise/test/wc.cwl"}}},
            "$mixin at '/steps/wc' in the workflow is not allowed: it pulls in outside content",
        ),
    ],
)
def test_outside_content_is_refused(changes: dict[str, Any], expected: str) -> None:
    assert expected in refusal(workflow_doc(**changes))


def test_namespaces_are_allowed() -> None:
    document = workflow_doc(**{"$namespaces": {"edam": "http://edamontology.org/"}})

    assert parse(document).document["$namespaces"] == {"edam": "http://edamontology.org/"}


@pytest.mark.parametrize(
    ("yaml_value", "expected"),
    [
        ("doc: !!binary aGVsbG8=", "the value at '/doc' in the workflow is binary data"),
        ("doc: !!set {a}", "the value at '/doc' in the workflow is a set, which JSON cannot"),
        ("doc: !custom text", "the value at '/doc' in the workflow is a TaggedScalar"),
        ("doc: .nan", "the value at '/doc' in the workflow is nan, which JSON cannot hold"),
        ("doc: -.inf", "the value at '/doc' in the workflow is -inf"),
        ("doc: {1: one}", "key 1 at '/doc' in the workflow is not a string; quote it"),
        ("doc: {null: x}", "key None at '/doc' in the workflow is not a string"),
    ],
)
def test_values_json_cannot_hold_are_refused(yaml_value: str, expected: str) -> None:
    assert expected in refusal(WC_YAML + yaml_value + "\n")


def test_nan_in_json_text_is_refused() -> None:
    text = json.dumps(workflow_doc()).replace('"v1.2"', "NaN")

    assert "the value at '/cwlVersion' in the workflow is nan" in refusal(text)


@pytest.mark.parametrize(
    "text",
    [
        "[" * 100_000,
        "{" + '"a": {' * 3000 + "}" * 3001,
        "a:" + " [" * 3000,
        WC_YAML + "doc: " + "[" * (cwl.MAX_DEPTH + 5) + "]" * (cwl.MAX_DEPTH + 5) + "\n",
    ],
    ids=["json-list", "json-object", "yaml", "within-parser-limit"],
)
def test_very_deep_nesting_is_refused_with_a_clear_message(text: str) -> None:
    assert f"is nested too deeply (more than {cwl.MAX_DEPTH} levels)" in refusal(text)


def test_yaml_alias_bombs_are_refused() -> None:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 9)]
    text = WC_YAML + "\n".join(lines) + "\n"

    assert f"the workflow has more than {cwl.MAX_NODES} values (counting YAML aliases)" in refusal(
        text
    )


@pytest.mark.parametrize(
    ("text", "key", "at"),
    [
        (
            WC_YAML + "cwl:requirements: [{class: EnvVarRequirement, envDef: {X: y}}]\n",
            "cwl:requirements",
            "/",
        ),
        (WC_YAML + "    cwl:run: {class: CommandLineTool}\n", "cwl:run", "/steps/wc"),
        (
            WC_YAML + "https://w3id.org/cwl/cwl#hints: [{class: DockerRequirement}]\n",
            "https://w3id.org/cwl/cwl#hints",
            "/",
        ),
        (
            WC_YAML + "    c:run: x.cwl\n$namespaces: {c: 'https://w3id.org/cwl/cwl#'}\n",
            "c:run",
            "/steps/wc",
        ),
        (
            WC_YAML + "$namespaces: {cwl: 'http://example.org/'}\ncwl:hints: []\n",
            "cwl:hints",
            "/",
        ),
        (WC_YAML + "cwltool:overrides: {}\n", "cwltool:overrides", "/"),
    ],
)
def test_keys_that_name_a_cwl_field_by_its_uri_are_refused(text: str, key: str, at: str) -> None:
    assert refusal(text) == (
        f"the key {key!r} at {at!r} is not allowed: it names a field of CWL or cwltool by its "
        "URI; write the field's plain name"
    )


def test_namespaced_metadata_is_allowed() -> None:
    text = WC_YAML + "$namespaces: {s: 'https://schema.org/'}\ns:author: Ada\n"

    assert parse(text).document["s:author"] == "Ada"


def test_names_and_default_data_are_not_fields() -> None:
    text = WC_YAML.replace(
        "  file: File\n", "  file: File\n  extra: {type: Any, default: {'cwl:note': kept}}\n"
    )

    assert parse(text).document["inputs"]["extra"]["default"] == {"cwl:note": "kept"}
    assert "input name 'cwl:x' is not allowed" in refusal(
        WC_YAML.replace("  file: File\n", "  file: File\n  'cwl:x': Any\n")
    )
