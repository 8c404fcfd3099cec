"""The steps of a submitted workflow: safe paths to installed steps, and their defaults."""

from __future__ import annotations

import json
from typing import Any

import pytest

from cerise.model import cwl
from cerise.model.cwl import InvalidWorkflow, Origin
from tests.unit.cwl_samples import a_file, flat, parse, ref, refusal, with_step, workflow_doc


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
        ({"class": "Operation", "inputs": [], "outputs": []}, "an inline Operation"),
        ({"baseCommand": "sh"}, "an inline process"),
    ],
)
def test_inline_tools_are_refused(run: dict[str, Any], what: str) -> None:
    assert refusal(with_step(run=run)) == (
        f"step 'wc' runs {what}; inline tools are not allowed, 'run' must name "
        "an installed step as '<project>/<path>.cwl', e.g. 'cerise/test/wc.cwl' "
        "(or be an inline class: Workflow whose steps do)"
    )


@pytest.mark.parametrize(
    ("step", "expected"),
    [
        ({"in": {}, "out": []}, "step 'wc': 'run' must be a string; it must name an installed"),
        ({"run": None}, "step 'wc': 'run' must be a string"),
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
        cwl.parse_workflow(json.dumps(workflow_doc()), installed_steps={})


def test_files_beside_the_steps_are_not_steps() -> None:
    installed = {"cerise/test/wc.cwl": "", "cerise/test/wcc.yml": "", "cerise/test/wcc.sh": ""}

    with pytest.raises(InvalidWorkflow, match=r"did you mean 'cerise/test/wc.cwl'\?$"):
        cwl.parse_workflow(
            json.dumps(with_step(run="cerise/test/wcc.cwl")), installed_steps=installed
        )


@pytest.mark.parametrize(
    ("steps", "expected"),
    [
        ({"": {"run": "cerise/test/wc.cwl"}}, "'/steps/': a step needs a non-empty name"),
        ([{"run": "cerise/test/wc.cwl"}], "'/steps/0': each step in list form needs an 'id'"),
        (
            {"wc": {"id": "count", "run": "cerise/test/wc.cwl"}},
            "step 'wc' has a different id 'count'; remove the 'id'",
        ),
        ({"wc": {"id": 3, "run": "cerise/test/wc.cwl"}}, "step 'wc' has a different id '3'"),
        (
            {"a b'$(x);": {"run": "/x"}},
            "step \"a b'$(x);\" runs '/x', which is an absolute path",
        ),
    ],
)
def test_malformed_steps_are_refused(steps: Any, expected: str) -> None:
    assert refusal(workflow_doc(steps=steps)).startswith(expected)


@pytest.mark.parametrize(
    ("steps", "expected"),
    [
        ({"wc": "cerise/test/wc.cwl"}, "mapSubject 'wc' value None is not a dict"),
        ({"wc": None}, "mapSubject 'wc' value None is not a dict"),
        ("wc", "the 'steps' field is not valid"),
        (
            {"wc": {"run": "cerise/test/wc.cwl", "in": "file", "out": []}},
            "the 'in' field is not valid",
        ),
    ],
)
def test_steps_that_are_not_valid_cwl_are_left_to_the_loader(steps: Any, expected: str) -> None:
    assert expected in flat(refusal(workflow_doc(outputs={}, steps=steps)))


@pytest.mark.parametrize("own_id", ["wc", "#wc"])
def test_a_step_id_equal_to_its_key_is_accepted(own_id: str) -> None:
    assert parse(with_step(id=own_id)).steps[0].id == "wc"


def test_all_steps_are_returned_in_document_order() -> None:
    steps = {
        "count": {"run": "cerise/test/wc.cwl", "in": {"file": "file"}, "out": []},
        "where": {"run": "./cerise/test/hostname.cwl", "in": {}, "out": []},
        "nap": {"run": "cerise/test/sleep.cwl", "in": {}, "out": []},
    }

    workflow = parse(workflow_doc(outputs={}, steps=steps))

    assert [(step.id, step.run) for step in workflow.steps] == [
        ("count", "cerise/test/wc.cwl"),
        ("where", "cerise/test/hostname.cwl"),
        ("nap", "cerise/test/sleep.cwl"),
    ]


def test_step_input_defaults_are_staged() -> None:
    listed = [
        {"id": "file", "source": "file", "valueFrom": "$(inputs.extra[0].nested)"},
        {"id": "extra", "default": [{"nested": a_file("deep.txt")}]},
    ]
    steps = {
        "wc": {
            "run": "cerise/test/wc.cwl",
            "in": {"file": {"default": a_file("p.txt", secondaryFiles=[a_file("p.idx")])}},
            "out": [],
        },
        "echo": {
            "run": "cerise/test/echo.cwl",
            "in": {"message": {"source": "label", "default": "not a file"}},
            "out": [],
        },
        "wc2": {"run": "cerise/test/wc.cwl", "in": listed, "out": []},
    }
    document = workflow_doc(
        inputs={"file": "File", "label": "string?"},
        outputs={},
        steps=steps,
        requirements={"StepInputExpressionRequirement": {}},
    )
    workflow = parse(document)

    wf = Origin.WORKFLOW
    assert workflow.step_defaults == (
        ref(("steps", "wc", "in", "file", "default"), "p.txt", origin=wf),
        ref(("steps", "wc", "in", "file", "default", "secondaryFiles", 0), "p.idx", origin=wf),
        ref(("steps", "wc2", "in", 1, "default", 0, "nested"), "deep.txt", origin=wf),
    )
    assert cwl.check_inputs(workflow, {"file": a_file("f")}) == (
        ref(("file",), "f"),
        *workflow.step_defaults,
    )


def test_bad_step_input_defaults_are_refused() -> None:
    step = {"in": {"file": {"default": {"class": "File", "basename": "../x"}}}}

    assert refusal(with_step(**step)) == (
        "step 'wc': default at '/steps/wc/in/file/default/basename': the basename '../x' is "
        "not a file name (it must not be empty, '.' or '..', nor contain '/' or NUL)"
    )
