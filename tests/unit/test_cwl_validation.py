"""The whole workflow validated by cwltool's loader against the installed steps' documents."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

import pytest

from cerise.model import cwl
from cerise.model.cwl import InvalidWorkflow, validation
from tests.unit.cwl_samples import INSTALLED, flat, parse, refusal

WC = """\
cwlVersion: v1.2
class: Workflow
inputs:
  file: File
outputs:
  counts: {type: File, outputSource: wc/output}
steps:
  wc:
    run: cerise/test/wc.cwl
    in: {file: file}
    out: [output]
"""

WC_THEN_ECHO = """\
cwlVersion: v1.2
class: Workflow
inputs:
  file: File
outputs:
  said: {type: File, outputSource: echo/output}
steps:
  wc:
    run: cerise/test/wc.cwl
    in: {file: file}
    out: [output]
  echo:
    run: cerise/test/echo.cwl
    in: {message: wc/output}
    out: [output]
"""


def test_a_valid_workflow_passes() -> None:
    assert parse(WC).steps[0].run == "cerise/test/wc.cwl"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            WC.replace("outputSource: wc/output", "outputSource: wc/outptu"),
            "workflow.cwl:6:24: Field 'outputSource' references unknown identifier 'wc/outptu'",
        ),
        (
            WC.replace("outputSource: wc/output", "outputSource: count/output"),
            "Field 'outputSource' references unknown identifier 'count/output'",
        ),
        (
            WC.replace("in: {file: file}", "in: {file: fiel}"),
            "workflow.cwl:10:10: checking object 'workflow.cwl#wc/file' Field 'source' "
            "references unknown identifier 'fiel'",
        ),
        (
            WC.replace("out: [output]", "out: [outptu]").replace("wc/output", "wc/outptu"),
            "Workflow step output 'outptu' does not correspond to",
        ),
        (
            WC.replace("in: {file: file}", "in: {}"),
            "workflow.cwl:10:5: Step is missing required parameter 'file'",
        ),
        (
            WC_THEN_ECHO,
            "workflow.cwl:11:11: Source 'output' of type \"File\" is incompatible "
            "workflow.cwl:14:10: with sink 'message' of type \"string\"",
        ),
        (
            WC.replace("  file: File", "  file: string"),
            "Source 'file' of type \"string\" is incompatible",
        ),
        (
            WC.replace("counts: {type: File,", "counts: {type: int,"),
            "with sink 'counts' of type \"int\"",
        ),
        (WC.replace("outputs:", "outptus:"), "invalid field 'outptus', expected one of"),
        (WC.replace("cwlVersion: v1.2\n", ""), "No cwlVersion found."),
        (WC.replace("v1.2", "v0.9"), "Supported versions are"),
    ],
    ids=[
        "wrong-output-source",
        "output-source-of-no-step",
        "source-of-nothing",
        "step-output-the-tool-lacks",
        "required-step-input-missing",
        "types-between-steps",
        "type-of-workflow-input",
        "type-of-workflow-output",
        "unknown-field",
        "no-cwl-version",
        "unknown-cwl-version",
    ],
)
def test_the_loader_refuses_with_its_message(text: str, expected: str) -> None:
    message = refusal(text)

    assert expected in flat(message)
    assert "cerise.invalid" not in message


def test_a_step_input_the_tool_lacks_is_accepted_as_the_specification_says() -> None:
    text = WC.replace("in: {file: file}", "in: {file: file, lines: file}")

    assert parse(text).steps[0].id == "wc"


def test_a_step_input_the_tool_lacks_is_accepted_when_an_expression_uses_it() -> None:
    text = WC.replace(
        "in: {file: file}", "in: {file: {source: file, valueFrom: $(inputs.other)}, other: file}"
    ).replace("inputs:\n", "requirements: {StepInputExpressionRequirement: {}}\ninputs:\n")

    assert parse(text).steps[0].id == "wc"


@pytest.mark.parametrize(
    "outside", ["file:///etc/hostname", "/etc/hostname", "../../../../etc/hostname"]
)
def test_the_loader_reads_nothing_but_the_installed_steps(outside: str) -> None:
    wc = INSTALLED["cerise/test/wc.cwl"].replace(
        "baseCommand: wc", f"baseCommand: wc\ndoc: {{$include: {json.dumps(outside)}}}"
    )
    installed = {**INSTALLED, "cerise/test/wc.cwl": wc}

    with pytest.raises(InvalidWorkflow, match="is not an installed step"):
        cwl.parse_workflow(WC, installed_steps=installed)


def test_an_installed_step_may_import_its_neighbours() -> None:
    wc = INSTALLED["cerise/test/wc.cwl"].replace(
        "baseCommand: wc", "baseCommand: wc\ndoc: {$include: wc.txt}"
    )
    installed = {**INSTALLED, "cerise/test/wc.cwl": wc, "cerise/test/wc.txt": "Count."}

    assert parse(WC).steps == cwl.parse_workflow(WC, installed_steps=installed).steps


def test_a_crash_of_the_loader_becomes_a_refusal() -> None:
    text = WC.replace("  file: File", "  file: File\n  mode: {type: {type: enum, symbols: [1]}}")

    with pytest.raises(InvalidWorkflow) as info:
        validation.validate(text, INSTALLED)

    assert str(info.value).startswith("the CWL loader failed: TypeError: ")


def test_long_messages_are_cut() -> None:
    outputs = "".join(f"  o{i}: {{type: File, outputSource: wc/nothing{i}}}\n" for i in range(200))
    text = WC.replace("  counts: {type: File, outputSource: wc/output}\n", outputs)

    message = refusal(text)

    assert len(message) == validation.MESSAGE_LIMIT
    assert message.endswith("…")


def test_validations_in_parallel_threads_keep_to_their_own_documents() -> None:
    bad = WC.replace("wc/output", "wc/outptu")

    def outcome(text: str) -> str:
        try:
            validation.validate(text, INSTALLED)
        except InvalidWorkflow as error:
            return str(error)
        return "valid"

    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(outcome, [WC, bad] * 4))

    assert results[0::2] == ["valid"] * 4
    assert all("'wc/outptu'" in flat(result) for result in results[1::2])


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            WC.replace(
                "inputs:\n",
                "cwl:requirements: [{class: EnvVarRequirement, envDef: {X: y}}]\ninputs:\n",
            ),
            "'EnvVarRequirement' is not allowed in a submitted workflow (the CWL loader found it",
        ),
        (
            WC.replace(
                "    out: [output]\n",
                "    out: [output]\n    cwl:hints: [{class: DockerRequirement}]\n",
            ),
            "'DockerRequirement' is not allowed in a submitted workflow",
        ),
        (
            WC.replace(
                "    run: cerise/test/wc.cwl\n",
                "    run: cerise/test/wc.cwl\n    cwl:run: {class: CommandLineTool,"
                " baseCommand: sh, inputs: {file: File}, outputs: {output: stdout}}\n",
            ),
            "step wc does not run an installed step",
        ),
    ],
)
def test_the_rules_hold_for_what_the_loader_reads_too(text: str, expected: str) -> None:
    with pytest.raises(InvalidWorkflow) as info:
        validation.validate(text, INSTALLED)

    assert expected in flat(str(info.value))


def test_an_installed_tools_own_type_definitions_are_its_business() -> None:
    wc = INSTALLED["cerise/test/wc.cwl"].replace(
        "baseCommand: wc",
        "baseCommand: wc\nrequirements:\n  SchemaDefRequirement:\n"
        "    types: [{name: Mode, type: enum, symbols: [fast, exact]}]",
    )
    installed = {**INSTALLED, "cerise/test/wc.cwl": wc}

    assert cwl.parse_workflow(WC, installed_steps=installed).steps[0].run == "cerise/test/wc.cwl"


NESTED = """\
cwlVersion: v1.0
class: Workflow
requirements: {SubworkflowFeatureRequirement: {}}
inputs: {file: File}
outputs: {counts: {type: File, outputSource: sub/counts}}
steps:
  sub:
    run:
      class: Workflow
      inputs: {file: File}
      outputs: {counts: {type: File, outputSource: wc/output}}
      steps:
        wc:
          run: cerise/test/wc.cwl
          in: {file: file}
          out: [output]
    in: {file: file}
    out: [counts]
"""


def test_the_loader_accepts_an_upgraded_v1_0_workflow_with_a_subworkflow() -> None:
    validation.validate(NESTED, INSTALLED)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            NESTED.replace(
                "      inputs: {file: File}\n",
                "      cwl:hints: [{class: EnvVarRequirement, envDef: {X: y}}]\n"
                "      inputs: {file: File}\n",
            ),
            "'EnvVarRequirement' is not allowed in a submitted workflow (the CWL loader found it",
        ),
        (
            NESTED.replace(
                "          run: cerise/test/wc.cwl\n",
                "          run: cerise/test/wc.cwl\n          cwl:run: {class: CommandLineTool,"
                " baseCommand: sh, inputs: {file: File}, outputs: {output: stdout}}\n",
            ),
            "step wc does not run an installed step",
        ),
    ],
)
def test_the_rules_hold_for_what_the_loader_reads_in_subworkflows(
    text: str, expected: str
) -> None:
    with pytest.raises(InvalidWorkflow) as info:
        validation.validate(text, INSTALLED)

    assert expected in flat(str(info.value))
