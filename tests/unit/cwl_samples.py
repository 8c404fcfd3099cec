"""Installed steps and submitted workflows for the tests of `cerise.model.cwl`."""

from __future__ import annotations

import json
from typing import Any

import pytest

from cerise.model import cwl
from cerise.model.cwl import FileKind, FileReference, InvalidWorkflow, Origin

INSTALLED = {
    "cerise/test/wc.cwl": """\
cwlVersion: v1.2
class: CommandLineTool
baseCommand: wc
inputs:
  file: {type: File, inputBinding: {position: 1}}
stdout: output.txt
outputs:
  output: {type: stdout}
""",
    "cerise/test/echo.cwl": """\
cwlVersion: v1.2
class: CommandLineTool
baseCommand: echo
inputs:
  message: {type: string, inputBinding: {position: 1}}
stdout: output.txt
outputs:
  output: {type: stdout}
""",
    "cerise/test/hostname.cwl": """\
cwlVersion: v1.2
class: CommandLineTool
baseCommand: hostname
hints:
  ResourceRequirement: {coresMin: 2}
  ToolTimeLimit: {timelimit: 5}
inputs: []
stdout: output.txt
outputs:
  output: {type: stdout}
""",
    "cerise/test/sleep.cwl": """\
cwlVersion: v1.0
class: CommandLineTool
baseCommand: sleep
inputs:
  delay: {type: "int?", inputBinding: {position: 1}}
outputs: []
""",
}
"""The steps of an example project, as the worker reads them from the compute resource."""


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


def with_inputs(inputs: Any, **changes: Any) -> dict[str, Any]:
    """A workflow declaring `inputs` (none of them connected) whose one step needs none."""
    nap = {"run": "cerise/test/sleep.cwl", "in": {}, "out": []}
    return workflow_doc(**{"inputs": inputs, "outputs": {}, "steps": {"nap": nap}, **changes})


def parse(document: dict[str, Any] | str | bytes) -> cwl.Workflow:
    text = json.dumps(document) if isinstance(document, dict) else document
    return cwl.parse_workflow(text, installed_steps=INSTALLED)


def refusal(document: dict[str, Any] | str | bytes) -> str:
    with pytest.raises(InvalidWorkflow) as info:
        parse(document)
    return str(info.value)


def flat(message: str) -> str:
    """A message with its lines joined (the loader wraps them at 100 columns)."""
    return " ".join(message.split())


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
