"""Planning (pure): a name in ``work/`` for every File and Directory to stage, and where
each reference of the input object and the workflow then points.

Remote names are ``NN_<name>``: a counter, then the user's file name with every run of
characters outside ``[A-Za-z0-9_.-]`` replaced by ``_`` and long names shortened. So no
name can traverse, start with ``-`` or mean anything to a shell (every path reaching a
shell is quoted all the same). The tool still sees the user's name: where the object has
no ``basename``, or one with characters runners refuse, the plan sets it (made portable,
since cwltool refuses names with spaces, quotes and the like), and runners stage inputs
under their basename (cwltool links ``reads.bam`` and its ``reads.bam.bai`` side by
side). Entries inside a staged
directory keep their own names: they are the directory's content.

Locations on the remote side are percent-encoded ``file://`` URLs. cwltool also takes
absolute paths, but reads a location without a scheme as a URI reference, so a ``#``,
``?`` or ``%`` in a path (names inside directories are kept verbatim) would be misread.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any
from urllib.parse import quote, unquote, urlsplit

from cerise.model import exchange as exchange_
from cerise.model.cwl import FileKind, FileReference, Origin, Pointer, relocate
from cerise.model.exchange import DownloadSource, Exchange, LocalSource, Source
from cerise.remote.jobscript import JobFiles
from cerise.remote.staging.rejections import InputRejected

_NAME_LIMIT = 48
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")
_PORTABLE = re.compile(r"[\w.+,:@-]+")


@dataclass(frozen=True)
class Transfer:
    """One file or directory tree to put in the work directory under `name`."""

    source: Source
    kind: FileKind
    name: str
    location: str
    """As the user gave it, for messages."""

    @property
    def shown(self) -> str:
        """The transfer as messages name it: its kind and (the start of) its location."""
        location = self.location
        return f"{self.kind} {location[:200]!r}" + ("…" if len(location) > 200 else "")


@dataclass(frozen=True)
class Placement:
    """Where the File or Directory at `pointer` in the `origin` document now is."""

    origin: Origin
    pointer: Pointer
    location: str
    """A ``file://`` URL on the compute resource."""
    basename: str | None
    """The ``basename`` the plan sets: the user's name for it, made portable, where the
    object has none or has one that runners refuse (cerise-client sends the name of the
    uploaded file, spaces and all)."""


@dataclass(frozen=True)
class Plan:
    """What to transfer, and how the documents change."""

    transfers: tuple[Transfer, ...]
    placements: tuple[Placement, ...]

    def locations(self, origin: Origin) -> dict[Pointer, str]:
        """The new location of every reference into the `origin` document (for `relocate`)."""
        return {p.pointer: p.location for p in self.placements if p.origin is origin}

    def apply(self, document: Mapping[str, Any], origin: Origin) -> dict[str, Any]:
        """A copy of the `origin` document with its Files and Directories placed remotely."""
        moved = relocate(document, self.locations(origin))
        for placement in self.placements:
            if placement.origin is origin and placement.basename is not None:
                target: Any = moved
                for part in placement.pointer:
                    target = target[part]
                target["basename"] = placement.basename
        return moved


def plan(
    references: Iterable[FileReference],
    exchange: Exchange,
    files: JobFiles,
    *,
    workflow_url: str | None = None,
) -> Plan:
    """Name and place every reference; relative workflow locations resolve against its URL.

    References inside a staged directory (its ``listing``) whose source lies in that
    directory point into the remote copy; the same source referenced twice is sent once.
    """
    transfers: list[Transfer] = []
    placements: list[Placement] = []
    names: dict[tuple[FileKind, Source], str] = {}
    trees: dict[tuple[Origin, Pointer], tuple[LocalSource, str]] = {}
    for reference in references:
        base = workflow_url if reference.origin is Origin.WORKFLOW else None
        try:
            source = exchange.source(reference.location, base=base)
        except exchange_.RefusedLocation as error:
            raise InputRejected(f"{_where(reference)}: {error}") from None
        if reference.kind is FileKind.DIRECTORY and isinstance(source, DownloadSource):
            raise InputRejected(
                f"{_where(reference)}: a Directory must be in the file exchange "
                f"({exchange.url}/input/…); http(s) URLs can only give Files"
            )
        remote = _inside_tree(reference, source, trees)
        basename = None
        if remote is None:
            remote = names.get((reference.kind, source))
            if remote is None:
                name = reference.basename or _source_name(source)
                remote = _remote_name(len(transfers) + 1, name)
                transfers.append(Transfer(source, reference.kind, remote, reference.location))
                names[(reference.kind, source)] = remote
            if reference.basename is None:
                basename = _valid_basename(_source_name(source))
            elif not _PORTABLE.fullmatch(reference.basename):
                basename = _valid_basename(reference.basename) or remote
        if reference.kind is FileKind.DIRECTORY and isinstance(source, LocalSource):
            trees[(reference.origin, reference.pointer)] = (source, remote)
        location = "file://" + quote(f"{files.work}/{remote}")
        placements.append(Placement(reference.origin, reference.pointer, location, basename))
    return Plan(tuple(transfers), tuple(placements))


def _inside_tree(
    reference: FileReference,
    source: Source,
    trees: Mapping[tuple[Origin, Pointer], tuple[LocalSource, str]],
) -> str | None:
    """The remote path (relative to work) of an entry of a staged directory, if it is one."""
    parent = trees.get((reference.origin, reference.pointer[:-2]))
    if parent is None or reference.pointer[-2:-1] != ("listing",):
        return None
    tree, remote = parent
    if not isinstance(source, LocalSource) or not exchange_.contains(tree.path, source.path):
        return None
    if source.path == tree.path:
        return None
    return "/".join([remote, *source.path.relative_to(tree.path).parts])


def _remote_name(number: int, name: str) -> str:
    clean = _UNSAFE.sub("_", name) or "input"
    if len(clean) > _NAME_LIMIT:
        clean = f"{clean[:20]}___{clean[-(_NAME_LIMIT - 23):]}"
    return f"{number:02d}_{clean}"


def _source_name(source: Source) -> str:
    if isinstance(source, LocalSource):
        return source.path.name
    return unquote(PurePosixPath(urlsplit(source.url).path).name)


def _valid_basename(name: str) -> str | None:
    """The user's file name as the tool's `basename`, made safe where it is not.

    Runners refuse names with characters a shell could misread (cwltool: "Invalid
    filename … contains illegal characters"), so such runs become `_`, as in remote names.
    """
    if name in ("", ".", ".."):
        return None
    if _PORTABLE.fullmatch(name):
        return name
    return _UNSAFE.sub("_", name).strip("_") or None


def _where(reference: FileReference) -> str:
    document = "input object" if reference.origin is Origin.INPUT_OBJECT else "workflow"
    pointer = "/".join(str(part) for part in reference.pointer)
    return f"{reference.kind} at /{pointer} in the {document}"

