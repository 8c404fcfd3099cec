"""Workflow inputs: their declared types, and the input object's values checked against them."""

from __future__ import annotations

from typing import Any

import pytest

from cerise.model import cwl
from cerise.model.cwl import FileKind, FileReference, InvalidWorkflow, Origin, inputs, values
from tests.unit.cwl_samples import a_file, parse, ref, refusal, with_inputs


def inputs_refusal(workflow: cwl.Workflow, input_object: Any) -> str:
    with pytest.raises(InvalidWorkflow) as info:
        cwl.check_inputs(workflow, input_object)
    return str(info.value)


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
    (parameter,) = inputs.parse_inputs({"x": declared})

    assert (parameter.name, parameter.type, parameter.required) == ("x", parsed, required)


def test_the_loader_accepts_the_usual_type_forms() -> None:
    declared = {
        "a": "File[]?",
        "b": {"type": {"type": "array", "items": "File"}},
        "c": ["null", "Directory"],
        "d": {"type": "int", "default": 0},
        "e": {"type": {"type": "enum", "symbols": ["fast", "exact"]}},
        "f": {"type": {"type": "record", "fields": {"reads": "File", "label": "string?"}}},
        "g": {"type": {"type": "record", "fields": [{"name": "n", "type": "int"}]}},
        "h": "Any",
    }

    assert [parameter.name for parameter in parse(with_inputs(declared)).inputs] == list(declared)


def test_inputs_in_list_form_are_accepted() -> None:
    inputs = [{"id": "file", "type": "File"}, {"id": "#lines", "type": "int?"}]

    workflow = parse(with_inputs(inputs))

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
    assert expected in refusal(with_inputs(inputs))


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
    return parse(with_inputs(MANY_INPUTS))


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
    workflow = parse(with_inputs({"x": {"type": declared}}))

    message = inputs_refusal(workflow, {"x": value})

    assert message.startswith("input 'x' at '/x")
    assert expected in message


def test_any_does_not_accept_null() -> None:
    workflow = parse(with_inputs({"x": {"type": ["Any", "string"]}}))

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
    workflow = parse(with_inputs({"x": {"type": declared}}))

    assert cwl.check_inputs(workflow, {"x": value}) == ()


# --- file references ---------------------------------------------------------------------


def nested(value: Any, levels: int) -> Any:
    for _ in range(levels):
        value = [value]
    return value


def references_for(declared: Any, value: Any) -> tuple[FileReference, ...]:
    workflow = parse(with_inputs({"x": {"type": declared}}))
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
    workflow = parse(with_inputs(inputs))

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
    workflow = parse(with_inputs(inputs))

    assert cwl.check_inputs(workflow, {}) == (
        ref(("inputs", 0, "default"), "table.csv", origin=Origin.WORKFLOW),
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
        ({"when": b"bytes"}, "the value at '/x/when' in the input object is binary data"),
        (
            nested("bottom", cwl.MAX_DEPTH),
            f"the input object is nested too deeply (more than {cwl.MAX_DEPTH} levels)",
        ),
    ],
)
def test_input_objects_are_scanned_like_workflows(value: Any, expected: str) -> None:
    workflow = parse(with_inputs({"x": "Any"}))

    assert inputs_refusal(workflow, {"x": value}).startswith(expected)


def test_values_just_within_the_depth_limit_are_accepted() -> None:
    workflow = parse(with_inputs({"x": "Any"}))

    assert cwl.check_inputs(workflow, {"x": nested(a_file("deep"), cwl.MAX_DEPTH - 2)}) == (
        ref(("x", *[0] * (cwl.MAX_DEPTH - 2)), "deep"),
    )


def test_unions_cannot_multiply_the_work_without_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    # Two array alternatives per level: a value failing at the bottom is tried 2**levels times.
    declared: cwl.InputType = cwl.Primitive.INT
    value: Any = "not an int"
    for _ in range(13):
        declared = cwl.UnionOf((cwl.ArrayOf(declared), cwl.ArrayOf(declared)))
        value = [value]
    parameter = cwl.InputParameter("x", declared, True, ())
    monkeypatch.setattr(values, "MAX_CHECKS", 2_000)

    with pytest.raises(InvalidWorkflow) as info:
        inputs.check_object([parameter], {"x": value})

    assert str(info.value).startswith("the values are too many or too intricate to check")


def test_types_nested_deeper_than_the_loader_can_afford_are_refused() -> None:
    declared: Any = "int"
    for _ in range(6):
        declared = [{"type": "array", "items": declared}, "null"]

    assert refusal(with_inputs({"x": {"type": declared}})).startswith(
        "'/inputs/x/type/0/items/0/items/0/items/0/items/0/items/0': the type is nested too "
        "deeply (more than 10 levels)"
    )
    assert "the type is nested too deeply" in refusal(
        with_inputs({}, outputs={"o": {"type": declared, "outputSource": "x"}})
    )
