"""Expressions in a submitted workflow: parameter references only, never JavaScript."""

from __future__ import annotations

from typing import Any

import pytest

from cerise.model.cwl.expressions import problem_in
from tests.unit.cwl_samples import parse, refusal, with_step, workflow_doc

ESCAPE = "globalThis.constructor.constructor('return process')().mainModule"
STEP_EXPRESSIONS: dict[str, Any] = {"StepInputExpressionRequirement": {}}


def echo(message: Any, **step: Any) -> dict[str, Any]:
    """A workflow whose one step echoes `message` (a step input entry)."""
    return workflow_doc(
        inputs={"file": "File", "go": "boolean?"},
        outputs={},
        requirements=STEP_EXPRESSIONS,
        steps={"echo": {"run": "cerise/test/echo.cwl", "in": {"message": message, **step},
                        "out": []}},
    )


@pytest.mark.parametrize(
    "text",
    [
        "$(inputs.x)",
        "$(self.basename)",
        "name: $(self.nameroot) in $(runtime.outdir)",
        "$(inputs['odd name'][0].location)",
        '$(inputs["x"].size)',
        "$(null)",
        "\\$(not evaluated())",
        "\\${not evaluated}",
        "cost: $5 (or more)",
        "plain text",
    ],
)
def test_parameter_references_and_plain_text_pass(text: str) -> None:
    assert problem_in(text) is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("${return 1}", "the JavaScript block '${return 1}' is not allowed"),
        ("$(1 + 1)", "the expression '$(1 + 1)' is not a parameter reference"),
        (f"$({ESCAPE})", "is not a parameter reference"),
        ("$(inputs.x.toString())", "is not a parameter reference"),
        ("$(process)", "the expression '$(process)' is not a parameter reference"),
        ("ok $(inputs.x) then $(require('fs'))", "\"$(require('fs'))\" is not a parameter"),
        ("\\\\$(js())", "the expression '$(js())' is not a parameter reference"),
        ("\\x$(js())", "the expression '$(js())' is not a parameter reference"),
        ("$(inputs.x", "has an unfinished $(…) or ${…}"),
    ],
)
def test_javascript_is_found_as_cwltool_would_find_it(text: str, expected: str) -> None:
    problem = problem_in(text)

    assert problem is not None and expected in problem


@pytest.mark.parametrize(
    "document",
    [
        echo({"source": "file", "valueFrom": "$(self.basename)"}),
        echo({"source": "file", "valueFrom": "$(self.basename)"}, go="go"),
        workflow_doc(cwlVersion="v1.2", requirements={"ResourceRequirement": {
            "coresMin": "$(inputs.file.size)"}}),
        with_step(when="$(inputs.file.size)"),
        echo({"default": "${ not code: data }"}),
        workflow_doc(doc="Counts words; try ${x} or $(1+1) in your own tools.", label="$(x)"),
    ],
    ids=["valueFrom", "when", "resource", "when-step", "default-data", "doc-and-label"],
)
def test_parameter_references_are_accepted_and_data_is_not_read(document: dict[str, Any]) -> None:
    parse(document)


@pytest.mark.parametrize(
    ("document", "where"),
    [
        (echo({"source": "file", "valueFrom": f"$({ESCAPE})"}), "/steps/echo/in/message/valueFrom"),
        (echo({"source": "file", "valueFrom": "${return 'x'}"}),
         "/steps/echo/in/message/valueFrom"),
        (with_step(when=f"$({ESCAPE}.x)"), "/steps/wc/when"),
        (workflow_doc(requirements={"ResourceRequirement": {"coresMin": "${return 1}"}}),
         "/requirements/ResourceRequirement/coresMin"),
        (with_step(hints=[{"class": "ToolTimeLimit", "timelimit": "$(1 * 60)"}]),
         "/steps/wc/hints/0/timelimit"),
        (workflow_doc(outputs={"counts": {"type": "File", "outputSource": "wc/output",
                                          "pickValue": "${return 'x'}"}}),
         "/outputs/counts/pickValue"),
        (echo("${return 'x'}"), "/steps/echo/in/message"),
    ],
    ids=["valueFrom", "block", "when", "resource", "time-limit", "output", "source-shorthand"],
)
def test_javascript_anywhere_is_refused_naming_the_place(
    document: dict[str, Any], where: str
) -> None:
    message = refusal(document)

    assert message.startswith(f"'{where}': ")
    assert "no JavaScript" in message


def test_javascript_in_a_subworkflow_is_refused() -> None:
    inner = {
        "class": "Workflow",
        "requirements": STEP_EXPRESSIONS,
        "inputs": {"file": "File"},
        "outputs": {},
        "steps": {"echo": {"run": "cerise/test/echo.cwl", "out": [], "in": {
            "message": {"source": "file", "valueFrom": f"$({ESCAPE})"}}}},
    }
    document = workflow_doc(
        requirements={"SubworkflowFeatureRequirement": {}},
        outputs={},
        steps={"sub": {"run": inner, "in": {"file": "file"}, "out": []}},
    )

    message = refusal(document)

    assert message.startswith("'/steps/sub/run/steps/echo/in/message/valueFrom': the expression")


@pytest.mark.parametrize("section", ["requirements", "hints"])
@pytest.mark.parametrize("level", ["workflow", "step"])
def test_inline_javascript_is_refused(section: str, level: str) -> None:
    value = [{"class": "InlineJavascriptRequirement", "expressionLib": ["var x = 1;"]}]
    document = workflow_doc(**{section: value}) if level == "workflow" else with_step(
        **{section: value}
    )

    message = refusal(document)

    prefix, at = ("step 'wc': ", "/steps/wc") if level == "step" else ("", "")
    assert message.startswith(
        f"{prefix}InlineJavascriptRequirement at '{at}/{section}/0' is not allowed in a "
        "submitted workflow: JavaScript"
    )
