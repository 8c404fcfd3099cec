"""Submitted workflows and input objects: what passes, what is refused and why, what gets staged."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
import yaml

from cerise.model import cwl
from cerise.model.cwl import FileKind, FileReference, InvalidWorkflow, Origin, Resources

INSTALLED = frozenset(
    {
        "cerise/test/echo.cwl",
        "cerise/test/hostname.cwl",
        "cerise/test/sleep.cwl",
        "cerise/test/wc.cwl",
    }
)


def workflow_doc(**changes: Any) -> dict[str, Any]:
    """The wc workflow of the original's tests, with top-level keys replaced."""
    document: dict[str, Any] = {
        "cwlVersion": "v1.2",
        "class": "Workflow",
        "inputs": {"file": "File"},
        "outputs": {"counts": {"type": "File", "outputSource": "wc/output"}},
        "steps": {
            "wc": {"run": "cerise/test/wc.cwl", "in": {"file": "file"}, "out": ["output"]},
        },
    }
    document.update(changes)
    return document


def with_step(**step: Any) -> dict[str, Any]:
    """The wc workflow whose only step has the given keys changed."""
    return workflow_doc(steps={"wc": {**workflow_doc()["steps"]["wc"], **step}})


def parse(document: dict[str, Any] | str) -> cwl.Workflow:
    text = document if isinstance(document, str) else json.dumps(document)
    return cwl.parse_workflow(text, installed_steps=INSTALLED)


def refusal(document: dict[str, Any] | str | bytes) -> str:
    text = json.dumps(document) if isinstance(document, dict) else document
    with pytest.raises(InvalidWorkflow) as info:
        cwl.parse_workflow(text, installed_steps=INSTALLED)
    return str(info.value)


def inputs_refusal(workflow: cwl.Workflow, input_object: Any) -> str:
    with pytest.raises(InvalidWorkflow) as info:
        cwl.check_inputs(workflow, input_object)
    return str(info.value)


def a_file(location: str | None = "http://x/in/job/data.txt", **more: Any) -> dict[str, Any]:
    return {"class": "File", "location": location, **more}


def ref(pointer: tuple[str | int, ...], location: str, **more: Any) -> FileReference:
    return FileReference(
        origin=more.get("origin", Origin.INPUT_OBJECT),
        pointer=pointer,
        kind=more.get("kind", FileKind.FILE),
        location=location,
        basename=more.get("basename"),
    )


# --- the document -----------------------------------------------------------------------

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
        cwl.Step(id="wc", run=cwl.StepPath("cerise/test/wc.cwl"), resources=Resources()),
    )
    assert [(p.name, p.type, p.required) for p in workflow.inputs] == [
        ("file", cwl.Primitive.FILE, True)
    ]
    assert workflow.resources == Resources()
    assert workflow.step_defaults == ()


def test_yaml_flow_style_that_is_not_json_is_read_as_yaml() -> None:
    text = (
        "{class: Workflow, inputs: {}, outputs: {},"
        " steps: {h: {run: cerise/test/hostname.cwl, in: {}, out: []}}}"
    )

    assert parse(text).steps[0].run == "cerise/test/hostname.cwl"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("class: Workflow\ninputs: [1\nsteps: {}\n", "neither JSON nor valid YAML"),
        ("class: Workflow\n  inputs: {}\n bad", "(line 2, column"),
        ("a: 1\n---\nb: 2\n", "neither JSON nor valid YAML"),
        ("a: *nowhere\n", "neither JSON nor valid YAML"),
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


@pytest.mark.parametrize("missing", [["inputs"], ["outputs"], ["steps"], ["inputs", "steps"]])
def test_missing_sections_are_named(missing: list[str]) -> None:
    document = workflow_doc()
    for key in missing:
        del document[key]

    message = refusal(document)

    assert message.startswith(f"the workflow has no {' and '.join(map(repr, missing))};")


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"outputs": "counts"}, "'outputs' must be a mapping or a list"),
        ({"inputs": "file"}, "'inputs' must be a mapping or a list"),
        ({"steps": "wc"}, "'steps' must be a mapping from step name to step"),
        (
            {"steps": [{"id": "wc", "run": "cerise/test/wc.cwl", "in": [], "out": []}]},
            "'steps' is a list; write it as a mapping from step name to step, e.g. steps: {",
        ),
    ],
)
def test_sections_of_the_wrong_shape_are_refused(changes: dict[str, Any], expected: str) -> None:
    assert expected in refusal(workflow_doc(**changes))


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
        (
            {"requirements": [{"class": "SchemaDefRequirement", "types": []}]},
            "SchemaDefRequirement is not allowed: it can pull in outside content",
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
        (
            "doc: 2020-01-01",
            "the value at '/doc' in the workflow is a date, which JSON cannot hold",
        ),
        ("doc: !!binary aGVsbG8=", "the value at '/doc' in the workflow is a bytes"),
        ("doc: !!set {a}", "the value at '/doc' in the workflow is a set"),
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


# --- requirements and hints --------------------------------------------------------------


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
    assert parse(workflow_doc(hints=None, requirements=[])).resources == Resources()


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
    assert "allowed are InlineJavascriptRequirement, MultipleInputFeatureRequirement, " in message


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


# --- steps -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("run", "expected"),
    [
        ("cerise/test/wc.cwl", "cerise/test/wc.cwl"),
        ("./cerise/test/wc.cwl", "cerise/test/wc.cwl"),
    ],
)
def test_installed_steps_are_accepted(run: str, expected: str) -> None:
    assert parse(with_step(run=run)).steps[0].run == expected


@pytest.mark.parametrize(
    ("run", "problem"),
    [
        ("", "is empty"),
        ("cerise/" + "a" * 1100 + ".cwl", "is longer than 1024 characters"),
        ("/bin/sh", "is an absolute path"),
        ("/cerise/test/wc.cwl", "is an absolute path"),
        ("//host/share/wc.cwl", "is an absolute path"),
        ("http://evil.example/wc.cwl", "is a URL"),
        ("https://evil.example/cerise/test/wc.cwl", "is a URL"),
        ("file:///etc/passwd", "is a URL"),
        ("file:cerise/test/wc.cwl", "is a URL"),
        ("data:text/plain,x", "is a URL"),
        ("C:cerise/test/wc.cwl", "is a URL"),
        ("../cerise/test/wc.cwl", "contains '..'"),
        ("cerise/../../etc/wc.cwl", "contains '..'"),
        ("cerise/test/..", "contains '..'"),
        ("./../wc.cwl", "contains '..'"),
        ("cerise/./test/wc.cwl", "contains a '.' component"),
        ("././cerise/test/wc.cwl", "contains a '.' component"),
        ("cerise//test/wc.cwl", "has an empty component"),
        ("cerise/test/", "has an empty component"),
        ("cerise\\test\\wc.cwl", "contains a backslash"),
        ("..\\wc.cwl", "contains a backslash"),
        ("cerise/test/wc.cwl; rm -rf ~", "contains whitespace or a control character"),
        ("cerise/test/w c.cwl", "contains whitespace or a control character"),
        ("cerise/test/wc.cwl\n", "contains whitespace or a control character"),
        ("cerise/test/wc.cwl\x00", "contains whitespace or a control character"),
        ("cerise/test/\x1b[31mwc.cwl", "contains whitespace or a control character"),
        ("cerise/test/wc.cwl\u00a0", "contains whitespace or a control character"),
        ("cerise/test/wc.cwl;id", "contains characters other than letters"),
        ("cerise/test/$(id).cwl", "contains characters other than letters"),
        ("cerise/test/${HOME}.cwl", "contains characters other than letters"),
        ("cerise/test/`id`.cwl", "contains characters other than letters"),
        ("cerise/test/'wc'.cwl", "contains characters other than letters"),
        ('cerise/test/"wc".cwl', "contains characters other than letters"),
        ("cerise/test/wc.cwl|sh", "contains characters other than letters"),
        ("cerise/test/wc.cwl&", "contains characters other than letters"),
        ("cerise/test/w*.cwl", "contains characters other than letters"),
        ("cerise/test/wc.cwl#main", "contains characters other than letters"),
        ("cerise/test/wc.cwl?x=1", "contains characters other than letters"),
        ("~/cerise/test/wc.cwl", "contains characters other than letters"),
        ("$CERISE_API/cerise/test/wc.cwl", "contains characters other than letters"),
        ("cerise/tëst/wc.cwl", "contains characters other than letters"),
        ("cerise/test/-rf.cwl", "has a component starting with '.' or '-'"),
        ("cerise/.hidden/wc.cwl", "has a component starting with '.' or '-'"),
        ("-cerise/test/wc.cwl", "has a component starting with '.' or '-'"),
        ("cerise/.../wc.cwl", "has a component starting with '.' or '-'"),
        ("cerise/test/wc:x.cwl", "contains characters other than letters"),
        ("wc.cwl", "is not of the form '<project>/<path>.cwl'"),
        ("cerise/test/wc", "is not of the form '<project>/<path>.cwl'"),
        ("cerise/test/wc.py", "is not of the form '<project>/<path>.cwl'"),
    ],
)
def test_run_must_be_a_plain_relative_step_path(run: str, problem: str) -> None:
    message = refusal(with_step(run=run))

    shown = repr(run[:60]) + ("…" if len(run) > 60 else "")
    assert message.startswith(f"step 'wc' runs {shown}, which {problem}")
    assert message.endswith(
        "'run' must name an installed step as '<project>/<path>.cwl', e.g. 'cerise/test/wc.cwl'"
    )
    assert "\x00" not in message and "\n" not in message and "\x1b" not in message


@pytest.mark.parametrize(
    ("run", "what"),
    [
        (
            {"class": "CommandLineTool", "baseCommand": "sh", "inputs": [], "outputs": []},
            "an inline CommandLineTool",
        ),
        ({"class": "ExpressionTool", "expression": "${return {}}"}, "an inline ExpressionTool"),
        ({"class": "Workflow", "inputs": [], "outputs": [], "steps": {}}, "an inline Workflow"),
        ({"baseCommand": "sh"}, "an inline process"),
    ],
)
def test_inline_run_objects_are_refused(run: dict[str, Any], what: str) -> None:
    assert refusal(with_step(run=run)) == (
        f"step 'wc' runs {what}; inline tools and workflows are not allowed, 'run' must name "
        "an installed step as '<project>/<path>.cwl', e.g. 'cerise/test/wc.cwl'"
    )


@pytest.mark.parametrize(
    ("step", "expected"),
    [
        ({"in": {}, "out": []}, "step 'wc' has no 'run'; it must name an installed step"),
        ({"run": None}, "step 'wc' has no 'run'"),
        ({"run": 7}, "step 'wc': 'run' must be a string; it must name an installed step"),
        ({"run": ["cerise/test/wc.cwl"]}, "step 'wc': 'run' must be a string"),
    ],
)
def test_run_must_be_given_as_a_string(step: dict[str, Any], expected: str) -> None:
    assert refusal(workflow_doc(steps={"wc": step})).startswith(expected)


@pytest.mark.parametrize(
    ("run", "expected"),
    [
        (
            "cerise/test/wcc.cwl",
            "step 'wc' runs 'cerise/test/wcc.cwl', which is not an installed step; "
            "did you mean 'cerise/test/wc.cwl'?",
        ),
        (
            "./cerise/test/slep.cwl",
            "step 'wc' runs './cerise/test/slep.cwl', which is not an installed step; "
            "did you mean 'cerise/test/sleep.cwl'?",
        ),
        (
            "cerise/test/ec.cwl",
            "step 'wc' runs 'cerise/test/ec.cwl', which is not an installed step; "
            "did you mean 'cerise/test/echo.cwl' or 'cerise/test/wc.cwl'?",
        ),
        (
            "chemistry/md/minimise.cwl",
            "step 'wc' runs 'chemistry/md/minimise.cwl', which is not an installed step",
        ),
    ],
)
def test_unknown_steps_are_refused_with_close_matches(run: str, expected: str) -> None:
    assert refusal(with_step(run=run)) == expected


def test_no_step_is_known_when_nothing_is_installed() -> None:
    with pytest.raises(
        InvalidWorkflow,
        match=r"^step 'wc' runs 'cerise/test/wc.cwl', which is not an installed step$",
    ):
        cwl.parse_workflow(json.dumps(workflow_doc()), installed_steps=frozenset())


@pytest.mark.parametrize(
    ("steps", "expected"),
    [
        ({"wc": "cerise/test/wc.cwl"}, "step 'wc' must be a mapping with 'run', 'in' and 'out'"),
        ({"wc": None}, "step 'wc' must be a mapping"),
        ({"": {"run": "cerise/test/wc.cwl"}}, "a step needs a non-empty name"),
        (
            {"wc": {"id": "count", "run": "cerise/test/wc.cwl"}},
            "step 'wc' has a different id 'count'; remove the 'id'",
        ),
        ({"wc": {"id": 3, "run": "cerise/test/wc.cwl"}}, "step 'wc' has a different id '3'"),
        ({"wc": {"run": "cerise/test/wc.cwl", "in": "file"}}, "step 'wc': 'in' must be a mapping"),
        (
            {"a b'$(x);": {"run": "/x"}},
            "step \"a b'$(x);\" runs '/x', which is an absolute path",
        ),
    ],
)
def test_malformed_steps_are_refused(steps: dict[str, Any], expected: str) -> None:
    assert refusal(workflow_doc(steps=steps)).startswith(expected)


@pytest.mark.parametrize("own_id", ["wc", "#wc"])
def test_a_step_id_equal_to_its_key_is_accepted(own_id: str) -> None:
    assert parse(with_step(id=own_id)).steps[0].id == "wc"


def test_all_steps_are_returned_in_document_order() -> None:
    steps = {
        "count": {"run": "cerise/test/wc.cwl", "in": {}, "out": []},
        "where": {"run": "./cerise/test/hostname.cwl", "in": {}, "out": []},
        "nap": {"run": "cerise/test/sleep.cwl", "in": {}, "out": []},
    }

    workflow = parse(workflow_doc(steps=steps))

    assert [(step.id, step.run) for step in workflow.steps] == [
        ("count", "cerise/test/wc.cwl"),
        ("where", "cerise/test/hostname.cwl"),
        ("nap", "cerise/test/sleep.cwl"),
    ]


# --- input types -------------------------------------------------------------------------

ARRAY_OF_FILES = cwl.ArrayOf(cwl.Primitive.FILE)
OPTIONAL_FILE = cwl.UnionOf((cwl.Primitive.NULL, cwl.Primitive.FILE))


@pytest.mark.parametrize(
    ("declared", "parsed", "required"),
    [
        ("File", cwl.Primitive.FILE, True),
        ("File?", OPTIONAL_FILE, False),
        ("File[]", ARRAY_OF_FILES, True),
        ("File[]?", cwl.UnionOf((cwl.Primitive.NULL, ARRAY_OF_FILES)), False),
        ({"type": {"type": "array", "items": "File"}}, ARRAY_OF_FILES, True),
        ({"type": {"type": "array", "items": "File?"}}, cwl.ArrayOf(OPTIONAL_FILE), True),
        (["null", "File"], OPTIONAL_FILE, False),
        ({"type": ["null", "File"]}, OPTIONAL_FILE, False),
        ("Directory", cwl.Primitive.DIRECTORY, True),
        ("string", cwl.Primitive.STRING, True),
        ("int", cwl.Primitive.INT, True),
        ("long?", cwl.UnionOf((cwl.Primitive.NULL, cwl.Primitive.LONG)), False),
        ("Any", cwl.Primitive.ANY, True),
        (
            {"type": "File", "default": {"class": "File", "location": "x"}},
            cwl.Primitive.FILE,
            False,
        ),
        ({"type": "int", "default": 0}, cwl.Primitive.INT, False),
        ({"type": "int", "default": None}, cwl.Primitive.INT, True),
        (
            {"type": {"type": "enum", "symbols": ["fast", "#main/mode/exact"]}},
            cwl.EnumOf(frozenset({"fast", "exact"})),
            True,
        ),
        (
            {"type": {"type": "record", "fields": {"reads": "File", "label": "string?"}}},
            cwl.RecordOf(
                (
                    ("reads", cwl.Primitive.FILE),
                    ("label", cwl.UnionOf((cwl.Primitive.NULL, cwl.Primitive.STRING))),
                )
            ),
            True,
        ),
        (
            {"type": {"type": "record", "fields": [{"name": "#r/n", "type": "int"}]}},
            cwl.RecordOf((("n", cwl.Primitive.INT),)),
            True,
        ),
    ],
)
def test_input_type_syntax(declared: Any, parsed: cwl.InputType, required: bool) -> None:
    (parameter,) = parse(workflow_doc(inputs={"x": declared})).inputs

    assert (parameter.name, parameter.type, parameter.required) == ("x", parsed, required)


def test_inputs_in_list_form_are_accepted() -> None:
    inputs = [{"id": "file", "type": "File"}, {"id": "#lines", "type": "int?"}]

    workflow = parse(workflow_doc(inputs=inputs))

    assert [(p.name, p.required) for p in workflow.inputs] == [("file", True), ("lines", False)]


@pytest.mark.parametrize(
    ("inputs", "expected"),
    [
        ({"x": "Fiel"}, "'/inputs/x': unknown type 'Fiel'; use null, boolean, int, long,"),
        ({"x": "array"}, "'/inputs/x': unknown type 'array'"),
        ({"x": "#MyRecord"}, "unknown type '#MyRecord'"),
        ({"x": {"type": "File[]??x"}}, "'/inputs/x/type': unknown type 'File[]??x'"),
        ({"x": []}, "'/inputs/x': an empty list is not a type"),
        ({"x": 5}, "'/inputs/x': 5 is not a type"),
        ({"x": None}, "input 'x' has no 'type'"),
        ({"x": {"default": 1}}, "input 'x' has no 'type'"),
        ({"x": {"type": {"type": "array"}}}, "a type schema needs type: array (with 'items')"),
        ({"x": {"type": {"type": "map", "values": "File"}}}, "a type schema needs type: array"),
        ({"x": {"type": {"type": "enum"}}}, "an enum needs a list of 'symbols'"),
        ({"x": {"type": {"type": "enum", "symbols": [1]}}}, "enum symbols must be strings"),
        ({"x": {"type": {"type": "record"}}}, "a record needs 'fields' (a mapping or a list)"),
        ({"x": {"type": {"type": "record", "fields": [{"type": "int"}]}}}, "a record field needs"),
        ([{"type": "File"}], "'/inputs/0': each input in list form needs an 'id'"),
        (["file"], "'/inputs/0': each input in list form needs an 'id'"),
        ([{"id": "a", "type": "int"}, {"id": "#a", "type": "int"}], "input 'a' is declared twice"),
        ([{"id": "", "type": "int"}], "'/inputs/0': an input needs a non-empty name"),
        (
            {"cwl:requirements": "Any"},
            "input name 'cwl:requirements' is not allowed: in an input object, names with ':' "
            "(such as cwl:requirements) or starting with '$' are read by the runner itself",
        ),
        ([{"id": "cwl:tool", "type": "string"}], "input name 'cwl:tool' is not allowed"),
        ({"$schemas": "Any"}, "input name '$schemas' is not allowed"),
        (
            {"x": {"type": "File", "default": "data.txt"}},
            "input 'x' has a default that does not fit its type, at '/inputs/x/default': "
            'expected a File object like {"class": "File", "location": "..."}, got a string',
        ),
        (
            {"x": {"type": "int[]", "default": [1, "2"]}},
            "at '/inputs/x/default/1': expected int, got a string",
        ),
        ({"x": "File" + "[]" * (cwl.MAX_DEPTH + 1)}, "is nested too deeply"),
    ],
)
def test_bad_input_declarations_are_refused(inputs: Any, expected: str) -> None:
    assert expected in refusal(workflow_doc(inputs=inputs))


# --- input objects -----------------------------------------------------------------------

MANY_INPUTS = {
    "file": "File",
    "lines": "int",
    "label": "string?",
    "mode": {"type": "string", "default": "fast"},
    "extra": "File[]?",
}


@pytest.fixture
def many() -> cwl.Workflow:
    return parse(workflow_doc(inputs=MANY_INPUTS))


@pytest.mark.parametrize(
    ("input_object", "expected"),
    [
        ({}, "missing required input 'file' and 'lines'"),
        ({"file": a_file()}, "missing required input 'lines'"),
        ({"file": a_file(), "lines": None}, "missing required input 'lines'"),
        (
            {"file": a_file(), "lines": 1, "lnies": 2},
            "unknown input 'lnies' (did you mean 'lines'?)",
        ),
        (
            {"file": a_file(), "lines": 1, "zzz": 2, "cwl:tool": "x"},
            "unknown input 'cwl:tool' (the workflow does not declare it); "
            "unknown input 'zzz' (the workflow does not declare it)",
        ),
        (
            {"fiel": a_file(), "lines": 1},
            "missing required input 'file'; unknown input 'fiel' (did you mean 'file'?)",
        ),
        ([a_file()], "the input object must be a mapping from input name to value, not a list"),
        (None, "the input object must be a mapping from input name to value, not null"),
    ],
)
def test_missing_and_unknown_inputs_are_named(
    many: cwl.Workflow, input_object: Any, expected: str
) -> None:
    assert inputs_refusal(many, input_object) == expected


def test_optional_inputs_may_be_left_out_or_null(many: cwl.Workflow) -> None:
    references = cwl.check_inputs(
        many, {"file": a_file(), "lines": 3, "label": None, "extra": None}
    )

    assert references == (ref(("file",), "http://x/in/job/data.txt"),)


FILE_EXAMPLE = 'expected a File object like {"class": "File", "location": "..."}'


@pytest.mark.parametrize(
    ("declared", "value", "expected"),
    [
        ("File", "http://x/data.txt", f"at '/x': {FILE_EXAMPLE}, got a string"),
        ("File", [a_file()], f"at '/x': {FILE_EXAMPLE}, got a list"),
        ("File", {"location": "http://x/a"}, f"{FILE_EXAMPLE}, but it has no 'class'"),
        ("File", {"class": "Directory", "location": "d"}, "but its class is 'Directory'"),
        ("File", {"class": "File"}, "at '/x': the File has no 'location' (nor 'contents')"),
        ("Directory", {"class": "Directory"}, "the Directory has no 'location' (nor 'listing')"),
        ("Directory", a_file(), "but its class is 'File'"),
        ("File", a_file(""), "at '/x/location': a location must be a non-empty string, not ''"),
        ("File", a_file(None), "at '/x/location': a location must be a non-empty string, not null"),
        ("File", {"class": "File", "path": 3}, "at '/x/path': a location must be a non-empty"),
        ("File", a_file("http://x/a\x00b"), "the location 'http://x/a\\x00b' contains a control"),
        ("File", a_file("http://x/a\nb"), "contains a control character"),
        ("File", a_file(basename=".."), "the basename '..' is not a file name"),
        ("File", a_file(basename="."), "the basename '.' is not a file name"),
        ("File", a_file(basename=""), "the basename '' is not a file name"),
        ("File", a_file(basename="../../.bashrc"), "the basename '../../.bashrc' is not a file"),
        ("File", a_file(basename="a\x00b"), "at '/x/basename': the basename 'a\\x00b' is not"),
        ("File", a_file(basename=7), "the basename an integer is not a file name"),
        ("File", {"class": "File", "contents": 7}, "at '/x/contents': 'contents' must be a string"),
        ("File", a_file(secondaryFiles=a_file()), "at '/x/secondaryFiles': 'secondaryFiles' must"),
        (
            "File",
            a_file(secondaryFiles=["data.idx"]),
            "at '/x/secondaryFiles/0': entries of 'secondaryFiles' must be File or Directory "
            "objects, got a string",
        ),
        (
            "File",
            a_file(secondaryFiles=[a_file(secondaryFiles=[{"class": "File"}])]),
            "at '/x/secondaryFiles/0/secondaryFiles/0': the File has no 'location'",
        ),
        (
            "Directory",
            {"class": "Directory", "listing": [{"class": "Link"}]},
            "entries of 'listing' must be File or Directory objects, got an object of class",
        ),
        ("File[]", a_file(), "at '/x': expected array of File, got an object of class 'File'"),
        ("File[]", [a_file(), "b"], f"at '/x/1': {FILE_EXAMPLE}, got a string"),
        ("File?", "data.txt", f"at '/x': {FILE_EXAMPLE}, got a string"),
        (["null", "File", "string"], 3, "expected null or File or string, got an integer"),
        ("string", 3, "at '/x': expected string, got an integer"),
        ("string", "a\x00b", "at '/x': the string contains a NUL character"),
        ("string[]", ["ok", "a\x00b"], "at '/x/1': the string contains a NUL character"),
        ("int", "3", "expected int, got a string"),
        ("int", True, "expected int, got a boolean"),
        ("int", 2.5, "expected int, got a number"),
        ("long", 1.0, "expected long, got a number"),
        ("double", "1e3", "expected double, got a string"),
        ("boolean", "true", "expected boolean, got a string"),
        ("boolean", 1, "expected boolean, got an integer"),
        ({"type": "enum", "symbols": ["a", "b"]}, "c", "expected one of 'a' or 'b', got 'c'"),
        ({"type": "enum", "symbols": ["a"]}, 1, "expected one of 'a', got an integer"),
        ({"type": "record", "fields": {"n": "int"}}, [], "expected a record, got a list"),
        ({"type": "record", "fields": {"n": "int"}}, {}, "at '/x': record field 'n' is missing"),
        (
            {"type": "record", "fields": {"n": "int"}},
            {"n": 1, "sneaky": a_file()},
            "at '/x': unknown record field 'sneaky'",
        ),
        ({"type": "record", "fields": {"n": "int"}}, {"n": "1"}, "at '/x/n': expected int"),
        ("Any", {"deep": [{"class": "File"}]}, "at '/x/deep/0': the File has no 'location'"),
        ("Any", ["a\x00"], "at '/x/0': the string contains a NUL character"),
    ],
)
def test_values_that_do_not_fit_their_type_are_refused(
    declared: Any, value: Any, expected: str
) -> None:
    workflow = parse(workflow_doc(inputs={"x": {"type": declared}}))

    message = inputs_refusal(workflow, {"x": value})

    assert message.startswith("input 'x' at '/x")
    assert expected in message


def test_any_does_not_accept_null() -> None:
    workflow = parse(workflow_doc(inputs={"x": {"type": ["Any", "string"]}}))

    assert inputs_refusal(workflow, {"x": None}) == "missing required input 'x'"
    assert cwl.check_inputs(workflow, {"x": "s"}) == ()


@pytest.mark.parametrize(
    ("declared", "value"),
    [
        ("int", 3),
        ("long", 2**40),
        ("float", 3),
        ("double", 0.5),
        ("boolean", False),
        ("string", 'it\'s $(rm -rf ~); `id` "quoted"'),
        ("string?", None),
        ("int[]", []),
        (["int", "string"], "x"),
        ({"type": "enum", "symbols": ["#main/x/fast", "exact"]}, "fast"),
        ({"type": "record", "fields": {"n": "int", "s": "string?"}}, {"n": 1}),
        ("Any", {"k": [1, "two", None]}),
    ],
)
def test_values_that_fit_their_type_are_accepted(declared: Any, value: Any) -> None:
    workflow = parse(workflow_doc(inputs={"x": {"type": declared}}))

    assert cwl.check_inputs(workflow, {"x": value}) == ()


# --- file references ---------------------------------------------------------------------


def nested(value: Any, levels: int) -> Any:
    for _ in range(levels):
        value = [value]
    return value


def references_for(declared: Any, value: Any) -> tuple[FileReference, ...]:
    workflow = parse(workflow_doc(inputs={"x": {"type": declared}}, steps={}))
    return cwl.check_inputs(workflow, {"x": value})


def test_a_file_with_recursive_secondary_files_gives_references_depth_first() -> None:
    value = a_file(
        "http://x/in/j/reads.bam",
        basename="reads.bam",
        secondaryFiles=[
            a_file("http://x/in/j/reads.bam.bai", secondaryFiles=[a_file("http://x/in/j/bai.md5")]),
            {"class": "Directory", "location": "http://x/in/j/index/"},
        ],
    )

    assert references_for("File", value) == (
        ref(("x",), "http://x/in/j/reads.bam", basename="reads.bam"),
        ref(("x", "secondaryFiles", 0), "http://x/in/j/reads.bam.bai"),
        ref(("x", "secondaryFiles", 0, "secondaryFiles", 0), "http://x/in/j/bai.md5"),
        ref(("x", "secondaryFiles", 1), "http://x/in/j/index/", kind=FileKind.DIRECTORY),
    )


def test_file_arrays_give_one_reference_per_file() -> None:
    value = [a_file("a"), a_file("b", secondaryFiles=[a_file("b.idx")]), a_file("c")]

    assert references_for("File[]", value) == (
        ref(("x", 0), "a"),
        ref(("x", 1), "b"),
        ref(("x", 1, "secondaryFiles", 0), "b.idx"),
        ref(("x", 2), "c"),
    )


def test_files_in_nested_records_and_arrays_are_found() -> None:
    declared = {
        "type": "record",
        "fields": {
            "sample": "string",
            "runs": {
                "type": {
                    "type": "array",
                    "items": {"type": "record", "fields": {"reads": "File", "mates": "File?"}},
                }
            },
        },
    }
    value = {
        "sample": "s1",
        "runs": [{"reads": a_file("r1")}, {"reads": a_file("r2"), "mates": a_file("m2")}],
    }

    assert references_for(declared, value) == (
        ref(("x", "runs", 0, "reads"), "r1"),
        ref(("x", "runs", 1, "reads"), "r2"),
        ref(("x", "runs", 1, "mates"), "m2"),
    )


def test_directories_and_their_listings_are_found() -> None:
    value = {
        "class": "Directory",
        "location": "http://x/in/j/dir",
        "listing": [
            a_file("http://x/in/j/dir/a"),
            {"class": "Directory", "listing": [a_file("http://x/in/j/dir/sub/b")]},
        ],
    }

    assert references_for("Directory", value) == (
        ref(("x",), "http://x/in/j/dir", kind=FileKind.DIRECTORY),
        ref(("x", "listing", 0), "http://x/in/j/dir/a"),
        ref(("x", "listing", 1, "listing", 0), "http://x/in/j/dir/sub/b"),
    )


def test_literals_are_not_references_but_what_they_hold_is() -> None:
    literal = {"class": "File", "basename": "notes.txt", "contents": "hello\n"}
    directory = {"class": "Directory", "basename": "d", "listing": [literal, a_file("kept")]}

    assert references_for("File", literal) == ()
    assert references_for("Directory", directory) == (ref(("x", "listing", 1), "kept"),)


def test_a_path_serves_as_location_when_there_is_none() -> None:
    assert references_for("File", {"class": "File", "path": "/data/a.txt"}) == (
        ref(("x",), "/data/a.txt"),
    )


def test_files_anywhere_in_an_any_value_are_found() -> None:
    value = {"a": [1, a_file("one")], "b": {"c": {"class": "Directory", "location": "two"}}}

    assert references_for("Any", value) == (
        ref(("x", "a", 1), "one"),
        ref(("x", "b", "c"), "two", kind=FileKind.DIRECTORY),
    )


def test_a_union_picks_the_alternative_that_fits() -> None:
    assert references_for(["string", "File"], a_file("f")) == (ref(("x",), "f"),)
    assert references_for(["File", "string"], "just text") == ()


@pytest.mark.parametrize(
    "name",
    [
        "my data.txt",
        "it's.txt",
        'say "hi".txt',
        "$(rm -rf ~).txt",
        "${HOME}",
        "a;b&&c|d",
        "`id`",
        "...",
        "..data",
        "-rf",
        "ünïcødé.txt",
    ],
)
def test_hostile_names_are_passed_on_verbatim_for_staging_to_sanitise(name: str) -> None:
    location = f"http://x/in/job/{name}"

    references = references_for("File", a_file(location, basename=name))

    assert references == (ref(("x",), location, basename=name),)


def test_defaults_are_staged_only_when_the_input_leaves_them_in_use() -> None:
    inputs = {
        "file": "File",
        "table": {"type": "File", "default": {"class": "File", "location": "table.csv"}},
        "more": {"type": "File[]?", "default": [a_file("m1", secondaryFiles=[a_file("m1.i")])]},
    }
    workflow = parse(workflow_doc(inputs=inputs))

    left_out = cwl.check_inputs(workflow, {"file": a_file("f"), "more": None})
    given = cwl.check_inputs(workflow, {"file": a_file("f"), "table": a_file("t"), "more": []})

    wf = Origin.WORKFLOW
    assert left_out == (
        ref(("file",), "f"),
        ref(("inputs", "table", "default"), "table.csv", origin=wf),
        ref(("inputs", "more", "default", 0), "m1", origin=wf),
        ref(("inputs", "more", "default", 0, "secondaryFiles", 0), "m1.i", origin=wf),
    )
    assert given == (ref(("file",), "f"), ref(("table",), "t"))


def test_defaults_in_list_form_inputs_point_at_the_list_entry() -> None:
    inputs = [{"id": "table", "type": "File", "default": a_file("table.csv")}]
    workflow = parse(workflow_doc(inputs=inputs))

    assert cwl.check_inputs(workflow, {}) == (
        ref(("inputs", 0, "default"), "table.csv", origin=Origin.WORKFLOW),
    )


def test_step_input_defaults_are_staged() -> None:
    step_in = {
        "file": "file",
        "pattern": {"default": a_file("p.txt", secondaryFiles=[a_file("p.idx")])},
        "plain": {"source": "file", "default": "not a file"},
    }
    listed = [{"id": "extra", "default": [{"nested": a_file("deep.txt")}]}]
    steps = {
        "wc": {"run": "cerise/test/wc.cwl", "in": step_in, "out": []},
        "wc2": {"run": "cerise/test/wc.cwl", "in": listed, "out": []},
    }
    workflow = parse(workflow_doc(steps=steps))

    wf = Origin.WORKFLOW
    assert workflow.step_defaults == (
        ref(("steps", "wc", "in", "pattern", "default"), "p.txt", origin=wf),
        ref(("steps", "wc", "in", "pattern", "default", "secondaryFiles", 0), "p.idx", origin=wf),
        ref(("steps", "wc2", "in", 0, "default", 0, "nested"), "deep.txt", origin=wf),
    )
    assert cwl.check_inputs(workflow, {"file": a_file("f")}) == (
        ref(("file",), "f"),
        *workflow.step_defaults,
    )


def test_bad_step_input_defaults_are_refused() -> None:
    step = {"in": {"pattern": {"default": {"class": "File", "basename": "../x"}}}}

    assert refusal(with_step(**step)) == (
        "step 'wc': default at '/steps/wc/in/pattern/default/basename': the basename '../x' is "
        "not a file name (it must not be empty, '.' or '..', nor contain '/' or NUL)"
    )


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ({"$import": "file:///etc/passwd"}, "$import at '/x' in the input object is not allowed"),
        (
            [a_file("a", checksum={"$include": "/etc/shadow"})],
            "$include at '/x/0/checksum' in the input object is not allowed",
        ),
        ({"$mixin": "m.yml"}, "$mixin at '/x' in the input object is not allowed"),
        (float("nan"), "the value at '/x' in the input object is nan, which JSON cannot hold"),
        ([1.0, float("inf")], "the value at '/x/1' in the input object is inf"),
        ({1: "one"}, "key 1 at '/x' in the input object is not a string"),
        ({"when": b"bytes"}, "the value at '/x/when' in the input object is a bytes"),
        (
            nested("bottom", cwl.MAX_DEPTH),
            f"the input object is nested too deeply (more than {cwl.MAX_DEPTH} levels)",
        ),
    ],
)
def test_input_objects_are_scanned_like_workflows(value: Any, expected: str) -> None:
    workflow = parse(workflow_doc(inputs={"x": "Any"}))

    assert inputs_refusal(workflow, {"x": value}).startswith(expected)


def test_values_just_within_the_depth_limit_are_accepted() -> None:
    workflow = parse(workflow_doc(inputs={"x": "Any"}))

    assert cwl.check_inputs(workflow, {"x": nested(a_file("deep"), cwl.MAX_DEPTH - 2)}) == (
        ref(("x", *[0] * (cwl.MAX_DEPTH - 2)), "deep"),
    )


def test_unions_cannot_multiply_the_work_without_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    # Two array alternatives per level: a value failing at the bottom is tried 2**levels times.
    declared: Any = "int"
    value: Any = "not an int"
    for _ in range(13):
        declared = [{"type": "array", "items": declared}, {"type": "array", "items": declared}]
        value = [value]
    workflow = parse(workflow_doc(inputs={"x": {"type": declared}}))
    monkeypatch.setattr(cwl, "MAX_CHECKS", 2_000)

    message = inputs_refusal(workflow, {"x": value})

    assert message.startswith("the values are too many or too intricate to check")


# --- resources ---------------------------------------------------------------------------


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
        ({"ResourceRequirement": {"ramMin": 1024}}, Resources()),
        ({"TimeLimit": 60}, Resources(time_limit=60)),
        ({"TimeLimit": {"timeLimit": 90}}, Resources(time_limit=90)),
        ({"TimeLimit": "$(inputs.t)"}, Resources()),
        ({"ToolTimeLimit": {"timelimit": 30}}, Resources(time_limit=30)),
        ([{"class": "TimeLimit", "timeLimit": 45}], Resources(time_limit=45)),
        (
            [
                {"class": "ResourceRequirement", "coresMin": 3},
                {"class": "TimeLimit", "timeLimit": 5},
            ],
            Resources(cores=3, time_limit=5),
        ),
    ],
)
def test_resources_declared_by_a_document(hints: Any, expected: Resources) -> None:
    assert parse(workflow_doc(hints=hints)).resources == expected
    assert cwl.declared_resources({"class": "CommandLineTool", "hints": hints}) == expected


def test_the_larger_of_hints_and_requirements_counts() -> None:
    document = {
        "hints": {"ResourceRequirement": {"coresMin": 2}, "TimeLimit": 100},
        "requirements": [
            {"class": "ResourceRequirement", "coresMin": 6},
            {"class": "TimeLimit", "timeLimit": 10},
        ],
    }

    assert cwl.declared_resources(document) == Resources(cores=6, time_limit=100)


@pytest.mark.parametrize(
    ("hints", "expected"),
    [
        ({"ResourceRequirement": {"coresMin": -1}}, "'/hints/ResourceRequirement/coresMin' must"),
        ({"ResourceRequirement": {"coresMin": True}}, "non-negative number or an expression, not"),
        ({"ResourceRequirement": {"coresMax": [4]}}, "not [4]"),
        ({"ResourceRequirement": 4}, "'/hints/ResourceRequirement': ResourceRequirement must be"),
        ({"TimeLimit": -5}, "'/hints/TimeLimit': a time limit must be a whole number of seconds"),
        ({"TimeLimit": 1.5}, "a time limit must be a whole number of seconds or an expression"),
        ({"TimeLimit": None}, "not None"),
        ({"TimeLimit": {"limit": 5}}, "not None"),
        ([{"class": "ToolTimeLimit", "timeLimit": 5}], "'/hints/0': a time limit must be"),
    ],
)
def test_malformed_resource_values_are_refused(hints: Any, expected: str) -> None:
    assert expected in refusal(workflow_doc(hints=hints))


def steps_with(*hints: dict[str, Any]) -> dict[str, Any]:
    return {
        f"s{index}": {"run": "cerise/test/sleep.cwl", "in": {}, "out": [], "hints": step_hints}
        for index, step_hints in enumerate(hints)
    }


@pytest.mark.parametrize(
    ("workflow_hints", "step_hints", "expected"),
    [
        ({}, [], Resources()),
        ({"ResourceRequirement": {"coresMin": 4}}, [{}], Resources(cores=4)),
        (
            {"ResourceRequirement": {"coresMin": 4}},
            [{"ResourceRequirement": {"coresMin": 2}}, {"ResourceRequirement": {"coresMax": 16}}],
            Resources(cores=16),
        ),
        ({}, [{"TimeLimit": 60}, {"TimeLimit": 30}], Resources(time_limit=90)),
        ({"TimeLimit": 100}, [{"TimeLimit": 60}, {"TimeLimit": 30}], Resources(time_limit=100)),
        ({"TimeLimit": 50}, [{"TimeLimit": 60}, {"TimeLimit": 30}], Resources(time_limit=90)),
        ({}, [{"TimeLimit": 60}, {}], Resources()),
        ({"TimeLimit": 20}, [{"TimeLimit": 60}, {}], Resources(time_limit=20)),
    ],
)
def test_required_resources_combine_workflow_and_steps(
    workflow_hints: dict[str, Any], step_hints: list[dict[str, Any]], expected: Resources
) -> None:
    workflow = parse(workflow_doc(hints=workflow_hints, steps=steps_with(*step_hints)))

    assert cwl.required_resources(workflow) == expected


def test_installed_steps_contribute_what_their_tools_declare() -> None:
    steps = {
        "where": {"run": "cerise/test/hostname.cwl", "in": {}, "out": []},
        "count": {"run": "cerise/test/wc.cwl", "in": {}, "out": [], "hints": {"TimeLimit": 10}},
    }
    installed = {
        "cerise/test/hostname.cwl": cwl.declared_resources(
            yaml.safe_load(
                "class: CommandLineTool\nhints:\n  ResourceRequirement:\n    coresMin: 2\n"
                "  TimeLimit: 5\n"
            )
        ),
        "cerise/test/wc.cwl": Resources(time_limit=60),
    }
    workflow = parse(workflow_doc(steps=steps))

    assert cwl.required_resources(workflow, installed=installed) == Resources(
        cores=2, time_limit=65
    )
    assert cwl.required_resources(workflow) == Resources()


# --- translation, relocation, serialisation ----------------------------------------------


def test_translation_makes_every_run_absolute_and_leaves_the_rest() -> None:
    steps = {
        "count": {"run": "cerise/test/wc.cwl", "in": {"file": "file"}, "out": ["output"]},
        "where": {"run": "./cerise/test/hostname.cwl", "in": {}, "out": []},
    }
    workflow = parse(workflow_doc(steps=steps))
    before = copy.deepcopy(workflow.document)

    translated = cwl.translate_workflow(workflow, api_base="/home/me/.cerise/api/")

    assert translated["steps"]["count"]["run"] == (
        "/home/me/.cerise/api/cerise/steps/cerise/test/wc.cwl"
    )
    assert translated["steps"]["where"]["run"] == (
        "/home/me/.cerise/api/cerise/steps/cerise/test/hostname.cwl"
    )
    translated["steps"]["count"]["run"] = translated["steps"]["where"]["run"] = "x"
    assert translated == {
        **before,
        "steps": {"count": {**steps["count"], "run": "x"}, "where": {**steps["where"], "run": "x"}},
    }
    assert workflow.document == before


def test_relocation_rewrites_locations_at_the_pointers_only() -> None:
    input_object = {
        "x": a_file(
            "http://x/in/a",
            basename="a",
            path="/client/a",
            secondaryFiles=[a_file("http://x/in/a.idx")],
        ),
        "y": [a_file("http://x/in/b")],
    }
    before = copy.deepcopy(input_object)

    moved = cwl.relocate(
        input_object,
        {("x",): "/remote/work/01_a", ("y", 0): "/remote/work/03_b"},
    )

    assert moved == {
        "x": {
            "class": "File",
            "location": "/remote/work/01_a",
            "basename": "a",
            "secondaryFiles": [a_file("http://x/in/a.idx")],
        },
        "y": [a_file("/remote/work/03_b")],
    }
    assert input_object == before


@pytest.mark.parametrize("pointer", [("doc",), ("inputs",), ("inputs", "table", "type")], ids=str)
def test_relocation_refuses_pointers_that_are_not_files(pointer: tuple[str, ...]) -> None:
    document = workflow_doc(doc="text", inputs={"table": {"type": "File"}})

    with pytest.raises(ValueError, match="no File or Directory at '/"):
        cwl.relocate(document, {pointer: "/remote/x"})


def test_staging_a_workflow_default_end_to_end() -> None:
    inputs = {"table": {"type": "File", "default": a_file("table.csv")}}
    workflow = parse(workflow_doc(inputs=inputs))
    (reference,) = cwl.check_inputs(workflow, {})

    translated = cwl.translate_workflow(workflow, api_base="/api")
    moved = cwl.relocate(translated, {reference.pointer: "/remote/work/01_table.csv"})
    text = cwl.to_json(moved)

    assert reference.origin is Origin.WORKFLOW
    assert json.loads(text)["inputs"]["table"]["default"] == a_file("/remote/work/01_table.csv")
    assert json.loads(text)["steps"]["wc"]["run"] == "/api/cerise/steps/cerise/test/wc.cwl"


def test_json_output_parses_back_to_the_document() -> None:
    document = workflow_doc(doc='naïve $(x) "q" \x01')
    translated = cwl.translate_workflow(parse(document), api_base="/a")

    text = cwl.to_json(translated)

    assert text.endswith("}\n")
    assert text.isascii()
    assert json.loads(text) == translated
    assert json.loads(text)["doc"] == 'naïve $(x) "q" \x01'
