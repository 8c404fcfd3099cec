"""Fields of a submitted workflow through which a value could reach outside its job.

cwltool finds a secondary file by applying its pattern to the primary's name and putting
the result beside it, so a ``/`` in a pattern reads any path on the compute resource, and
an expression there turns an input string into a path. Patterns are therefore plain
suffixes (``.idx``, ``^.bai``, ``.crai?``); ``format``, ``loadContents`` and
``loadListing`` are literals; a Workflow has no ``outputBinding`` (only CWL v1.0 knew it),
and of a v1.0 ``inputBinding`` only ``loadContents``. File and Directory locations in
defaults are collected elsewhere (`values`) and staged like any input. Rules:
docs/workflows.md.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from cerise.model.cwl import document
from cerise.model.cwl.messages import InvalidWorkflow, Pointer, quote, show

_LISTINGS = frozenset({"no_listing", "shallow_listing", "deep_listing"})
_NOT_IN_A_NAME = re.compile(r"[/\\$\x00-\x1f\x7f]")


def check_boundaries(workflow: Any) -> None:
    """Refuse fields of `workflow` (and its subworkflows) that could reach outside the job."""
    for value, at, names in document.nodes(workflow):
        if names or not isinstance(value, Mapping):
            continue
        if "outputBinding" in value:
            raise InvalidWorkflow(
                f"{show((*at, 'outputBinding'))}: a submitted workflow may not have an "
                "outputBinding (it would read files the steps did not produce); use outputSource"
            )
        binding = value.get("inputBinding")
        if binding is not None:
            extra = sorted(set(binding) - {"loadContents"}) if isinstance(binding, Mapping) else []
            if extra or not isinstance(binding, Mapping):
                raise InvalidWorkflow(
                    f"{show((*at, 'inputBinding'))}: only loadContents is allowed in the "
                    "inputBinding of a workflow input"
                )
            _check_literal(binding, "loadContents", (*at, "inputBinding"))
        _check_literal(value, "loadContents", at)
        _check_literal(value, "loadListing", at)
        if "format" in value:
            _check_format(value["format"], (*at, "format"))
        if "secondaryFiles" in value:
            _check_secondary_files(value["secondaryFiles"], (*at, "secondaryFiles"))


def _check_literal(value: Mapping[str, Any], key: str, at: Pointer) -> None:
    if key not in value or value[key] is None:
        return
    item = value[key]
    fits = isinstance(item, bool) if key == "loadContents" else item in _LISTINGS
    if not fits:
        what = "true or false" if key == "loadContents" else ", ".join(sorted(_LISTINGS))
        raise InvalidWorkflow(f"{show((*at, key))}: {key} must be {what}, not {quote(item)}")


def _check_format(value: Any, at: Pointer) -> None:
    for index, item in enumerate(value if isinstance(value, list) else [value]):
        where = (*at, index) if isinstance(value, list) else at
        if not isinstance(item, str) or "$(" in item or "${" in item:
            raise InvalidWorkflow(
                f"{show(where)}: a format must be written out as an IRI (such as "
                "edam:format_2572), not computed"
            )


def _check_secondary_files(value: Any, at: Pointer) -> None:
    for index, item in enumerate(value if isinstance(value, list) else [value]):
        where = (*at, index) if isinstance(value, list) else at
        pattern = item.get("pattern") if isinstance(item, Mapping) else item
        if isinstance(item, Mapping):
            where = (*where, "pattern")
        problem = pattern_problem(pattern)
        if problem:
            raise InvalidWorkflow(
                f"{show(where)}: the secondaryFiles pattern {problem}; a pattern must be a "
                "plain suffix such as '.idx', '^.bai' or '.crai?'"
            )


def pattern_problem(pattern: Any) -> str | None:
    """Why `pattern` is not a plain secondaryFiles suffix (carets, a name's end, an
    optional ``?``), if it is not."""
    if not isinstance(pattern, str):
        return "is not a string"
    unanchored = pattern.lstrip("^")
    suffix = unanchored.removesuffix("?")
    if "$(" in pattern or "${" in pattern:
        return f"{quote(pattern)} is an expression"
    if _NOT_IN_A_NAME.search(suffix):
        return f"{quote(pattern)} contains '/', a backslash, '$' or a control character"
    if not suffix and unanchored == pattern:
        return "is empty"
    if suffix and not suffix.strip("."):
        return f"{quote(pattern)} is only dots, which can name a directory"
    return None
