"""The work directory as ONE remote command lists it (types, sizes, and where each
symbolic link really leads), and the parser of that listing.

The script needs bash 4 and GNU findutils and coreutils (``find -printf``,
``realpath -z``). Remote names are assumed to be valid UTF-8.
"""

from __future__ import annotations

import shlex
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace

from cerise.remote.staging.rejections import OutputRejected

_WORK_MARK = "cerise-work"
_LINKS_MARK = "cerise-links"


@dataclass(frozen=True)
class Entry:
    """One entry of the work directory: its type letter (find's %y), size, link target."""

    kind: str
    size: int = 0
    target: str = ""
    """For a symbolic link: the absolute path it finally leads to ('' if unresolvable)."""


@dataclass(frozen=True)
class WorkListing:
    """The work directory as one remote command saw it (`parse_listing`)."""

    real: str
    """Its physical path ('' if it does not exist)."""
    entries: Mapping[str, Entry] = field(default_factory=dict)
    """By path relative to the work directory."""

    def without(self, paths: Iterable[str]) -> WorkListing:
        gone = set(paths)
        return replace(self, entries={k: v for k, v in self.entries.items() if k not in gone})

    def relative(self, path: str) -> str | None:
        """`path` (physical, absolute) relative to the work directory, if inside it."""
        if self.real and (path == self.real or path.startswith(self.real + "/")):
            return path[len(self.real) + 1 :]
        return None

    def resolve(self, relpath: str, *, shown: str) -> tuple[str, Entry] | None:
        """Follow symbolic links in any component; None if missing. `shown` is for messages."""
        parts = relpath.split("/")
        for index in range(len(parts)):
            here = "/".join(parts[: index + 1])
            entry = self.entries.get(here)
            if entry is None:
                return None
            if entry.kind == "l":
                if not entry.target:
                    return None
                inside = self.relative(entry.target)
                if not inside:
                    raise OutputRejected(
                        f"{shown}: {here} is a symbolic link to {entry.target[:200]!r}, which "
                        "is not inside the job's work directory"
                    )
                return self.resolve("/".join([inside, *parts[index + 1 :]]), shown=shown)
        return relpath, self.entries[relpath]


def listing_script(work: str) -> str:
    """List `work` (NUL-separated): its physical path, every entry, every link's target."""
    return f"""cd -- {shlex.quote(work)} 2>/dev/null || return 0
printf '{_WORK_MARK}\\0%s\\0' "$(pwd -P)"
find . -mindepth 1 -printf '%y\\0%P\\0%s\\0'
printf '{_LINKS_MARK}\\0'
find . -mindepth 1 -type l -print0 | while IFS= read -r -d '' link; do
    printf '%s\\0' "${{link#./}}"
    realpath -z -m -- "$link" 2>/dev/null || printf '\\0'
done
"""


def parse_listing(output: str) -> WorkListing:
    """The `WorkListing` from the output of `listing_script`."""
    fields = output.split("\0")
    if len(fields) < 2 or fields[0] != _WORK_MARK:
        return WorkListing(real="")
    real = fields[1]
    entries: dict[str, Entry] = {}
    position = 2
    while position + 2 < len(fields) and fields[position] != _LINKS_MARK:
        kind, name, size = fields[position : position + 3]
        entries[name] = Entry(kind, int(size) if size.isdigit() else 0)
        position += 3
    position += 1
    while position + 1 < len(fields):
        name, target = fields[position : position + 2]
        if name in entries:
            entries[name] = replace(entries[name], target=target)
        position += 2
    return WorkListing(real=real, entries=entries)
