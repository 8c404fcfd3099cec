"""Moving the File and Directory locations of a CWL value (an input object), e.g. from a
client's local paths or a WES request's attachment names to the file exchange's URLs."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def moved(value: Any, move: Callable[[str], str | None]) -> Any:
    """`value` with each File/Directory's `location` (or `path`) replaced by `move(it)`.

    Where `move` answers None the object is left as it is; where it answers a location,
    that becomes `location` and `path` is dropped. Nested values (arrays, records,
    secondaryFiles, listings) are walked too; `value` itself is not changed.
    """
    if isinstance(value, list):
        return [moved(item, move) for item in value]
    if not isinstance(value, dict):
        return value
    found = {key: moved(item, move) for key, item in value.items()}
    if found.get("class") in ("File", "Directory"):
        where = found.get("location") or found.get("path")
        target = move(where) if isinstance(where, str) else None
        if target is not None:
            found["location"] = target
            found.pop("path", None)
    return found
