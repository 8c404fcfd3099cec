"""A workflow translated for the remote runner: absolute step paths, relocated Files, JSON."""

from __future__ import annotations

import copy
import json

import pytest

from cerise.model import cwl
from cerise.model.cwl import Origin
from tests.unit.cwl_samples import a_file, parse, workflow_doc


def test_translation_makes_every_run_absolute_and_leaves_the_rest() -> None:
    steps = {
        "count": {"run": "cerise/test/wc.cwl", "in": {"file": "file"}, "out": ["output"]},
        "where": {"run": "./cerise/test/hostname.cwl", "in": {}, "out": []},
    }
    workflow = parse(
        workflow_doc(steps=steps, outputs={"n": {"type": "File", "outputSource": "count/output"}})
    )
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
    inputs = {"file": "File?", "table": {"type": "File", "default": a_file("table.csv")}}
    steps = {"wc": {"run": "cerise/test/wc.cwl", "in": {"file": "table"}, "out": ["output"]}}
    workflow = parse(workflow_doc(inputs=inputs, steps=steps))
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
