"""Fields through which a value could reach outside its job: secondaryFiles patterns,
format, loadContents, bindings, names that garble logs."""

from __future__ import annotations

from typing import Any

import pytest

from tests.unit.cwl_samples import parse, refusal, with_inputs, workflow_doc


def with_secondary(patterns: Any, version: str = "v1.2") -> dict[str, Any]:
    return workflow_doc(
        cwlVersion=version, inputs={"file": {"type": "File", "secondaryFiles": patterns}}
    )


@pytest.mark.parametrize(
    "patterns",
    [
        ".idx",
        "^.bai",
        "^^.fa.fai",
        ".crai?",
        [".idx", "^.bai?"],
        [{"pattern": ".idx", "required": False}, {"pattern": "^.bai"}],
        {"pattern": ".tbi", "required": "$(inputs.file.size > 0)".replace(" > 0", "")},
        "^",
    ],
)
def test_plain_suffixes_are_accepted(patterns: Any) -> None:
    parse(with_secondary(patterns))


@pytest.mark.parametrize("patterns", [".idx", "^.bai"])
def test_v1_0_patterns_are_accepted(patterns: Any) -> None:
    parse(with_secondary(patterns, "v1.0"))


@pytest.mark.parametrize(
    ("patterns", "where", "problem"),
    [
        ("^/../../../other/work/x", "", "'^/../../../other/work/x' contains '/'"),
        ("/etc/passwd", "", "'/etc/passwd' contains '/'"),
        (".idx/../../x", "", "contains '/'"),
        ([".idx", "..\\x"], "/1", "'..\\\\x' contains '/', a backslash"),
        ([{"pattern": "^/../x", "required": False}], "/0/pattern", "contains '/'"),
        ("$(inputs.other)", "", "'$(inputs.other)' is an expression"),
        ("${return '/etc/passwd'}", "", "is an expression"),
        ("^..", "", "'^..' is only dots"),
        ("..", "", "'..' is only dots"),
        ("", "", "is empty"),
        ("?", "", "is empty"),
        ([7], "/0", "is not a string"),
    ],
)
def test_other_patterns_are_refused(patterns: Any, where: str, problem: str) -> None:
    message = refusal(with_secondary(patterns))

    assert message.startswith(f"'/inputs/file/secondaryFiles{where}': the secondaryFiles pattern ")
    assert problem in message
    assert message.endswith("a pattern must be a plain suffix such as '.idx', '^.bai' or '.crai?'")


def test_patterns_of_workflow_outputs_and_record_fields_are_checked() -> None:
    record = {"type": "record", "fields": [
        {"name": "reads", "type": "File", "secondaryFiles": ["^/../x"]}]}
    message = refusal(with_inputs({"r": {"type": record}}))

    assert message.startswith("'/inputs/r/type/fields/0/secondaryFiles/0': the secondaryFiles")

    output = {"type": "File", "outputSource": "wc/output", "secondaryFiles": "/../x"}
    message = refusal(workflow_doc(cwlVersion="v1.0", outputs={"counts": output}))

    assert message.startswith("'/outputs/counts/secondaryFiles': the secondaryFiles")


def test_an_input_named_like_a_field_is_checked_too() -> None:
    inputs = {"default": {"type": "File?", "secondaryFiles": ["/etc/passwd"]}}

    assert refusal(with_inputs(inputs)).startswith("'/inputs/default/secondaryFiles/0': ")


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ({"type": "File", "format": "$(inputs.f)"}, "'/inputs/x/format': a format must be written"),
        ({"type": "File", "format": ["edam:x", 3]}, "'/inputs/x/format/1': a format must be"),
        ({"type": "File", "loadContents": "yes"},
         "'/inputs/x/loadContents': loadContents must be true or false, not 'yes'"),
        ({"type": "File", "loadContents": "$(inputs.y)"}, "loadContents must be true or false"),
        ({"type": "Directory", "loadListing": "$(inputs.y)"},
         "loadListing must be deep_listing, no_listing, shallow_listing"),
    ],
)
def test_format_and_loading_are_literals(spec: dict[str, Any], expected: str) -> None:
    message = refusal(with_inputs({"x": spec}))

    assert message.startswith("'/inputs/x/")
    assert expected in message


def test_literal_format_and_loading_are_accepted() -> None:
    inputs = {
        "x": {"type": "File?", "format": "http://edamontology.org/format_2572",
              "loadContents": True},
        "d": {"type": "Directory?", "loadListing": "shallow_listing"},
    }
    parse(with_inputs(inputs))


def test_a_workflow_output_binding_is_refused() -> None:
    output = {"type": "File", "outputSource": "wc/output",
              "outputBinding": {"glob": "/etc/passwd", "outputEval": "$(self)"}}

    assert refusal(workflow_doc(cwlVersion="v1.0", outputs={"counts": output})).startswith(
        "'/outputs/counts/outputBinding': a submitted workflow may not have an outputBinding"
    )


def test_a_v1_0_input_binding_may_only_load_contents() -> None:
    loads = {"x": {"type": "File?", "inputBinding": {"loadContents": True}}}
    parse(with_inputs(loads, cwlVersion="v1.0"))

    binds = {"x": {"type": "File?", "inputBinding": {"valueFrom": "$(self.path)"}}}
    assert refusal(with_inputs(binds, cwlVersion="v1.0")).startswith(
        "'/inputs/x/inputBinding': only loadContents is allowed in the inputBinding"
    )


@pytest.mark.parametrize("name", ["a\nb", "a\u2028b", "a\u0085b", "a\u202eb", "a\x1bb"])
def test_names_that_garble_logs_are_refused(name: str) -> None:
    message = refusal(workflow_doc(steps={name: {
        "run": "cerise/test/wc.cwl", "in": {"file": "file"}, "out": ["output"]}}))

    assert message.startswith(f"the key {name!r} at '/steps' in the workflow contains a control")
