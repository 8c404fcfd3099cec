"""Checks and translation of a submitted CWL workflow and its input object (pure: no I/O).

A job names a workflow and gives an input object. Before anything touches the remote
side, `parse_workflow` and `check_inputs` decide whether the job can run at all; any
problem raises `InvalidWorkflow`, whose message names the step, key or input at fault
and becomes the job's ``PermanentFailure`` message. What passes yields what the
operator needs next: the installed steps the workflow runs, the cores and time to
reserve (`required_resources`), every File and Directory to stage (`FileReference`,
with its position so staging can rewrite it with `relocate`), and the document for
the remote runner (`translate_workflow`, `to_json`).

Rules for the workflow document:

* Text (or UTF-8 bytes) holding JSON or YAML (read with ``yaml.safe_load``). Only
  JSON-compatible values: YAML dates, binary, sets, non-string keys and NaN or
  infinite numbers are refused, because the runner is handed JSON. At most
  `MAX_DEPTH` levels of nesting and `MAX_NODES` values (counted with YAML aliases
  expanded, so a small "billion laughs" text cannot blow up later work).
* A mapping with ``class: Workflow`` and ``inputs``, ``outputs`` and ``steps``. A
  top-level tool (CommandLineTool, ExpressionTool, Operation) is refused: jobs run
  only the steps of installed specialisations.
* Nothing that pulls in outside content or changes how installed steps run: no
  ``$graph``, ``$schemas``, ``$base`` (only ``$namespaces`` is allowed at the top),
  no ``$import``, ``$include`` or ``$mixin`` anywhere, and only the requirement and
  hint classes in `ALLOWED_REQUIREMENTS`. A workflow's requirements apply to the
  tools it runs, so e.g. EnvVarRequirement, InitialWorkDirRequirement,
  DockerRequirement or ShellCommandRequirement would change what a predefined step
  executes; SchemaDefRequirement can ``$import`` type definitions.
* ``requirements`` and ``hints`` may be in map form (``{ResourceRequirement:
  {coresMin: 2}}``) or list form (``[{class: ResourceRequirement, coresMin: 2}]``):
  both are valid CWL (the original crashed on the list form). ``inputs`` and
  ``outputs`` may be in either form too.
* ``steps`` must be in map form (step name → step). The list form, valid CWL but a
  crash in the original, is refused with a message showing the map form.
* Every step's ``run`` is a string naming an installed step as
  ``<project>/<path>.cwl``, at most `MAX_STEP_PATH` characters: path components of
  ASCII letters, digits, ``_``, ``-`` and ``.`` that do not start with ``.`` or ``-``
  (no hidden files, nothing a command line could take for an option). It is
  translated to ``<api_base>/<project>/steps/<project>/<path>.cwl`` on the remote
  side (cerise.md §5). One leading ``./`` is accepted and
  dropped (it means the same relative path). Refused with their own messages:
  inline ``run`` objects (tools or nested workflows), absolute paths, URLs (any
  ``scheme:``), ``..`` or ``.`` components, empty components, backslashes,
  whitespace and control characters; anything else outside the character set, which
  covers quotes and shell metacharacters. A well-formed path that is not installed
  is refused with the closest installed names. A step's own ``id``, if given, must
  equal its key.
* Workflow input types: ``null``, ``boolean``, ``int``, ``long``, ``float``,
  ``double``, ``string``, ``File``, ``Directory``, ``Any``, the ``T?`` and ``T[]``
  shorthands, unions (lists), and ``array``, ``record`` and ``enum`` schemas. A
  default must match its input's type. Input names may not contain ``:`` or start
  with ``$``: cwltool reads such keys of an input object itself (``cwl:tool``,
  ``cwl:requirements``), which would bypass the requirement check above.

Rules for the input object (`check_inputs`):

* Scanned like the document (JSON-compatible, no ``$import``/``$include``/``$mixin``,
  at most `MAX_DEPTH` levels), since the runner loads it with the same machinery.
* Every name is a declared input; every required input (its type does not accept
  null and it has no default) has a non-null value; every value matches its type.
* A File is ``{"class": "File", ...}`` with a ``location`` (or ``path``) or, as a
  literal, ``contents``; a Directory has a ``location`` (or ``path``) or a
  ``listing``. Locations are non-empty strings without control characters; which
  schemes are acceptable is staging's decision. A ``basename`` must not be empty,
  ``.`` or ``..``, nor contain ``/`` or NUL, since the runner names files after it.
  Strings must not contain NUL (no program can receive one as an argument).
* Record values may only have the record's fields.

File references are collected depth-first (the object, then its ``secondaryFiles``
or ``listing``) from the input object, from the default of every input that the
input object leaves out or sets to null (in the workflow document, as CWL uses the
default then), and from the ``default`` of every step input; a literal without a
location is not a reference, but what it contains may be.

Resources (cerise.md §6, with the original's crashes and omissions fixed): cores =
the maximum over the workflow and its steps of ``ResourceRequirement`` ``coresMin``,
else ``coresMax``, found in ``hints`` or ``requirements`` in either form, a fraction
rounded up, 0 if none. A step's value is the larger of what its entry in the
workflow and its installed tool declare. Time = ``TimeLimit`` (seconds, or
``{timeLimit: N}``) or CWL's ``ToolTimeLimit`` (``{timelimit: N}``): the larger of
the workflow's own limit and the sum of the steps' limits; the sum counts only when
every step has a limit (the original added a step without one as 0 and so reserved
too little time). Only literal numbers count: expressions are ignored.

Limits: the document and input object are trusted to be of reasonable size (the
caller bounds their bytes); checking one input stops after `MAX_CHECKS` values, which
bounds the work that unions of nested arrays could otherwise multiply. Expressions
(``valueFrom``, ``when``) are left to the runner's sandbox. YAML
duplicate keys keep the last value; that is harmless because the runner receives
the document as checked here, serialised by `to_json`.
"""

from __future__ import annotations

import copy
import difflib
import json
import math
import re
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, NamedTuple, NewType

import yaml

MAX_DEPTH = 100
MAX_NODES = 100_000
MAX_CHECKS = 1_000_000
MAX_STEP_PATH = 1024

ALLOWED_REQUIREMENTS = frozenset(
    {
        "ResourceRequirement",
        "TimeLimit",
        "ToolTimeLimit",
        "InlineJavascriptRequirement",
        "ScatterFeatureRequirement",
        "MultipleInputFeatureRequirement",
        "StepInputExpressionRequirement",
        "SubworkflowFeatureRequirement",
    }
)

StepPath = NewType("StepPath", str)
"""An installed step, relative to the steps directories: ``cerise/test/wc.cwl``."""

Pointer = tuple[str | int, ...]
"""A position in a document: mapping keys and list indices from the root."""


class InvalidWorkflow(ValueError):
    """The workflow or its input object cannot run; the message says why, for a person."""


class Primitive(StrEnum):
    """The CWL types that are named by a single word."""

    NULL = "null"
    BOOLEAN = "boolean"
    INT = "int"
    LONG = "long"
    FLOAT = "float"
    DOUBLE = "double"
    STRING = "string"
    FILE = "File"
    DIRECTORY = "Directory"
    ANY = "Any"


@dataclass(frozen=True)
class ArrayOf:
    items: InputType


@dataclass(frozen=True)
class RecordOf:
    fields: tuple[tuple[str, InputType], ...]


@dataclass(frozen=True)
class EnumOf:
    symbols: frozenset[str]


@dataclass(frozen=True)
class UnionOf:
    alternatives: tuple[InputType, ...]


InputType = Primitive | ArrayOf | RecordOf | EnumOf | UnionOf


class FileKind(StrEnum):
    FILE = "File"
    DIRECTORY = "Directory"


class Origin(StrEnum):
    """Which document a `FileReference` points into."""

    INPUT_OBJECT = "input object"
    WORKFLOW = "workflow"


@dataclass(frozen=True)
class FileReference:
    """A File or Directory to stage: the object at `pointer` in the `origin` document."""

    origin: Origin
    pointer: Pointer
    kind: FileKind
    location: str
    basename: str | None


@dataclass(frozen=True)
class Resources:
    """Cores to reserve (0: no request) and wall-clock seconds (0: no limit)."""

    cores: int = 0
    time_limit: int = 0


@dataclass(frozen=True)
class InputParameter:
    """A workflow input; `default_references` are staged when the input object omits it."""

    name: str
    type: InputType
    required: bool
    default_references: tuple[FileReference, ...]


@dataclass(frozen=True)
class Step:
    """A step of the workflow: its key in ``steps`` and the installed step it runs."""

    id: str
    run: StepPath
    resources: Resources


@dataclass(frozen=True)
class Workflow:
    """A checked workflow. `document` is the parsed text; treat it as read-only."""

    document: Mapping[str, Any]
    inputs: tuple[InputParameter, ...]
    steps: tuple[Step, ...]
    resources: Resources
    step_defaults: tuple[FileReference, ...]


def parse_workflow(text: str | bytes, *, installed_steps: Collection[str]) -> Workflow:
    """Parse and check a submitted workflow whose steps must be among `installed_steps`."""
    document = _load(text)
    _check_document(document)
    requirements = _requirements(document, ())
    _check_allowed(requirements, "")
    absent = [key for key in ("inputs", "outputs", "steps") if key not in document]
    if absent:
        raise InvalidWorkflow(
            f"the workflow has no {_and([repr(key) for key in absent])}; "
            "a Workflow needs inputs, outputs and steps"
        )
    if not isinstance(document["outputs"], Mapping | list):
        raise InvalidWorkflow("'outputs' must be a mapping or a list")
    inputs = _parse_inputs(document["inputs"])
    steps, step_defaults = _parse_steps(document["steps"], frozenset(installed_steps))
    return Workflow(
        document=document,
        inputs=inputs,
        steps=steps,
        resources=_resources(requirements),
        step_defaults=step_defaults,
    )


def check_inputs(workflow: Workflow, input_object: Mapping[str, Any]) -> tuple[FileReference, ...]:
    """Check the input object against the workflow; return every File and Directory to stage."""
    if not isinstance(input_object, Mapping):
        raise InvalidWorkflow(
            f"the input object must be a mapping from input name to value, "
            f"not {_kind_of(input_object)}"
        )
    _scan(input_object, what="the input object", max_nodes=None)
    declared = {parameter.name: parameter for parameter in workflow.inputs}
    problems = []
    missing = [p.name for p in workflow.inputs if p.required and input_object.get(p.name) is None]
    if missing:
        problems.append(f"missing required input {_and([_q(name) for name in missing])}")
    for name in sorted(set(input_object) - set(declared), key=str):
        close = _did_you_mean(str(name), declared)
        hint = f"did you mean {close}?" if close else "the workflow does not declare it"
        problems.append(f"unknown input {_q(name)} ({hint})")
    if problems:
        raise InvalidWorkflow("; ".join(problems))
    references: list[FileReference] = []
    for parameter in workflow.inputs:
        value = input_object.get(parameter.name)
        if value is None:
            references.extend(parameter.default_references)
            continue
        walk = _Walk(Origin.INPUT_OBJECT)
        try:
            references.extend(walk.check(parameter.type, value, (parameter.name,)))
        except _Mismatch as error:
            raise InvalidWorkflow(
                f"input {_q(parameter.name)} at {_show(error.at)}: {error.reason}"
            ) from None
    references.extend(workflow.step_defaults)
    return tuple(references)


def declared_resources(document: Mapping[str, Any]) -> Resources:
    """The cores and time a CWL process document (e.g. an installed tool) asks for itself."""
    return _resources(_requirements(document, ()))


def required_resources(
    workflow: Workflow, *, installed: Mapping[str, Resources] | None = None
) -> Resources:
    """The job's reservation, given what installed steps declare (see `declared_resources`)."""
    per_step = [
        _larger(step.resources, (installed or {}).get(step.run, Resources()))
        for step in workflow.steps
    ]
    cores = max([workflow.resources.cores, *(step.cores for step in per_step)])
    limits = [step.time_limit for step in per_step]
    steps_total = sum(limits) if limits and all(limits) else 0
    return Resources(cores=cores, time_limit=max(workflow.resources.time_limit, steps_total))


def translate_workflow(workflow: Workflow, *, api_base: str) -> dict[str, Any]:
    """A copy of the document with every ``run`` made absolute under the remote `api_base`.

    ``cerise/test/wc.cwl`` becomes ``<api_base>/cerise/steps/cerise/test/wc.cwl``.
    """
    document = copy.deepcopy(dict(workflow.document))
    base = api_base.rstrip("/")
    for step in workflow.steps:
        project = step.run.split("/", 1)[0]
        document["steps"][step.id]["run"] = f"{base}/{project}/steps/{step.run}"
    return document


def relocate(document: Mapping[str, Any], locations: Mapping[Pointer, str]) -> dict[str, Any]:
    """A copy of `document` with each File/Directory at a pointer given its new location.

    A stale ``path`` is dropped; other keys (``basename``, ``secondaryFiles``…) are kept.
    """
    result = copy.deepcopy(dict(document))
    for pointer, location in locations.items():
        target: Any = result
        for part in pointer:
            target = target[part]
        if not isinstance(target, dict) or _file_kind(target) is None:
            raise ValueError(f"no File or Directory at {_show(pointer)}")
        target["location"] = location
        target.pop("path", None)
    return result


def to_json(document: Mapping[str, Any]) -> str:
    """The document as the JSON text the remote runner reads."""
    return json.dumps(document, indent=2, allow_nan=False) + "\n"


# --- the document as a whole -------------------------------------------------------------

_TOOL_CLASSES = frozenset({"CommandLineTool", "ExpressionTool", "Operation"})
_EXTERNAL_KEYS = frozenset({"$import", "$include", "$mixin"})


def _load(text: str | bytes) -> Any:
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as error:
            raise InvalidWorkflow(
                f"the workflow is not UTF-8 text (bad byte at offset {error.start})"
            ) from None
    try:
        return json.loads(text)
    except RecursionError:
        raise InvalidWorkflow(_too_deep("the workflow")) from None
    except ValueError:
        pass  # not JSON; YAML is the other allowed syntax
    try:
        return yaml.safe_load(text)
    except RecursionError:
        raise InvalidWorkflow(_too_deep("the workflow")) from None
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        raise InvalidWorkflow(
            f"the workflow is neither JSON nor valid YAML: {error.problem}{where}"
        ) from None
    except yaml.YAMLError as error:
        raise InvalidWorkflow(f"the workflow is neither JSON nor valid YAML: {error}") from None


def _check_document(document: Any) -> None:
    if document is None:
        raise InvalidWorkflow("the workflow document is empty")
    if not isinstance(document, dict):
        raise InvalidWorkflow(
            f"the workflow must be a mapping with class: Workflow, not {_kind_of(document)}"
        )
    if "$graph" in document:
        raise InvalidWorkflow(
            "packed documents ($graph) are not supported; submit one class: Workflow document"
        )
    for key in document:
        if isinstance(key, str) and key.startswith("$") and key != "$namespaces":
            raise InvalidWorkflow(
                f"{_q(key)} is not allowed at the top of a submitted workflow "
                "(only $namespaces is): it can pull in outside content"
            )
    _scan(document, what="the workflow", max_nodes=MAX_NODES)
    kind = document.get("class")
    if kind in _TOOL_CLASSES:
        raise InvalidWorkflow(
            f"inline tools are not allowed (class: {kind}); submit a class: Workflow whose "
            "steps run the installed steps of a specialisation"
        )
    if kind != "Workflow":
        got = "has no 'class'" if kind is None else f"has class {_q(kind)}"
        raise InvalidWorkflow(f"the document {got}; a submitted workflow needs class: Workflow")


def _scan(document: Mapping[str, Any], *, what: str, max_nodes: int | None) -> None:
    """Refuse what JSON cannot hold, outside content, and excessive depth or size."""
    stack: list[tuple[Any, Pointer]] = [(document, ())]
    seen = 0
    while stack:
        node, at = stack.pop()
        seen += 1
        if max_nodes is not None and seen > max_nodes:
            raise InvalidWorkflow(
                f"{what} has more than {max_nodes} values (counting YAML aliases)"
            )
        if len(at) > MAX_DEPTH:
            raise InvalidWorkflow(_too_deep(what))
        if isinstance(node, Mapping):
            for key, value in node.items():
                if not isinstance(key, str):
                    raise InvalidWorkflow(
                        f"key {key!r} at {_show(at)} in {what} is not a string; quote it"
                    )
                if key in _EXTERNAL_KEYS:
                    raise InvalidWorkflow(
                        f"{key} at {_show(at)} in {what} is not allowed: "
                        "it pulls in outside content"
                    )
                stack.append((value, (*at, key)))
        elif isinstance(node, list):
            stack.extend((value, (*at, index)) for index, value in enumerate(node))
        elif isinstance(node, float) and not math.isfinite(node):
            raise InvalidWorkflow(
                f"the value at {_show(at)} in {what} is {node}, which JSON cannot hold"
            )
        elif not (node is None or isinstance(node, bool | int | float | str)):
            raise InvalidWorkflow(
                f"the value at {_show(at)} in {what} is a {type(node).__name__}, which JSON "
                "cannot hold; quote it if it is meant as a string"
            )


# --- requirements, hints and resources ---------------------------------------------------


class _Requirement(NamedTuple):
    kind: str
    body: Any
    at: Pointer


def _requirements(process: Mapping[str, Any], at: Pointer) -> list[_Requirement]:
    found: list[_Requirement] = []
    for key in ("requirements", "hints"):
        raw = process.get(key)
        if raw is None:
            continue
        if isinstance(raw, Mapping):
            found.extend(_Requirement(kind, body, (*at, key, kind)) for kind, body in raw.items())
        elif isinstance(raw, list):
            for index, entry in enumerate(raw):
                if not isinstance(entry, Mapping) or not isinstance(entry.get("class"), str):
                    raise InvalidWorkflow(
                        f"{_show((*at, key, index))}: each entry of {key!r} must be a mapping "
                        "with a 'class'"
                    )
                found.append(_Requirement(entry["class"], entry, (*at, key, index)))
        else:
            raise InvalidWorkflow(f"{_show((*at, key))}: {key!r} must be a mapping or a list")
    return found


def _check_allowed(requirements: Sequence[_Requirement], prefix: str) -> None:
    for requirement in requirements:
        if requirement.kind == "SchemaDefRequirement":
            raise InvalidWorkflow(
                f"{prefix}SchemaDefRequirement is not allowed: it can pull in outside "
                "content; write record and enum types inline"
            )
        if requirement.kind not in ALLOWED_REQUIREMENTS:
            raise InvalidWorkflow(
                f"{prefix}{_q(requirement.kind)} is not allowed in a submitted workflow, "
                "because its requirements and hints apply to the installed steps it runs; "
                f"allowed are {_and(sorted(ALLOWED_REQUIREMENTS))}"
            )


def _resources(requirements: Sequence[_Requirement]) -> Resources:
    cores = 0
    time_limit = 0
    for requirement in requirements:
        body, at = requirement.body, requirement.at
        if requirement.kind == "ResourceRequirement":
            if not isinstance(body, Mapping):
                raise InvalidWorkflow(f"{_show(at)}: ResourceRequirement must be a mapping")
            cores_min = _cores(body.get("coresMin"), (*at, "coresMin"))
            cores_max = _cores(body.get("coresMax"), (*at, "coresMax"))
            cores = max(cores, cores_min if cores_min is not None else cores_max or 0)
        elif requirement.kind == "TimeLimit":
            value = body.get("timeLimit") if isinstance(body, Mapping) else body
            time_limit = max(time_limit, _seconds(value, at))
        elif requirement.kind == "ToolTimeLimit":
            value = body.get("timelimit") if isinstance(body, Mapping) else None
            time_limit = max(time_limit, _seconds(value, at))
    return Resources(cores=cores, time_limit=time_limit)


def _cores(value: Any, at: Pointer) -> int | None:
    """A literal core count (fractions rounded up); None when absent or an expression."""
    if value is None or isinstance(value, str):
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise InvalidWorkflow(
            f"{_show(at)} must be a non-negative number or an expression, not {value!r}"
        )
    return math.ceil(value)


def _seconds(value: Any, at: Pointer) -> int:
    """A literal time limit in seconds; 0 for an expression."""
    if isinstance(value, str):
        return 0
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidWorkflow(
            f"{_show(at)}: a time limit must be a whole number of seconds or an expression, "
            f"not {value!r}"
        )
    return value


def _larger(one: Resources, other: Resources) -> Resources:
    return Resources(
        cores=max(one.cores, other.cores), time_limit=max(one.time_limit, other.time_limit)
    )


# --- steps -------------------------------------------------------------------------------

_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:")
_WHITESPACE_OR_CONTROL = re.compile(r"[\s\x00-\x1f\x7f]")
_COMPONENT = re.compile(r"[A-Za-z0-9_.-]+")
_STEP_FORM = "name an installed step as '<project>/<path>.cwl', e.g. 'cerise/test/wc.cwl'"


def _parse_steps(
    raw: Any, installed: frozenset[str]
) -> tuple[tuple[Step, ...], tuple[FileReference, ...]]:
    if isinstance(raw, list):
        raise InvalidWorkflow(
            "'steps' is a list; write it as a mapping from step name to step, e.g. "
            "steps: {count: {run: cerise/test/wc.cwl, in: {file: file}, out: [output]}}"
        )
    if not isinstance(raw, Mapping):
        raise InvalidWorkflow(f"'steps' must be a mapping from step name to step, not {raw!r}")
    steps = []
    defaults: list[FileReference] = []
    for step_id, body in raw.items():
        name = f"step {_q(step_id)}"
        if not step_id:
            raise InvalidWorkflow("a step needs a non-empty name")
        if not isinstance(body, Mapping):
            raise InvalidWorkflow(f"{name} must be a mapping with 'run', 'in' and 'out'")
        own_id = body.get("id")
        if own_id is not None and (not isinstance(own_id, str) or own_id.lstrip("#") != step_id):
            raise InvalidWorkflow(f"{name} has a different id {_q(own_id)}; remove the 'id'")
        requirements = _requirements(body, ("steps", step_id))
        _check_allowed(requirements, f"{name}: ")
        steps.append(
            Step(
                id=step_id,
                run=_step_path(name, body.get("run"), installed),
                resources=_resources(requirements),
            )
        )
        defaults.extend(_step_defaults(name, body.get("in"), ("steps", step_id, "in")))
    return tuple(steps), tuple(defaults)


def _step_path(name: str, run: Any, installed: frozenset[str]) -> StepPath:
    if run is None:
        raise InvalidWorkflow(f"{name} has no 'run'; it must {_STEP_FORM}")
    if isinstance(run, Mapping):
        kind = run.get("class")
        what = f"an inline {kind}" if isinstance(kind, str) else "an inline process"
        raise InvalidWorkflow(
            f"{name} runs {what}; inline tools and workflows are not allowed, 'run' must "
            f"{_STEP_FORM}"
        )
    if not isinstance(run, str):
        raise InvalidWorkflow(f"{name}: 'run' must be a string; it must {_STEP_FORM}")
    problem = _path_problem(run)
    if problem:
        raise InvalidWorkflow(f"{name} runs {_q(run)}, which {problem}; 'run' must {_STEP_FORM}")
    path = run.removeprefix("./")
    if path not in installed:
        close = _did_you_mean(path, installed)
        hint = f"; did you mean {close}?" if close else ""
        raise InvalidWorkflow(f"{name} runs {_q(run)}, which is not an installed step{hint}")
    return StepPath(path)


def _path_problem(run: str) -> str | None:
    if not run:
        return "is empty"
    if len(run) > MAX_STEP_PATH:
        return f"is longer than {MAX_STEP_PATH} characters"
    if _WHITESPACE_OR_CONTROL.search(run):
        return "contains whitespace or a control character"
    if "\\" in run:
        return "contains a backslash"
    if _SCHEME.match(run):
        return "is a URL"
    if run.startswith("/"):
        return "is an absolute path"
    parts = run.removeprefix("./").split("/")
    if ".." in parts:
        return "contains '..'"
    if "." in parts:
        return "contains a '.' component"
    if "" in parts:
        return "has an empty component ('//' or a trailing '/')"
    if any(part.startswith((".", "-")) for part in parts):
        return "has a component starting with '.' or '-'"
    if not all(_COMPONENT.fullmatch(part) for part in parts):
        return "contains characters other than letters, digits, '_', '-', '.' and '/'"
    if len(parts) < 2 or not run.endswith(".cwl"):
        return "is not of the form '<project>/<path>.cwl'"
    return None


def _step_defaults(name: str, raw: Any, at: Pointer) -> list[FileReference]:
    """File references in the ``default`` of a step's inputs (``in``, map or list form)."""
    if raw is None:
        return []
    if isinstance(raw, Mapping):
        entries = [(entry, (*at, key)) for key, entry in raw.items()]
    elif isinstance(raw, list):
        entries = [(entry, (*at, index)) for index, entry in enumerate(raw)]
    else:
        raise InvalidWorkflow(f"{name}: 'in' must be a mapping or a list")
    references = []
    for entry, entry_at in entries:
        if isinstance(entry, Mapping) and entry.get("default") is not None:
            walk = _Walk(Origin.WORKFLOW)
            try:
                references.extend(walk.any(entry["default"], (*entry_at, "default")))
            except _Mismatch as error:
                raise InvalidWorkflow(
                    f"{name}: default at {_show(error.at)}: {error.reason}"
                ) from None
    return references


# --- input types -------------------------------------------------------------------------


def _parse_inputs(raw: Any) -> tuple[InputParameter, ...]:
    if isinstance(raw, Mapping):
        entries = [(name, spec, ("inputs", name)) for name, spec in raw.items()]
    elif isinstance(raw, list):
        entries = []
        for index, spec in enumerate(raw):
            if not isinstance(spec, Mapping) or not isinstance(spec.get("id"), str):
                raise InvalidWorkflow(
                    f"{_show(('inputs', index))}: each input in list form needs an 'id'"
                )
            entries.append((_short_name(spec["id"]), spec, ("inputs", index)))
    else:
        raise InvalidWorkflow("'inputs' must be a mapping or a list")
    parameters: dict[str, InputParameter] = {}
    for name, spec, at in entries:
        if not name:
            raise InvalidWorkflow(f"{_show(at)}: an input needs a non-empty name")
        if name in parameters:
            raise InvalidWorkflow(f"input {_q(name)} is declared twice")
        if ":" in name or name.startswith("$"):
            raise InvalidWorkflow(
                f"input name {_q(name)} is not allowed: in an input object, names with ':' "
                "(such as cwl:requirements) or starting with '$' are read by the runner itself"
            )
        parameters[name] = _parse_parameter(name, spec, at)
    return tuple(parameters.values())


def _parse_parameter(name: str, spec: Any, at: Pointer) -> InputParameter:
    if spec is None:
        raise InvalidWorkflow(f"input {_q(name)} has no 'type'")
    if not isinstance(spec, Mapping):
        type_ = _parse_type(spec, at, 0)
        return InputParameter(name, type_, not _accepts_null(type_), ())
    if spec.get("type") is None:
        raise InvalidWorkflow(f"input {_q(name)} has no 'type'")
    type_ = _parse_type(spec["type"], (*at, "type"), 0)
    default = spec.get("default")
    references: list[FileReference] = []
    if default is not None:
        try:
            references = _Walk(Origin.WORKFLOW).check(type_, default, (*at, "default"))
        except _Mismatch as error:
            raise InvalidWorkflow(
                f"input {_q(name)} has a default that does not fit its type, at "
                f"{_show(error.at)}: {error.reason}"
            ) from None
    required = default is None and not _accepts_null(type_)
    return InputParameter(name, type_, required, tuple(references))


def _parse_type(raw: Any, at: Pointer, depth: int) -> InputType:
    if depth > MAX_DEPTH:
        raise InvalidWorkflow(_too_deep(f"the type at {_show(at)}"))
    if isinstance(raw, str):
        if raw.endswith("?"):
            return UnionOf((Primitive.NULL, _parse_type(raw[:-1], at, depth + 1)))
        if raw.endswith("[]"):
            return ArrayOf(_parse_type(raw[:-2], at, depth + 1))
        if raw in set(Primitive):
            return Primitive(raw)
        raise InvalidWorkflow(
            f"{_show(at)}: unknown type {_q(raw)}; use {_and(list(Primitive))}, an array, "
            "record or enum schema, or a list of these"
        )
    if isinstance(raw, list):
        if not raw:
            raise InvalidWorkflow(f"{_show(at)}: an empty list is not a type")
        return UnionOf(tuple(_parse_type(item, (*at, i), depth + 1) for i, item in enumerate(raw)))
    if isinstance(raw, Mapping):
        kind = raw.get("type")
        if kind == "array" and "items" in raw:
            return ArrayOf(_parse_type(raw["items"], (*at, "items"), depth + 1))
        if kind == "record":
            return RecordOf(_parse_fields(raw.get("fields"), (*at, "fields"), depth))
        if kind == "enum":
            symbols = raw.get("symbols")
            if not isinstance(symbols, list) or not symbols:
                raise InvalidWorkflow(f"{_show(at)}: an enum needs a list of 'symbols'")
            if not all(isinstance(symbol, str) for symbol in symbols):
                raise InvalidWorkflow(f"{_show(at)}: enum symbols must be strings")
            return EnumOf(frozenset(_short_name(symbol) for symbol in symbols))
        raise InvalidWorkflow(
            f"{_show(at)}: a type schema needs type: array (with 'items'), record or enum"
        )
    raise InvalidWorkflow(f"{_show(at)}: {raw!r} is not a type")


def _parse_fields(raw: Any, at: Pointer, depth: int) -> tuple[tuple[str, InputType], ...]:
    if isinstance(raw, Mapping):
        specs = [(name, spec, (*at, name)) for name, spec in raw.items()]
    elif isinstance(raw, list):
        specs = []
        for index, spec in enumerate(raw):
            if not isinstance(spec, Mapping) or not isinstance(spec.get("name"), str):
                raise InvalidWorkflow(f"{_show((*at, index))}: a record field needs a 'name'")
            specs.append((_short_name(spec["name"]), spec, (*at, index)))
    else:
        raise InvalidWorkflow(f"{_show(at)}: a record needs 'fields' (a mapping or a list)")
    fields = []
    for name, spec, field_at in specs:
        if isinstance(spec, Mapping):
            fields.append((name, _parse_type(spec.get("type"), (*field_at, "type"), depth + 1)))
        else:
            fields.append((name, _parse_type(spec, field_at, depth + 1)))
    return tuple(fields)


def _short_name(name: str) -> str:
    """``#main/rec/field`` → ``field``: the form input objects use."""
    return name.rsplit("/", 1)[-1].lstrip("#")


def _accepts_null(type_: InputType) -> bool:
    if isinstance(type_, UnionOf):
        return any(_accepts_null(alternative) for alternative in type_.alternatives)
    return type_ is Primitive.NULL


def _describe(type_: InputType) -> str:
    if isinstance(type_, Primitive):
        return type_.value
    if isinstance(type_, ArrayOf):
        return f"array of {_describe(type_.items)}"
    if isinstance(type_, RecordOf):
        return "record"
    if isinstance(type_, EnumOf):
        return f"one of {_and([_q(symbol) for symbol in sorted(type_.symbols)], 'or')}"
    return " or ".join(_describe(alternative) for alternative in type_.alternatives)


# --- input values ------------------------------------------------------------------------

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class _Mismatch(Exception):
    """A value does not fit its type (caught by unions, which try the next alternative)."""

    def __init__(self, at: Pointer, reason: str) -> None:
        super().__init__(reason)
        self.at = at
        self.reason = reason


class _Walk:
    """Checks values against types and collects the File and Directory references in them.

    Recursion is bounded: values were scanned (`_scan`: at most `MAX_DEPTH` levels) and
    types parsed (`_parse_type`: at most `MAX_DEPTH` levels). Running out of checks
    raises `InvalidWorkflow`, which unions do not catch.
    """

    def __init__(self, origin: Origin) -> None:
        self.origin = origin
        self.checks_left = MAX_CHECKS

    def _enter(self, at: Pointer) -> None:
        self.checks_left -= 1
        if self.checks_left < 0:
            raise InvalidWorkflow(
                f"the values are too many or too intricate to check (stopped at {_show(at)})"
            )

    def check(self, type_: InputType, value: Any, at: Pointer) -> list[FileReference]:
        self._enter(at)
        if type_ is Primitive.ANY:
            if value is None:
                raise _Mismatch(at, "expected a value (type Any), got null")
            return self.any(value, at)
        if type_ is Primitive.FILE or type_ is Primitive.DIRECTORY:
            return self.file_object(FileKind(type_.value), value, at)
        if isinstance(type_, Primitive):
            _check_primitive(type_, value, at)
            return []
        if isinstance(type_, ArrayOf):
            if not isinstance(value, list):
                raise _Mismatch(at, f"expected {_describe(type_)}, got {_kind_of(value)}")
            return [
                reference
                for index, item in enumerate(value)
                for reference in self.check(type_.items, item, (*at, index))
            ]
        if isinstance(type_, RecordOf):
            return self.record(type_, value, at)
        if isinstance(type_, EnumOf):
            if not isinstance(value, str) or value not in type_.symbols:
                raise _Mismatch(at, f"expected {_describe(type_)}, got {_show_value(value)}")
            return []
        return self.union(type_, value, at)

    def union(self, type_: UnionOf, value: Any, at: Pointer) -> list[FileReference]:
        mismatches = []
        for alternative in type_.alternatives:
            try:
                return self.check(alternative, value, at)
            except _Mismatch as mismatch:
                if alternative is not Primitive.NULL:
                    mismatches.append(mismatch)
        if value is not None and len(mismatches) == 1:
            raise mismatches[0]
        raise _Mismatch(at, f"expected {_describe(type_)}, got {_kind_of(value)}")

    def record(self, type_: RecordOf, value: Any, at: Pointer) -> list[FileReference]:
        if not isinstance(value, Mapping):
            raise _Mismatch(at, f"expected a record, got {_kind_of(value)}")
        names = {name for name, _ in type_.fields}
        unknown = sorted(set(value) - names, key=str)
        if unknown:
            raise _Mismatch(at, f"unknown record field {_and([_q(key) for key in unknown])}")
        references = []
        for name, field_type in type_.fields:
            if name not in value and not _accepts_null(field_type):
                raise _Mismatch(at, f"record field {_q(name)} is missing")
            references.extend(self.check(field_type, value.get(name), (*at, name)))
        return references

    def any(self, value: Any, at: Pointer) -> list[FileReference]:
        """References anywhere in an untyped value (an ``Any`` input or a step default)."""
        self._enter(at)
        if isinstance(value, Mapping):
            kind = _file_kind(value)
            if kind is not None:
                return self.file_object(kind, value, at)
            return [
                reference for key, item in value.items() for reference in self.any(item, (*at, key))
            ]
        if isinstance(value, list):
            return [
                reference
                for index, item in enumerate(value)
                for reference in self.any(item, (*at, index))
            ]
        if isinstance(value, str) and "\x00" in value:
            raise _Mismatch(at, "the string contains a NUL character")
        return []

    def file_object(self, kind: FileKind, value: Any, at: Pointer) -> list[FileReference]:
        example = f'{{"class": "{kind}", "location": "..."}}'
        if not isinstance(value, Mapping):
            raise _Mismatch(at, f"expected a {kind} object like {example}, got {_kind_of(value)}")
        if value.get("class") != kind:
            got = value.get("class")
            raise _Mismatch(
                at,
                f"expected a {kind} object like {example}, but "
                + ("it has no 'class'" if got is None else f"its class is {_q(got)}"),
            )
        for key in ("location", "path"):
            if key in value:
                _check_location(value[key], (*at, key))
        if "basename" in value:
            _check_basename(value["basename"], (*at, "basename"))
        nested_key = "secondaryFiles" if kind is FileKind.FILE else "listing"
        literal_key = "contents" if kind is FileKind.FILE else "listing"
        if kind is FileKind.FILE and not isinstance(value.get("contents", ""), str):
            raise _Mismatch((*at, "contents"), "'contents' must be a string")
        location = value.get("location", value.get("path"))
        if location is None and literal_key not in value:
            raise _Mismatch(at, f"the {kind} has no 'location' (nor '{literal_key}')")
        references = []
        if location is not None:
            references.append(FileReference(self.origin, at, kind, location, value.get("basename")))
        nested = value.get(nested_key, [])
        if not isinstance(nested, list):
            raise _Mismatch((*at, nested_key), f"{nested_key!r} must be a list")
        for index, item in enumerate(nested):
            item_at = (*at, nested_key, index)
            item_kind = _file_kind(item)
            if item_kind is None:
                raise _Mismatch(
                    item_at,
                    f"entries of {nested_key!r} must be File or Directory objects, "
                    f"got {_kind_of(item)}",
                )
            references.extend(self.file_object(item_kind, item, item_at))
        return references


def _file_kind(value: Any) -> FileKind | None:
    kind = value.get("class") if isinstance(value, Mapping) else None
    return FileKind(kind) if isinstance(kind, str) and kind in set(FileKind) else None


def _check_primitive(type_: Primitive, value: Any, at: Pointer) -> None:
    number = isinstance(value, int | float) and not isinstance(value, bool)
    fits = {
        Primitive.NULL: value is None,
        Primitive.BOOLEAN: isinstance(value, bool),
        Primitive.INT: number and isinstance(value, int),
        Primitive.LONG: number and isinstance(value, int),
        Primitive.FLOAT: number and math.isfinite(value),
        Primitive.DOUBLE: number and math.isfinite(value),
        Primitive.STRING: isinstance(value, str),
    }[type_]
    if not fits:
        raise _Mismatch(at, f"expected {type_.value}, got {_kind_of(value)}")
    if isinstance(value, str) and "\x00" in value:
        raise _Mismatch(at, "the string contains a NUL character")


def _check_location(value: Any, at: Pointer) -> None:
    if not isinstance(value, str) or not value:
        raise _Mismatch(at, f"a location must be a non-empty string, not {_show_value(value)}")
    if _CONTROL.search(value):
        raise _Mismatch(at, f"the location {_q(value)} contains a control character")


def _check_basename(value: Any, at: Pointer) -> None:
    if not isinstance(value, str) or value in ("", ".", "..") or "/" in value or "\x00" in value:
        raise _Mismatch(
            at,
            f"the basename {_show_value(value)} is not a file name (it must not be empty, "
            "'.' or '..', nor contain '/' or NUL)",
        )


# --- messages ----------------------------------------------------------------------------


def _q(value: object, limit: int = 60) -> str:
    """A value quoted for a message: escapes control characters, cuts long text."""
    text = value if isinstance(value, str) else str(value)
    return repr(text[:limit]) + ("…" if len(text) > limit else "")


def _show(at: Pointer) -> str:
    """A pointer as JSON-pointer text, quoted: '/steps/wc/run'."""
    parts = (str(part).replace("~", "~0").replace("/", "~1") for part in at)
    return _q("/" + "/".join(parts), limit=120)


def _show_value(value: Any) -> str:
    return _q(value) if isinstance(value, str) else _kind_of(value)


def _kind_of(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, Mapping) and isinstance(value.get("class"), str):
        return f"an object of class {_q(value['class'])}"
    return "an object"


def _and(items: Sequence[str], word: str = "and") -> str:
    if len(items) <= 1:
        return "".join(items)
    return f"{', '.join(items[:-1])} {word} {items[-1]}"


def _did_you_mean(name: str, known: Collection[str]) -> str:
    """The one to three known names closest to `name` ('' if none is close), joined by "or".

    Only names about as close as the best one count: long shared prefixes such as
    ``cerise/test/`` make every installed step look similar to any misspelt one.
    """
    scored = sorted(
        ((difflib.SequenceMatcher(None, name, other).ratio(), other) for other in known),
        key=lambda pair: (-pair[0], pair[1]),
    )
    if not scored:
        return ""
    floor = max(0.6, scored[0][0] - 0.05)
    return _and([_q(other) for score, other in scored[:3] if score >= floor], "or")


def _too_deep(what: str) -> str:
    return f"{what} is nested too deeply (more than {MAX_DEPTH} levels)"
