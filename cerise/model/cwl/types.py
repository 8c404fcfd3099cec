"""The types a workflow input may declare, read from their CWL syntax.

Primitives, the ``T?`` and ``T[]`` shorthands, unions (lists) and ``array``, ``record``
and ``enum`` schemas, at most `MAX_TYPE_DEPTH` levels deep; named types need
SchemaDefRequirement, which is not allowed. Rules: docs/workflows.md.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from cerise.model.cwl.messages import InvalidWorkflow, Pointer, join, quote, show

MAX_TYPE_DEPTH = 10
"""Levels of nested types (``?``, ``[]``, unions, schemas): the CWL loader's work grows
faster than the document with each level."""


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


def parse_type(raw: Any, at: Pointer, depth: int = 0) -> InputType:
    """The type declared by `raw`, found at `at` in the workflow."""
    if depth > MAX_TYPE_DEPTH:
        raise InvalidWorkflow(
            f"{show(at)}: the type is nested too deeply (more than {MAX_TYPE_DEPTH} levels)"
        )
    if isinstance(raw, str):
        if raw.endswith("?"):
            return UnionOf((Primitive.NULL, parse_type(raw[:-1], at, depth + 1)))
        if raw.endswith("[]"):
            return ArrayOf(parse_type(raw[:-2], at, depth + 1))
        if raw in set(Primitive):
            return Primitive(raw)
        raise InvalidWorkflow(
            f"{show(at)}: unknown type {quote(raw)}; use {join(list(Primitive))}, an array, "
            "record or enum schema, or a list of these"
        )
    if isinstance(raw, list):
        if not raw:
            raise InvalidWorkflow(f"{show(at)}: an empty list is not a type")
        return UnionOf(tuple(parse_type(item, (*at, i), depth + 1) for i, item in enumerate(raw)))
    if isinstance(raw, Mapping):
        kind = raw.get("type")
        if kind == "array" and "items" in raw:
            return ArrayOf(parse_type(raw["items"], (*at, "items"), depth + 1))
        if kind == "record":
            return RecordOf(_parse_fields(raw.get("fields"), (*at, "fields"), depth))
        if kind == "enum":
            symbols = raw.get("symbols")
            if not isinstance(symbols, list) or not symbols:
                raise InvalidWorkflow(f"{show(at)}: an enum needs a list of 'symbols'")
            if not all(isinstance(symbol, str) for symbol in symbols):
                raise InvalidWorkflow(f"{show(at)}: enum symbols must be strings")
            return EnumOf(frozenset(short_name(symbol) for symbol in symbols))
        raise InvalidWorkflow(
            f"{show(at)}: a type schema needs type: array (with 'items'), record or enum"
        )
    raise InvalidWorkflow(f"{show(at)}: {raw!r} is not a type")


def check_output_types(raw: Any, at: Pointer = ("outputs",)) -> None:
    """Parse the types of a workflow's ``outputs`` (map or list form, found at `at`), so that
    they keep to the same forms and depth as inputs; what is not valid CWL is left to the
    loader."""
    if isinstance(raw, Mapping):
        entries = [(spec, (*at, name)) for name, spec in raw.items()]
    elif isinstance(raw, list):
        entries = [(spec, (*at, index)) for index, spec in enumerate(raw)]
    else:
        return
    for spec, at in entries:
        if isinstance(spec, Mapping) and spec.get("type") is not None:
            parse_type(spec["type"], (*at, "type"))
        elif spec is not None and not isinstance(spec, Mapping):
            parse_type(spec, at)


def _parse_fields(raw: Any, at: Pointer, depth: int) -> tuple[tuple[str, InputType], ...]:
    if isinstance(raw, Mapping):
        specs = [(name, spec, (*at, name)) for name, spec in raw.items()]
    elif isinstance(raw, list):
        specs = []
        for index, spec in enumerate(raw):
            if not isinstance(spec, Mapping) or not isinstance(spec.get("name"), str):
                raise InvalidWorkflow(f"{show((*at, index))}: a record field needs a 'name'")
            specs.append((short_name(spec["name"]), spec, (*at, index)))
    else:
        raise InvalidWorkflow(f"{show(at)}: a record needs 'fields' (a mapping or a list)")
    fields = []
    for name, spec, field_at in specs:
        if isinstance(spec, Mapping):
            fields.append((name, parse_type(spec.get("type"), (*field_at, "type"), depth + 1)))
        else:
            fields.append((name, parse_type(spec, field_at, depth + 1)))
    return tuple(fields)


def short_name(name: str) -> str:
    """``#main/rec/field`` → ``field``: the form input objects use."""
    return name.rsplit("/", 1)[-1].lstrip("#")


def accepts_null(type_: InputType) -> bool:
    if isinstance(type_, UnionOf):
        return any(accepts_null(alternative) for alternative in type_.alternatives)
    return type_ is Primitive.NULL


def describe(type_: InputType) -> str:
    if isinstance(type_, Primitive):
        return type_.value
    if isinstance(type_, ArrayOf):
        return f"array of {describe(type_.items)}"
    if isinstance(type_, RecordOf):
        return "record"
    if isinstance(type_, EnumOf):
        return f"one of {join([quote(symbol) for symbol in sorted(type_.symbols)], 'or')}"
    return " or ".join(describe(alternative) for alternative in type_.alternatives)
