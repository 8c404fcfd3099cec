"""JSON from requests, parsed with bounds: invalid or too deeply nested JSON is a 400.

Python's parser gives up (RecursionError) somewhere near a thousand levels, and the code
that walks an input object afterwards is recursive too; CWL input objects are a few
levels deep, so `MAX_DEPTH` leaves ample room and no way to a 500.
"""

from __future__ import annotations

import json
from typing import Any

from cerise.apiserver import errors

MAX_DEPTH = 64
"""The deepest nesting of arrays and objects accepted."""


def parse(raw: bytes | str, what: str) -> Any:
    """The JSON value in `raw`; BadRequest, naming `what` (e.g. "the request body"), if it
    is not valid JSON or nests deeper than `MAX_DEPTH`."""
    try:
        value = json.loads(raw)
    except RecursionError:
        raise _too_deep(what) from None
    except (ValueError, UnicodeDecodeError):
        raise errors.BadRequest(f"{what} is not valid JSON") from None
    if depth(value) > MAX_DEPTH:
        raise _too_deep(what)
    return value


def depth(value: Any) -> int:
    """How deeply arrays and objects nest in `value` (a scalar is 0), without recursion."""
    deepest = 0
    pending: list[tuple[Any, int]] = [(value, 0)]
    while pending:
        item, level = pending.pop()
        children = item.values() if isinstance(item, dict) else item if isinstance(
            item, list) else None
        if children is None:
            continue
        deepest = max(deepest, level + 1)
        if deepest > MAX_DEPTH:
            return deepest
        pending.extend((child, level + 1) for child in children)
    return deepest


def _too_deep(what: str) -> errors.BadRequest:
    return errors.BadRequest(f"{what} nests arrays and objects more than {MAX_DEPTH} deep")
