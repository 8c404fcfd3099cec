"""A specialisation project's files: which are installed, which are refused, and the
``$CERISE_PROJECT_FILES`` substitution in its steps (pure: no I/O).

A project is a directory with ``version`` (optional: the Specialisation's version is
written there), ``steps/<project>/…/*.cwl``, ``files/…`` and ``install.sh``; nothing else
is installed. Its files may come from a ConfigMap (keys are paths with ``/`` written as
``__``), an archive or a directory; every entry is checked the same way (`check_entries`):
a relative path without ``..`` or empty components, a regular file, a directory, or a link
that stays inside the project; devices, FIFOs and the like are refused, and so are more
than `MAX_ENTRIES` entries or `MAX_UNPACKED_BYTES` in all, as soon as the entries read so
far pass either. An archive whose entries all sit in one top directory
(``myproject/steps/…``) is read as that directory.

In every CommandLineTool of a step document (also inline ones in a step that is a
Workflow), ``$CERISE_PROJECT_FILES`` in ``baseCommand`` (a string or a list) and in
``arguments`` (strings, or bindings with ``valueFrom``, ``prefix``…) is replaced by the
installed ``files/`` directory (`substitute`); nothing else is touched, as in the original.
"""

from __future__ import annotations

import copy
import json
import posixpath
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import yaml

MAX_ENTRIES = 10_000
MAX_UNPACKED_BYTES = 512 << 20
PROJECT_FILES = "$CERISE_PROJECT_FILES"
INSTALLED = frozenset({"version", "install.sh", "steps", "files"})
"""Top-level names of a project that are installed."""

_MACRO = re.compile(re.escape(PROJECT_FILES) + r"(?![A-Za-z0-9_])")


class InvalidProject(ValueError):
    """The project's files cannot be installed; the message says which entry and why."""


class EntryKind(StrEnum):
    """What an entry of a project source is."""

    FILE = "file"
    DIRECTORY = "directory"
    SYMLINK = "symbolic link"
    HARDLINK = "hard link"
    OTHER = "device or other special file"


@dataclass(frozen=True)
class Entry:
    """An entry of a project source as found (e.g. a tar member); `link` is a link's target."""

    name: str
    kind: EntryKind
    size: int = 0
    link: str | None = None


@dataclass(frozen=True)
class Checked:
    """An accepted entry: its `source` name, and its `path` inside the project."""

    source: str
    path: str
    kind: EntryKind


def configmap_path(key: str) -> str:
    """The project path a ConfigMap key stands for (``steps__p__wc.cwl`` → ``steps/p/wc.cwl``)."""
    return key.replace("__", "/")


def check_entries(
    entries: Iterable[Entry], *, max_entries: int = MAX_ENTRIES,
    max_bytes: int = MAX_UNPACKED_BYTES,
) -> list[Checked]:
    """The entries to install, in order; InvalidProject on the first that is refused.

    Entries outside `INSTALLED` are left out; links must resolve inside the project. The
    count and the total size are checked as `entries` are read, so a lazy listing (an
    archive's headers) stops at the first entry past a limit, before reading the rest.
    """
    total = 0
    named: list[tuple[Entry, str]] = []
    for entry in entries:
        if len(named) >= max_entries:
            raise InvalidProject(f"more than {max_entries} entries")
        total += entry.size
        if total > max_bytes:
            raise InvalidProject(f"more than {max_bytes >> 20} MiB unpacked")
        named.append((entry, _relative(entry.name)))
    prefix = _top_directory([path for _, path in named])
    accepted: list[Checked] = []
    for entry, path in named:
        inside = path[len(prefix):] if prefix else path
        if not inside or inside.split("/", 1)[0] not in INSTALLED:
            continue
        if entry.kind is EntryKind.OTHER:
            raise InvalidProject(f"{entry.name!r} is a device or other special file")
        if entry.kind is EntryKind.SYMLINK:
            _check_link(entry, posixpath.join(posixpath.dirname(inside), entry.link or ""))
        elif entry.kind is EntryKind.HARDLINK:
            target = _relative(entry.link or "")
            _check_link(entry, target[len(prefix):] if target.startswith(prefix) else "..")
        accepted.append(Checked(source=entry.name, path=inside, kind=entry.kind))
    return accepted


def _relative(name: str) -> str:
    """An entry name as a clean relative path, or InvalidProject."""
    if name.startswith("/"):
        raise InvalidProject(f"{name!r} is an absolute path")
    if "\\" in name or "\x00" in name:
        raise InvalidProject(f"{name!r} contains a backslash or NUL")
    parts = [part for part in name.split("/") if part not in ("", ".")]
    if ".." in parts:
        raise InvalidProject(f"{name!r} leads out of the project ('..')")
    return "/".join(parts)


def _top_directory(paths: list[str]) -> str:
    """``name/`` if every entry lies in one top directory and none is a project name."""
    tops = {path.split("/", 1)[0] for path in paths if path}
    if len(tops) != 1 or tops <= INSTALLED:
        return ""
    return f"{tops.pop()}/"


def _check_link(entry: Entry, target: str) -> None:
    if entry.link is None or entry.link.startswith("/"):
        raise InvalidProject(f"{entry.name!r} links to an absolute path")
    resolved = posixpath.normpath(target)
    if resolved == ".." or resolved.startswith("../"):
        raise InvalidProject(f"{entry.name!r} links out of the project ({entry.link!r})")


def is_step(path: str) -> bool:
    """Whether a project path is a step document."""
    return path.startswith("steps/") and path.endswith(".cwl")


def substitute_step(text: bytes, files_dir: str, shown: str) -> bytes | None:
    """The step document with `PROJECT_FILES` replaced, as JSON; None if nothing changes."""
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise InvalidProject(f"{shown} is not valid YAML: {error}") from None
    new = substitute(document, files_dir)
    if new == document:
        return None
    return (json.dumps(new, indent=2) + "\n").encode()


def substitute(document: Any, files_dir: str) -> Any:
    """A copy of a CWL document with `PROJECT_FILES` replaced in its CommandLineTools."""
    result = copy.deepcopy(document)
    for tool in _tools(result):
        for key in ("baseCommand", "arguments"):
            if key in tool:
                tool[key] = _replaced(tool[key], files_dir)
    return result


def _tools(node: Any) -> Iterable[dict[str, Any]]:
    """Every CommandLineTool in a document, nested ones included."""
    stack = [node]
    while stack:
        item = stack.pop()
        if isinstance(item, Mapping):
            if item.get("class") == "CommandLineTool" and isinstance(item, dict):
                yield item
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)


def _replaced(value: Any, files_dir: str) -> Any:
    if isinstance(value, str):
        return _MACRO.sub(lambda _: files_dir, value)
    if isinstance(value, list):
        return [_replaced(item, files_dir) for item in value]
    if isinstance(value, dict):
        return {key: _replaced(item, files_dir) for key, item in value.items()}
    return value
