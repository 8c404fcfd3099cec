"""Requirements and hints: which a submitted workflow may use, and the cores, memory and time
asked for.

A workflow's requirements apply to the installed steps it runs, so only the classes in
`ALLOWED_REQUIREMENTS` may appear in it (InlineJavascriptRequirement is not one: no
JavaScript in a submitted workflow). The job's reservation is read from
``ResourceRequirement`` and ``ToolTimeLimit`` (or the original's ``TimeLimit``) of the
workflow, its steps and the installed tools they run. Rules: docs/workflows.md.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from cerise.model.cwl.messages import InvalidWorkflow, Pointer, join, quote, show

ALLOWED_REQUIREMENTS = frozenset(
    {
        "ResourceRequirement",
        "TimeLimit",
        "ToolTimeLimit",
        "ScatterFeatureRequirement",
        "MultipleInputFeatureRequirement",
        "StepInputExpressionRequirement",
        "SubworkflowFeatureRequirement",
    }
)


@dataclass(frozen=True)
class Resources:
    """Cores to reserve (0: no request), wall-clock seconds (0: no limit) and memory in MiB
    (0: no request)."""

    cores: int = 0
    time_limit: int = 0
    memory: int = 0

    def larger(self, other: Resources) -> Resources:
        return Resources(max(self.cores, other.cores), max(self.time_limit, other.time_limit),
                         max(self.memory, other.memory))


class Requirement(NamedTuple):
    kind: str
    body: Any
    at: Pointer


def listed(process: Mapping[str, Any], at: Pointer) -> list[Requirement]:
    """A process's requirements and hints, in map or list form."""
    found: list[Requirement] = []
    for key in ("requirements", "hints"):
        raw = process.get(key)
        if raw is None:
            continue
        if isinstance(raw, Mapping):
            found.extend(Requirement(kind, body, (*at, key, kind)) for kind, body in raw.items())
        elif isinstance(raw, list):
            for index, entry in enumerate(raw):
                if not isinstance(entry, Mapping) or not isinstance(entry.get("class"), str):
                    raise InvalidWorkflow(
                        f"{show((*at, key, index))}: each entry of {key!r} must be a mapping "
                        "with a 'class'"
                    )
                found.append(Requirement(entry["class"], entry, (*at, key, index)))
        else:
            raise InvalidWorkflow(f"{show((*at, key))}: {key!r} must be a mapping or a list")
    return found


def check_allowed(requirements: Sequence[Requirement], prefix: str) -> None:
    """Refuse requirements and hints that would change what installed steps execute."""
    for requirement in requirements:
        if requirement.kind == "InlineJavascriptRequirement":
            raise InvalidWorkflow(
                f"{prefix}InlineJavascriptRequirement at {show(requirement.at)} is not allowed "
                "in a submitted workflow: "
                "JavaScript would run code of yours on the compute resource; use parameter "
                "references such as $(inputs.name) instead"
            )
        if requirement.kind == "SchemaDefRequirement":
            raise InvalidWorkflow(
                f"{prefix}SchemaDefRequirement is not allowed: it can pull in outside "
                "content; write record and enum types inline"
            )
        if requirement.kind not in ALLOWED_REQUIREMENTS:
            raise InvalidWorkflow(
                f"{prefix}{quote(requirement.kind)} is not allowed in a submitted workflow, "
                "because its requirements and hints apply to the installed steps it runs; "
                f"allowed are {join(sorted(ALLOWED_REQUIREMENTS))}"
            )


def resources(requirements: Sequence[Requirement]) -> Resources:
    """The most cores (``coresMin``, else ``coresMax``; fractions rounded up), the most
    memory (``ramMin``, else ``ramMax``, in MiB, rounded up) and the longest time limit asked
    for. Only literal numbers count: expressions are left out."""
    cores = 0
    memory = 0
    time_limit = 0
    for requirement in requirements:
        body, at = requirement.body, requirement.at
        if not isinstance(body, Mapping):
            continue  # not valid CWL: the loader refuses it
        if requirement.kind == "ResourceRequirement":
            cores_min = _number(body.get("coresMin"), (*at, "coresMin"))
            cores_max = _number(body.get("coresMax"), (*at, "coresMax"))
            cores = max(cores, math.ceil(cores_min if cores_min is not None else cores_max or 0))
            ram_min = _number(body.get("ramMin"), (*at, "ramMin"))
            ram_max = _number(body.get("ramMax"), (*at, "ramMax"))
            memory = max(memory, math.ceil(ram_min if ram_min is not None else ram_max or 0))
        elif requirement.kind in ("TimeLimit", "ToolTimeLimit"):
            key = "timeLimit" if requirement.kind == "TimeLimit" else "timelimit"
            seconds = _number(body.get(key), (*at, key))
            if seconds is not None and seconds != int(seconds):
                raise InvalidWorkflow(
                    f"{show((*at, key))}: a time limit is a whole number of seconds"
                )
            time_limit = max(time_limit, int(seconds or 0))
    return Resources(cores=cores, time_limit=time_limit, memory=memory)


def declared(process: Mapping[str, Any]) -> Resources:
    """The cores, memory and time a process document (e.g. an installed tool) asks for itself."""
    return resources(listed(process, ()))


def _number(value: Any, at: Pointer) -> float | None:
    """A literal non-negative number; None for an expression or anything else (the loader
    refuses what is neither a number nor an expression)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if value < 0:
        raise InvalidWorkflow(f"{show(at)} must not be negative, not {value!r}")
    return value
