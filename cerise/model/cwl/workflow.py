"""A submitted workflow: checked, validated as a whole, and translated for the remote runner.

`parse_workflow` reads the document (`document`), applies Cerise's rules that the CWL
loader does not know (`requirements`, `steps`, `inputs`), then has the loader validate the
whole workflow against the installed steps' documents (`validation`). What passes yields
what the operator needs next. Rules: docs/workflows.md.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cerise.model.cwl import document, inputs, requirements, steps, types, validation
from cerise.model.cwl.inputs import InputParameter
from cerise.model.cwl.requirements import Resources
from cerise.model.cwl.steps import Step
from cerise.model.cwl.values import FileReference


@dataclass(frozen=True)
class Workflow:
    """A checked workflow. `document` is the parsed text; treat it as read-only."""

    document: Mapping[str, Any]
    inputs: tuple[InputParameter, ...]
    steps: tuple[Step, ...]
    resources: Resources
    step_defaults: tuple[FileReference, ...]


def parse_workflow(text: str | bytes, *, installed_steps: Mapping[str, str]) -> Workflow:
    """Check and validate a submitted workflow whose steps run `installed_steps` (path such
    as ``cerise/test/wc.cwl`` → its text; files the steps import may be there too). Takes
    milliseconds of CPU: call it from a worker thread when on an event loop."""
    text = document.decode(text)
    parsed = document.load_workflow(text)
    listed = requirements.listed(parsed, ())
    requirements.check_allowed(listed, "")
    resources = requirements.resources(listed)
    declared = inputs.parse_inputs(parsed.get("inputs"))
    types.check_output_types(parsed.get("outputs"))
    step_list, step_defaults = steps.parse_steps(parsed.get("steps"), installed_steps)
    validation.validate(text, installed_steps)
    return Workflow(
        document=parsed,
        inputs=declared,
        steps=step_list,
        resources=resources,
        step_defaults=step_defaults,
    )


def check_inputs(workflow: Workflow, input_object: Mapping[str, Any]) -> tuple[FileReference, ...]:
    """Check the input object against the workflow; return every File and Directory to stage:
    those in the input object, in the defaults it leaves in use, and in step defaults."""
    references = inputs.check_object(workflow.inputs, input_object)
    return (*references, *workflow.step_defaults)


def required_resources(workflow: Workflow) -> Resources:
    """The job's reservation: the most cores the workflow or a step asks for, and the larger
    of the workflow's time limit and the steps' limits added up (when every step has one)."""
    cores = max([workflow.resources.cores, *(step.resources.cores for step in workflow.steps)])
    limits = [step.resources.time_limit for step in workflow.steps]
    steps_total = sum(limits) if limits and all(limits) else 0
    return Resources(cores=cores, time_limit=max(workflow.resources.time_limit, steps_total))


def translate_workflow(workflow: Workflow, *, api_base: str) -> dict[str, Any]:
    """A copy of the document with every ``run`` made absolute under the remote `api_base`.

    ``cerise/test/wc.cwl`` becomes ``<api_base>/cerise/steps/cerise/test/wc.cwl``.
    """
    translated = copy.deepcopy(dict(workflow.document))
    base = api_base.rstrip("/")
    for step in workflow.steps:
        project = step.run.split("/", 1)[0]
        translated["steps"][step.id]["run"] = f"{base}/{project}/steps/{step.run}"
    return translated


def to_json(value: Mapping[str, Any]) -> str:
    """A document or input object as the JSON text the remote runner reads."""
    return json.dumps(value, indent=2, allow_nan=False) + "\n"
