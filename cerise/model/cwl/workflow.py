"""A submitted workflow: checked, validated as a whole, and translated for the remote runner.

`parse_workflow` reads the document (`document`), applies Cerise's rules that the CWL
loader does not know (`requirements`, `steps`, `inputs`, `expressions`, `boundaries`) to
the workflow and to every inline subworkflow, then has the loader validate the whole
workflow against the installed steps' documents (`validation`). What passes yields what
the operator needs next. Rules: docs/workflows.md.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cerise.model.cwl import (
    boundaries,
    document,
    expressions,
    inputs,
    requirements,
    steps,
    types,
    validation,
)
from cerise.model.cwl.inputs import InputParameter
from cerise.model.cwl.messages import Pointer, quote
from cerise.model.cwl.requirements import Resources
from cerise.model.cwl.steps import Step
from cerise.model.cwl.values import FileReference


@dataclass(frozen=True)
class Workflow:
    """A checked workflow. `document` is the parsed text; treat it as read-only. `steps` are
    the installed steps it runs, subworkflows' included; `resources` is the job's
    reservation; `step_defaults` are the Files and Directories in every default but those
    of the workflow's own inputs (which `inputs` hold)."""

    document: Mapping[str, Any]
    inputs: tuple[InputParameter, ...]
    steps: tuple[Step, ...]
    resources: Resources
    step_defaults: tuple[FileReference, ...]


@dataclass(frozen=True)
class _Checked:
    """A (sub)workflow that passed the rules."""

    inputs: tuple[InputParameter, ...]
    steps: tuple[Step, ...]
    defaults: tuple[FileReference, ...]
    resources: Resources


def parse_workflow(text: str | bytes, *, installed_steps: Mapping[str, str]) -> Workflow:
    """Check and validate a submitted workflow whose steps run `installed_steps` (path such
    as ``cerise/test/wc.cwl`` → its text; files the steps import may be there too). Takes
    milliseconds of CPU: call it from a worker thread when on an event loop."""
    text = document.decode(text)
    parsed = document.load_workflow(text)
    checked = _check_process(parsed, (), "", installed_steps)
    boundaries.check_boundaries(parsed)
    expressions.check_expressions(parsed)
    validation.validate(text, installed_steps)
    return Workflow(
        document=parsed,
        inputs=checked.inputs,
        steps=checked.steps,
        resources=checked.resources,
        step_defaults=checked.defaults,
    )


def _check_process(
    process: Mapping[str, Any], at: Pointer, prefix: str, installed: Mapping[str, str]
) -> _Checked:
    """Cerise's rules for the workflow at `at` and, recursively, its inline subworkflows;
    `prefix` names it in messages and step names (``sub/``)."""
    listed = requirements.listed(process, at)
    requirements.check_allowed(listed, f"step {quote(prefix.rstrip('/'))}: " if prefix else "")
    declared = inputs.parse_inputs(process.get("inputs"), (*at, "inputs"))
    types.check_output_types(process.get("outputs"), (*at, "outputs"))
    found: list[Step] = []
    # The top workflow's input defaults are staged when the input object leaves them out
    # (`check_inputs`); a subworkflow's may be needed whatever the input object says.
    defaults = [ref for parameter in declared for ref in parameter.default_references] if at else []
    asked = requirements.resources(listed)
    times: list[int] = []
    cores = [asked.cores]
    memory = [asked.memory]
    for step_id, body, step_at in steps.entries(process.get("steps"), (*at, "steps")):
        name = f"step {quote(prefix + step_id)}"
        step_listed = requirements.listed(body, step_at)
        requirements.check_allowed(step_listed, f"{name}: ")
        run = body.get("run")
        if isinstance(run, Mapping):
            steps.inline_workflow(name, run)
            inner = _check_process(run, (*step_at, "run"), f"{prefix}{step_id}/", installed)
            found.extend(inner.steps)
            defaults.extend(inner.defaults)
            own = requirements.resources(step_listed).larger(inner.resources)
        else:
            step = steps.installed_step(prefix + step_id, name, body, step_at, installed)
            found.append(step)
            own = step.resources
        cores.append(own.cores)
        memory.append(own.memory)
        times.append(own.time_limit)
        defaults.extend(steps.step_defaults(name, body.get("in"), (*step_at, "in")))
    steps_total = sum(times) if times and all(times) else 0
    time_limit = max(asked.time_limit, steps_total)
    return _Checked(declared, tuple(found), tuple(defaults),
                    Resources(max(cores), time_limit, max(memory)))


def check_inputs(workflow: Workflow, input_object: Mapping[str, Any]) -> tuple[FileReference, ...]:
    """Check the input object against the workflow; return every File and Directory to stage:
    those in the input object, in the defaults it leaves in use, and in step defaults."""
    references = inputs.check_object(workflow.inputs, input_object)
    return (*references, *workflow.step_defaults)


def required_resources(workflow: Workflow) -> Resources:
    """The job's reservation: the most cores the workflow or a step asks for, and the larger
    of the workflow's time limit and the steps' limits added up (when every step has one);
    a subworkflow counts as a step whose limit is its own, reckoned the same way."""
    return workflow.resources


def translate_workflow(workflow: Workflow, *, api_base: str) -> dict[str, Any]:
    """A copy of the document with every ``run`` of an installed step (subworkflows' too)
    made absolute under the remote `api_base`.

    ``cerise/test/wc.cwl`` becomes ``<api_base>/cerise/steps/cerise/test/wc.cwl``.
    """
    translated = copy.deepcopy(dict(workflow.document))
    base = api_base.rstrip("/")
    for step in workflow.steps:
        entry: Any = translated
        for part in step.at:
            entry = entry[part]
        project = step.run.split("/", 1)[0]
        entry["run"] = f"{base}/{project}/steps/{step.run}"
    return translated


def to_json(value: Mapping[str, Any]) -> str:
    """A document or input object as the JSON text the remote runner reads."""
    return json.dumps(value, indent=2, allow_nan=False) + "\n"
