"""The refusal of a workflow or input object, and the pieces its messages are made of."""

from __future__ import annotations

import difflib
from collections.abc import Collection, Mapping, Sequence
from typing import Any

Pointer = tuple[str | int, ...]
"""A position in a document: mapping keys and list indices from the root."""


class InvalidWorkflow(ValueError):
    """The workflow or its input object cannot run; the message says why, for a person."""


def quote(value: object, limit: int = 60) -> str:
    """A value quoted for a message: escapes control characters, cuts long text."""
    text = value if isinstance(value, str) else str(value)
    return repr(text[:limit]) + ("…" if len(text) > limit else "")


def show(at: Pointer) -> str:
    """A pointer as JSON-pointer text, quoted: '/steps/wc/run'."""
    parts = (str(part).replace("~", "~0").replace("/", "~1") for part in at)
    return quote("/" + "/".join(parts), limit=120)


def show_value(value: Any) -> str:
    return quote(value) if isinstance(value, str) else kind_of(value)


def kind_of(value: Any) -> str:
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
        return f"an object of class {quote(value['class'])}"
    return "an object"


def join(items: Sequence[str], word: str = "and") -> str:
    """'a', 'a and b', 'a, b and c'."""
    if len(items) <= 1:
        return "".join(items)
    return f"{', '.join(items[:-1])} {word} {items[-1]}"


def did_you_mean(name: str, known: Collection[str]) -> str:
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
    return join([quote(other) for score, other in scored[:3] if score >= floor], "or")
