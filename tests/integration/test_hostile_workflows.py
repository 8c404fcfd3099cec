"""Hostile workflows as WorkflowJobs on a real resource: no user code runs there, and no
input reaches outside its job. Each hostile job would touch a canary file (or read a secret
beside the jobs, or fetch from a web server) if it ran; each must end PermanentFailure with
a message naming what is wrong, and the same workflows with parameter references only must
still succeed."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from cerise.devenv.controlplane import ControlPlane
from cerise.devenv.operator import OperatorProcess
from tests.integration.operator_fixtures import Resource, apply, wait_for_job
from tests.integration.test_operator_jobs import FINAL, published, upload
from tests.integration.web import serving

pytestmark = pytest.mark.integration

CANARY = "{canary}"
"""Replaced by the canary's path on the resource."""
ESCAPE = ("globalThis.constructor.constructor('return process')()"
          f".getBuiltinModule('child_process').execSync('touch {CANARY}').length")
STEP_EXPRESSIONS: dict[str, Any] = {"StepInputExpressionRequirement": {}}


def echo(message: dict[str, Any], version: str = "v1.2", **extra: Any) -> dict[str, Any]:
    """A workflow echoing `message` (the step input's entry) to its output."""
    document: dict[str, Any] = {
        "cwlVersion": version, "class": "Workflow", "requirements": dict(STEP_EXPRESSIONS),
        "inputs": {"file": "File", "go": "boolean"},
        "outputs": {"said": {"type": "File", "outputSource": "echo/output"}},
        "steps": {"echo": {"run": "cerise/test/echo.cwl", "in": {"message": message},
                           "out": ["output"]}},
    }
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(document.get(key), dict):
            document[key] = {**document[key], **value}
        else:
            document[key] = value
    return document


def in_subworkflow(inner: dict[str, Any]) -> dict[str, Any]:
    """`inner` (without its cwlVersion) as the inline run of the only step of a workflow."""
    run = {key: value for key, value in inner.items() if key != "cwlVersion"}
    return {
        "cwlVersion": "v1.2", "class": "Workflow",
        "requirements": {"SubworkflowFeatureRequirement": {}},
        "inputs": {"file": "File", "go": "boolean"},
        "outputs": {"said": {"type": "File", "outputSource": "sub/said"}},
        "steps": {"sub": {"run": run, "in": {"file": "file", "go": "go"}, "out": ["said"]}},
    }


def indexed(patterns: Any) -> dict[str, Any]:
    """cat_with_index, which prints its input and the input's secondary file."""
    return {
        "cwlVersion": "v1.2", "class": "Workflow",
        "inputs": {"file": {"type": "File", "secondaryFiles": patterns}, "go": "boolean"},
        "outputs": {"said": {"type": "File", "outputSource": "cat/output"}},
        "steps": {"cat": {"run": "cerise/test/cat_with_index.cwl", "in": {"file": "file"},
                          "out": ["output"]}},
    }


JS_IN_VALUE_FROM = echo({"source": "file", "valueFrom": f"$({ESCAPE})"})
JS_BLOCK = echo({"source": "file", "valueFrom": f"${{ {ESCAPE}; return 'x'; }}"})
WITH_INLINE_JS = echo({"source": "file", "valueFrom": f"$({ESCAPE})"},
                      requirements={"InlineJavascriptRequirement": {}})
JS_IN_WHEN = echo({"source": "file", "valueFrom": "$(self.basename)"},
                  steps={"echo": {"run": "cerise/test/echo.cwl", "when": f"$({ESCAPE})",
                                  "in": {"message": {"source": "file",
                                                     "valueFrom": "$(self.basename)"}},
                                  "out": ["output"]}})
JS_IN_OUTPUT = echo({"source": "file", "valueFrom": "$(self.basename)"}, version="v1.0",
                    outputs={"said": {"type": "File", "outputSource": "echo/output",
                                      "outputBinding": {"outputEval": f"$({ESCAPE})"}}})
JS_IN_RESOURCES = indexed([".idx"]) | {"requirements": {"ResourceRequirement": {
    "coresMin": f"$({ESCAPE}.length)"}}}
JS_IN_SUBWORKFLOW = in_subworkflow(JS_IN_VALUE_FROM)
TRAVERSAL = indexed(["^/../../../../../../../../../../{secret}"])
OUTSIDE_DEFAULT = in_subworkflow(echo({"source": "spare", "valueFrom": "$(self.basename)"},
                                      inputs={"spare": {"type": "File", "default": {
                                          "class": "File", "location": "file:///{secret}"}}}))

REFERENCES = echo({"source": "file", "valueFrom": "$(self.basename)"},
                  steps={"echo": {"run": "cerise/test/echo.cwl", "when": "$(inputs.go)",
                                  "in": {"go": "go", "message": {
                                      "source": "file", "valueFrom": "$(self.basename)"}},
                                  "out": ["output"]}})
SUFFIX = indexed([".idx"])

HOSTILE = {
    "js-value-from": (JS_IN_VALUE_FROM, "is not a parameter reference"),
    "js-block": (JS_BLOCK, "the JavaScript block"),
    "inline-javascript": (WITH_INLINE_JS, "InlineJavascriptRequirement at '/requirements/"),
    "js-when": (JS_IN_WHEN, "'/steps/echo/when': the expression"),
    "js-output": (JS_IN_OUTPUT, "may not have an outputBinding"),
    "js-resources": (JS_IN_RESOURCES, "'/requirements/ResourceRequirement/coresMin'"),
    "js-subworkflow": (JS_IN_SUBWORKFLOW, "'/steps/sub/run/steps/echo/in/message/valueFrom'"),
    "secondary-traversal": (TRAVERSAL, "contains '/'"),
    "default-outside": (OUTSIDE_DEFAULT, "is outside the file exchange"),
    "import-local": (echo({"source": "file"}, outputs={"$import": "/etc/hostname"}),
                     "$import at '/outputs' in the workflow is not allowed"),
    "include-local": (echo({"source": "file", "valueFrom": {"$include": "file:///etc/hostname"}}),
                      "$include at '/steps/echo/in/message/valueFrom'"),
    "import-remote": (echo({"source": "file"}, inputs={"$import": "{web}/inputs.yml"}),
                      "$import at '/inputs' in the workflow is not allowed"),
    "include-remote": (echo({"source": "file", "valueFrom": {"$include": "{web}/message.txt"}}),
                       "$include at '/steps/echo/in/message/valueFrom'"),
}


def filled(document: dict[str, Any], values: dict[str, str]) -> str:
    text = json.dumps(document)
    for key, value in values.items():
        text = text.replace("{" + key + "}", value)
    return text


async def test_hostile_workflows_fail_and_parameter_references_still_run(
    control_plane: ControlPlane, operator: OperatorProcess, resource: Resource,
    exchange_dir: Path,
) -> None:
    canary = f"{resource.base}-canary"
    secret_dir = f"{resource.base}-secret"
    await resource.remote.run(f"mkdir -p '{secret_dir}' && echo TOP-SECRET > '{secret_dir}/s'")
    fetched: list[str] = []

    def answer(path: str) -> tuple[int, bytes]:
        fetched.append(path)
        return 200, b"file: File\n"

    words = upload(exchange_dir, "words.txt", b"one two\n")
    with_index: dict[str, Any] = dict(upload(exchange_dir, "data.txt", b"data\n"))
    with_index["secondaryFiles"] = [upload(exchange_dir, "data.txt.idx", b"index\n")]
    try:
        with serving(answer) as web:
            values = {"canary": canary, "secret": secret_dir.lstrip("/") + "/s", "web": web}
            jobs = {**{name: (document, words) for name, (document, _) in HOSTILE.items()},
                    "references": (REFERENCES, words), "suffix": (SUFFIX, with_index)}
            for name, (document, file) in jobs.items():
                apply(control_plane, resource.namespace, {
                    "apiVersion": "cerise.dev/v1alpha1", "kind": "WorkflowJob",
                    "metadata": {"name": name},
                    "spec": {"computeResource": resource.name,
                             "workflow": filled(document, values),
                             "input": {"file": file, "go": True}}})
            ended = await asyncio.gather(*(
                wait_for_job(control_plane, resource.namespace, name, FINAL, timeout=120)
                for name in jobs))
    finally:
        await resource.remote.run(f"rm -rf '{secret_dir}'")
    by_name = {job["metadata"]["name"]: job["status"] for job in ended}

    for name, (_, words_expected) in HOSTILE.items():
        status = by_name[name]
        assert status["phase"] == "PermanentFailure", (name, status)
        assert words_expected in " ".join(status["message"].split()), (name, status["message"])
    said = published(exchange_dir, by_name["references"]["output"]["said"]["location"])
    assert said == b"words.txt\n", by_name["references"]
    cat = published(exchange_dir, by_name["suffix"]["output"]["said"]["location"])
    assert cat == b"data\nindex\n", by_name["suffix"]
    assert (await resource.remote.run(f"ls -d '{canary}' 2>/dev/null || true")).stdout == ""
    assert fetched == []
