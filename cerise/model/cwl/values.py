"""Input values checked against their types, and the Files and Directories found in them.

`Walk` checks a value (from the input object, or a default in the workflow) against its
declared type and collects each File and Directory with a location as a `FileReference`,
whose pointer lets staging rewrite it (`relocate`). Checking one value stops after
`MAX_CHECKS` values, which bounds the work unions of nested arrays could otherwise
multiply. Rules: docs/workflows.md.
"""

from __future__ import annotations

import copy
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from cerise.model.cwl import types
from cerise.model.cwl.messages import (
    InvalidWorkflow,
    Pointer,
    join,
    kind_of,
    quote,
    show,
    show_value,
)
from cerise.model.cwl.types import ArrayOf, EnumOf, InputType, Primitive, RecordOf, UnionOf

MAX_CHECKS = 1_000_000


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


def relocate(document: Mapping[str, Any], locations: Mapping[Pointer, str]) -> dict[str, Any]:
    """A copy of `document` with each File/Directory at a pointer given its new location.

    A stale ``path`` is dropped; other keys (``basename``, ``secondaryFiles``…) are kept.
    """
    result = copy.deepcopy(dict(document))
    for pointer, location in locations.items():
        target: Any = result
        for part in pointer:
            target = target[part]
        if not isinstance(target, dict) or file_kind(target) is None:
            raise ValueError(f"no File or Directory at {show(pointer)}")
        target["location"] = location
        target.pop("path", None)
    return result


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class Mismatch(Exception):
    """A value does not fit its type (caught by unions, which try the next alternative)."""

    def __init__(self, at: Pointer, reason: str) -> None:
        super().__init__(reason)
        self.at = at
        self.reason = reason


class Walk:
    """Checks values against types and collects the File and Directory references in them.

    Recursion is bounded: values were scanned (`document.scan`: at most `MAX_DEPTH` levels) and
    types parsed (`types.parse_type`: at most `MAX_DEPTH` levels). Running out of checks
    raises `InvalidWorkflow`, which unions do not catch.
    """

    def __init__(self, origin: Origin) -> None:
        self.origin = origin
        self.checks_left = MAX_CHECKS

    def _enter(self, at: Pointer) -> None:
        self.checks_left -= 1
        if self.checks_left < 0:
            raise InvalidWorkflow(
                f"the values are too many or too intricate to check (stopped at {show(at)})"
            )

    def check(self, type_: InputType, value: Any, at: Pointer) -> list[FileReference]:
        self._enter(at)
        if type_ is Primitive.ANY:
            if value is None:
                raise Mismatch(at, "expected a value (type Any), got null")
            return self.any(value, at)
        if type_ is Primitive.FILE or type_ is Primitive.DIRECTORY:
            return self.file_object(FileKind(type_.value), value, at)
        if isinstance(type_, Primitive):
            _check_primitive(type_, value, at)
            return []
        if isinstance(type_, ArrayOf):
            if not isinstance(value, list):
                raise Mismatch(at, f"expected {types.describe(type_)}, got {kind_of(value)}")
            return [
                reference
                for index, item in enumerate(value)
                for reference in self.check(type_.items, item, (*at, index))
            ]
        if isinstance(type_, RecordOf):
            return self.record(type_, value, at)
        if isinstance(type_, EnumOf):
            if not isinstance(value, str) or value not in type_.symbols:
                raise Mismatch(at, f"expected {types.describe(type_)}, got {show_value(value)}")
            return []
        return self.union(type_, value, at)

    def union(self, type_: UnionOf, value: Any, at: Pointer) -> list[FileReference]:
        mismatches = []
        for alternative in type_.alternatives:
            try:
                return self.check(alternative, value, at)
            except Mismatch as mismatch:
                if alternative is not Primitive.NULL:
                    mismatches.append(mismatch)
        if value is not None and len(mismatches) == 1:
            raise mismatches[0]
        raise Mismatch(at, f"expected {types.describe(type_)}, got {kind_of(value)}")

    def record(self, type_: RecordOf, value: Any, at: Pointer) -> list[FileReference]:
        if not isinstance(value, Mapping):
            raise Mismatch(at, f"expected a record, got {kind_of(value)}")
        names = {name for name, _ in type_.fields}
        unknown = sorted(set(value) - names, key=str)
        if unknown:
            raise Mismatch(at, f"unknown record field {join([quote(key) for key in unknown])}")
        references = []
        for name, field_type in type_.fields:
            if name not in value and not types.accepts_null(field_type):
                raise Mismatch(at, f"record field {quote(name)} is missing")
            references.extend(self.check(field_type, value.get(name), (*at, name)))
        return references

    def any(self, value: Any, at: Pointer) -> list[FileReference]:
        """References anywhere in an untyped value (an ``Any`` input or a step default)."""
        self._enter(at)
        if isinstance(value, Mapping):
            kind = file_kind(value)
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
            raise Mismatch(at, "the string contains a NUL character")
        return []

    def file_object(self, kind: FileKind, value: Any, at: Pointer) -> list[FileReference]:
        example = f'{{"class": "{kind}", "location": "..."}}'
        if not isinstance(value, Mapping):
            raise Mismatch(at, f"expected a {kind} object like {example}, got {kind_of(value)}")
        if value.get("class") != kind:
            got = value.get("class")
            raise Mismatch(
                at,
                f"expected a {kind} object like {example}, but "
                + ("it has no 'class'" if got is None else f"its class is {quote(got)}"),
            )
        for key in ("location", "path"):
            if key in value:
                _check_location(value[key], (*at, key))
        if "basename" in value:
            _check_basename(value["basename"], (*at, "basename"))
        nested_key = "secondaryFiles" if kind is FileKind.FILE else "listing"
        literal_key = "contents" if kind is FileKind.FILE else "listing"
        if kind is FileKind.FILE and not isinstance(value.get("contents", ""), str):
            raise Mismatch((*at, "contents"), "'contents' must be a string")
        location = value.get("location", value.get("path"))
        if location is None and literal_key not in value:
            raise Mismatch(at, f"the {kind} has no 'location' (nor '{literal_key}')")
        references = []
        if location is not None:
            references.append(FileReference(self.origin, at, kind, location, value.get("basename")))
        nested = value.get(nested_key, [])
        if not isinstance(nested, list):
            raise Mismatch((*at, nested_key), f"{nested_key!r} must be a list")
        for index, item in enumerate(nested):
            item_at = (*at, nested_key, index)
            item_kind = file_kind(item)
            if item_kind is None:
                raise Mismatch(
                    item_at,
                    f"entries of {nested_key!r} must be File or Directory objects, "
                    f"got {kind_of(item)}",
                )
            references.extend(self.file_object(item_kind, item, item_at))
        return references


def file_kind(value: Any) -> FileKind | None:
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
        raise Mismatch(at, f"expected {type_.value}, got {kind_of(value)}")
    if isinstance(value, str) and "\x00" in value:
        raise Mismatch(at, "the string contains a NUL character")


def _check_location(value: Any, at: Pointer) -> None:
    if not isinstance(value, str) or not value:
        raise Mismatch(at, f"a location must be a non-empty string, not {show_value(value)}")
    if _CONTROL.search(value):
        raise Mismatch(at, f"the location {quote(value)} contains a control character")


def _check_basename(value: Any, at: Pointer) -> None:
    if not isinstance(value, str) or value in ("", ".", "..") or "/" in value or "\x00" in value:
        raise Mismatch(
            at,
            f"the basename {show_value(value)} is not a file name (it must not be empty, "
            "'.' or '..', nor contain '/' or NUL)",
        )
