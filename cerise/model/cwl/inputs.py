"""The workflow's inputs, and the input object checked against them.

Every name in the input object is a declared input, every required input has a value,
and every value fits its type (`values.Walk`). Input names with ``:`` or a leading ``$``
are refused: cwltool reads such keys of an input object itself (``cwl:tool``,
``cwl:requirements``), which would bypass the requirement rules. Rules: docs/workflows.md.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from cerise.model.cwl import document, types
from cerise.model.cwl.messages import (
    InvalidWorkflow,
    Pointer,
    did_you_mean,
    join,
    kind_of,
    quote,
    show,
)
from cerise.model.cwl.types import InputType
from cerise.model.cwl.values import FileReference, Mismatch, Origin, Walk


@dataclass(frozen=True)
class InputParameter:
    """A workflow input; `default_references` are staged when the input object omits it."""

    name: str
    type: InputType
    required: bool
    default_references: tuple[FileReference, ...]


def parse_inputs(raw: Any, at: Pointer = ("inputs",)) -> tuple[InputParameter, ...]:
    """The inputs declared in a workflow's ``inputs`` (map or list form), found at `at`."""
    if isinstance(raw, Mapping):
        entries = [(name, spec, (*at, name)) for name, spec in raw.items()]
    elif isinstance(raw, list):
        entries = []
        for index, spec in enumerate(raw):
            if not isinstance(spec, Mapping) or not isinstance(spec.get("id"), str):
                raise InvalidWorkflow(
                    f"{show((*at, index))}: each input in list form needs an 'id'"
                )
            entries.append((types.short_name(spec["id"]), spec, (*at, index)))
    else:
        return ()  # absent, or not valid CWL, which the loader refuses
    parameters: dict[str, InputParameter] = {}
    for name, spec, at in entries:
        if not name:
            raise InvalidWorkflow(f"{show(at)}: an input needs a non-empty name")
        if name in parameters:
            raise InvalidWorkflow(f"input {quote(name)} is declared twice")
        if ":" in name or name.startswith("$"):
            raise InvalidWorkflow(
                f"input name {quote(name)} is not allowed: in an input object, names with ':' "
                "(such as cwl:requirements) or starting with '$' are read by the runner itself"
            )
        parameters[name] = _parse_parameter(name, spec, at)
    return tuple(parameters.values())


def _parse_parameter(name: str, spec: Any, at: Pointer) -> InputParameter:
    if spec is None or (isinstance(spec, Mapping) and spec.get("type") is None):
        raise InvalidWorkflow(f"input {quote(name)} has no 'type'")
    if not isinstance(spec, Mapping):  # the short form, `name: type`
        type_ = types.parse_type(spec, at)
        return InputParameter(name, type_, not types.accepts_null(type_), ())
    type_ = types.parse_type(spec["type"], (*at, "type"))
    default = spec.get("default")
    references: list[FileReference] = []
    if default is not None:
        try:
            references = Walk(Origin.WORKFLOW).check(type_, default, (*at, "default"))
        except Mismatch as error:
            raise InvalidWorkflow(
                f"input {quote(name)} has a default that does not fit its type, at "
                f"{show(error.at)}: {error.reason}"
            ) from None
    required = default is None and not types.accepts_null(type_)
    return InputParameter(name, type_, required, tuple(references))


def check_object(parameters: Sequence[InputParameter], input_object: Any) -> list[FileReference]:
    """Check the input object against the inputs; the Files and Directories in its values
    and in the defaults it leaves in use."""
    if not isinstance(input_object, Mapping):
        raise InvalidWorkflow(
            f"the input object must be a mapping from input name to value, "
            f"not {kind_of(input_object)}"
        )
    document.scan(input_object, what="the input object", max_nodes=None)
    declared = {parameter.name: parameter for parameter in parameters}
    problems = []
    missing = [p.name for p in parameters if p.required and input_object.get(p.name) is None]
    if missing:
        problems.append(f"missing required input {join([quote(name) for name in missing])}")
    for name in sorted(set(input_object) - set(declared), key=str):
        close = did_you_mean(str(name), declared)
        hint = f"did you mean {close}?" if close else "the workflow does not declare it"
        problems.append(f"unknown input {quote(name)} ({hint})")
    if problems:
        raise InvalidWorkflow("; ".join(problems))
    references: list[FileReference] = []
    for parameter in parameters:
        value = input_object.get(parameter.name)
        if value is None:
            references.extend(parameter.default_references)
            continue
        try:
            references.extend(
                Walk(Origin.INPUT_OBJECT).check(parameter.type, value, (parameter.name,))
            )
        except Mismatch as error:
            raise InvalidWorkflow(
                f"input {quote(parameter.name)} at {show(error.at)}: {error.reason}"
            ) from None
    return references
