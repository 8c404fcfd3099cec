"""Reading a submitted document, and the scan it and the input object pass first.

JSON, or YAML read with the CWL loader's own reader (YAML 1.2, no timestamps), so that
the document checked here is the one the loader validates and the runner is handed (as
JSON). The scan keeps JSON values only, within `MAX_DEPTH` and `MAX_NODES`, and refuses
anything that pulls in outside content and keys that would garble logs. `nodes` walks a
scanned document, telling the names of things from CWL's fields, for the other rules.
Rules: docs/workflows.md.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator, Mapping
from collections.abc import Set as AbstractSet
from typing import Any, NamedTuple

from ruamel.yaml.error import MarkedYAMLError, YAMLError
from ruamel.yaml.scalarbool import ScalarBoolean
from schema_salad.utils import yaml_no_ts

from cerise.model.cwl.messages import InvalidWorkflow, Pointer, kind_of, quote, show

MAX_DEPTH = 100
MAX_NODES = 20_000

_TOOL_CLASSES = frozenset({"CommandLineTool", "ExpressionTool", "Operation"})
_EXTERNAL_KEYS = frozenset({"$import", "$include", "$mixin"})
_LOADER_PREFIXES = {"cwl": "https://w3id.org/cwl/cwl#", "cwltool": "http://commonwl.org/cwltool#"}
_LOADER_VOCABULARIES = ("https://w3id.org/cwl/", "http://commonwl.org/cwltool#")
_NAMED_ENTRIES = frozenset(
    {"$namespaces", "inputs", "outputs", "steps", "in", "fields", "requirements", "hints"}
)
"""Fields whose mapping's keys are names, not fields."""
DATA_FIELDS = frozenset({"default", "doc", "label"})
"""Fields whose values are data or text for people, never read as part of the process."""
_LINE_BREAKING = re.compile(
    r"[\x00-\x1f\x7f-\x9f\u2028\u2029\u200e\u200f\u202a-\u202e\u2066-\u2069]"
)
"""Control characters, Unicode line and paragraph separators and bidi controls."""


def _too_deep(what: str) -> str:
    return f"{what} is nested too deeply (more than {MAX_DEPTH} levels)"


def decode(text: str | bytes, *, what: str = "the workflow") -> str:
    if isinstance(text, str):
        return text
    try:
        return text.decode("utf-8")
    except UnicodeDecodeError as error:
        raise InvalidWorkflow(
            f"{what} is not UTF-8 text (bad byte at offset {error.start})"
        ) from None


def parse(text: str | bytes, *, what: str = "the workflow") -> Any:
    """The JSON or YAML value in `text`, as the YAML reader gives it (not yet scanned)."""
    text = decode(text, what=what)
    try:
        return json.loads(text)
    except RecursionError:
        raise InvalidWorkflow(_too_deep(what)) from None
    except ValueError:
        pass  # not JSON; YAML is the other allowed syntax
    try:
        return yaml_no_ts().load(text)
    except RecursionError:
        raise InvalidWorkflow(_too_deep(what)) from None
    except MarkedYAMLError as error:
        mark = error.problem_mark
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        raise InvalidWorkflow(
            f"{what} is neither JSON nor valid YAML: {error.problem}{where}"
        ) from None
    except YAMLError as error:
        raise InvalidWorkflow(f"{what} is neither JSON nor valid YAML: {error}") from None


def load_workflow(text: str | bytes) -> dict[str, Any]:
    """The submitted workflow as plain JSON values, once it passes the scan and is a Workflow."""
    document = scan(parse(text), what="the workflow", max_nodes=MAX_NODES)
    if document is None:
        raise InvalidWorkflow("the workflow document is empty")
    if not isinstance(document, dict):
        raise InvalidWorkflow(
            f"the workflow must be a mapping with class: Workflow, not {kind_of(document)}"
        )
    if "$graph" in document:
        raise InvalidWorkflow(
            "packed documents ($graph) are not supported; submit one class: Workflow document"
        )
    for key in document:
        if key.startswith("$") and key != "$namespaces":
            raise InvalidWorkflow(
                f"{quote(key)} is not allowed at the top of a submitted workflow "
                "(only $namespaces is): it can pull in outside content"
            )
    _refuse_aliases(document)
    kind = document.get("class")
    if kind in _TOOL_CLASSES:
        raise InvalidWorkflow(
            f"inline tools are not allowed (class: {kind}); submit a class: Workflow whose "
            "steps run the installed steps of a specialisation"
        )
    if kind != "Workflow":
        got = "has no 'class'" if kind is None else f"has class {quote(kind)}"
        raise InvalidWorkflow(f"the document {got}; a submitted workflow needs class: Workflow")
    return document


class Node(NamedTuple):
    """A value of the document, where it is, and whether its keys are names (of inputs,
    steps, record fields, requirement classes…) rather than fields."""

    value: Any
    at: Pointer
    names: bool


def nodes(document: Any) -> Iterator[Node]:
    """Every value of `document` with its pointer, depth-first, except what the fields in
    `DATA_FIELDS` hold: values the runner treats as data (or text for people), never as
    part of the process."""
    stack: list[Node] = [Node(document, (), False)]
    while stack:
        node = stack.pop()
        yield node
        value, at, names = node
        if isinstance(value, list):
            stack.extend(Node(item, (*at, index), False) for index, item in enumerate(value))
        elif isinstance(value, dict):
            for key, item in value.items():
                if not names and key in DATA_FIELDS:
                    continue
                named = not names and key in _NAMED_ENTRIES and isinstance(item, dict)
                stack.append(Node(item, (*at, key), named))


def _refuse_aliases(document: dict[str, Any]) -> None:
    """Refuse field names that name a field of CWL or cwltool by its URI (``cwl:run``, a
    prefix of the document's ``$namespaces``, the full URI): the loader reads such a key as
    the field itself, so ``cwl:run`` would replace the ``run`` that was checked."""
    namespaces = document.get("$namespaces")
    declared = namespaces if isinstance(namespaces, dict) else {}
    for value, at, names in nodes(document):
        if names or not isinstance(value, dict):
            continue
        for key in value:
            prefix, colon, rest = key.partition(":")
            meanings = [key]
            if colon:
                bases = (_LOADER_PREFIXES.get(prefix), declared.get(prefix))
                meanings += [f"{base}{rest}" for base in bases if isinstance(base, str)]
            if any(m.startswith(_LOADER_VOCABULARIES) for m in meanings):
                raise InvalidWorkflow(
                    f"the key {quote(key)} at {show(at)} is not allowed: it names a field of "
                    "CWL or cwltool by its URI; write the field's plain name"
                )


def scan(value: Any, *, what: str, max_nodes: int | None) -> Any:
    """`value` as plain JSON values; refuses what JSON cannot hold, outside content
    (``$import``, ``$include``, ``$mixin``), keys with control, line-separator or bidi
    characters, and excessive depth or size (values are counted with YAML aliases
    expanded, so a small "billion laughs" text stays small)."""
    seen = 0

    def copy(node: Any, at: Pointer) -> Any:
        nonlocal seen
        seen += 1
        if max_nodes is not None and seen > max_nodes:
            raise InvalidWorkflow(
                f"{what} has more than {max_nodes} values (counting YAML aliases)"
            )
        if len(at) > MAX_DEPTH:
            raise InvalidWorkflow(_too_deep(what))
        if isinstance(node, Mapping):
            result = {}
            for key, item in node.items():
                if not isinstance(key, str):
                    raise InvalidWorkflow(
                        f"key {key!r} at {show(at)} in {what} is not a string; quote it"
                    )
                if _LINE_BREAKING.search(key):
                    raise InvalidWorkflow(
                        f"the key {quote(key)} at {show(at)} in {what} contains a control, "
                        "line-separator or bidi character, which would garble logs"
                    )
                if key in _EXTERNAL_KEYS:
                    raise InvalidWorkflow(
                        f"{key} at {show(at)} in {what} is not allowed: it pulls in outside content"
                    )
                result[str(key)] = copy(item, (*at, key))
            return result
        if isinstance(node, list):
            return [copy(item, (*at, index)) for index, item in enumerate(node)]
        return _scalar(node, at, what)

    return copy(value, ())


def _scalar(node: Any, at: Pointer, what: str) -> Any:
    if node is None or isinstance(node, bool):
        return node
    if isinstance(node, ScalarBoolean):  # an anchored true/false: an int to Python
        return bool(node)
    if isinstance(node, int):
        return int(node)
    if isinstance(node, float):
        if not math.isfinite(node):
            raise InvalidWorkflow(
                f"the value at {show(at)} in {what} is {node}, which JSON cannot hold"
            )
        return float(node)
    if isinstance(node, str):
        return str(node)
    kind = "binary data" if isinstance(node, bytes) else f"a {type(node).__name__}"
    if isinstance(node, AbstractSet):
        kind = "a set"
    raise InvalidWorkflow(
        f"the value at {show(at)} in {what} is {kind}, which JSON cannot hold; "
        "quote it if it is meant as a string"
    )
