"""Checks and translation of a submitted CWL workflow and its input object (pure: no I/O).

Before anything touches the remote side, `parse_workflow` and `check_inputs` decide
whether a job can run at all; any problem raises `InvalidWorkflow`, whose message names
what is at fault and becomes the job's ``PermanentFailure`` message. What passes yields
the installed steps the workflow runs, the cores and time to reserve
(`required_resources`), every File and Directory to stage (`FileReference`, rewritten by
`relocate`) and the document for the remote runner (`translate_workflow`, `to_json`).

Modules by concern: `document` (reading and scanning), `requirements` (allowed classes,
resources), `steps` (step paths, inline subworkflows), `types` and `values` (input types
and values), `inputs` (declared inputs, the input object), `expressions` (parameter
references only, no JavaScript), `boundaries` (fields that could reach outside the job),
`validation` (the CWL loader), `workflow` (all of it together). The rules, in full:
docs/workflows.md.
"""

from cerise.model.cwl.document import MAX_DEPTH, MAX_NODES
from cerise.model.cwl.inputs import InputParameter
from cerise.model.cwl.messages import InvalidWorkflow, Pointer
from cerise.model.cwl.requirements import Resources
from cerise.model.cwl.steps import Step, StepPath
from cerise.model.cwl.types import ArrayOf, EnumOf, InputType, Primitive, RecordOf, UnionOf
from cerise.model.cwl.values import FileKind, FileReference, Origin, relocate
from cerise.model.cwl.workflow import (
    Workflow,
    check_inputs,
    parse_workflow,
    required_resources,
    to_json,
    translate_workflow,
)

__all__ = [
    "MAX_DEPTH",
    "MAX_NODES",
    "ArrayOf",
    "EnumOf",
    "FileKind",
    "FileReference",
    "InputParameter",
    "InputType",
    "InvalidWorkflow",
    "Origin",
    "Pointer",
    "Primitive",
    "RecordOf",
    "Resources",
    "Step",
    "StepPath",
    "UnionOf",
    "Workflow",
    "check_inputs",
    "parse_workflow",
    "relocate",
    "required_resources",
    "to_json",
    "translate_workflow",
]
