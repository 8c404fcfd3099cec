"""Output planning (pure): which files of the work directory to publish, and the runner's
output object rewritten to their exchange URLs.

Every File and Directory of the object (arrays, records, secondaryFiles and listings
included) is published at ``<exchange>/output/<job key>/<path in work>``, with
``location`` rewritten to the exchange URL and ``path`` and ``dirname`` dropped; every
other key and every plain value is kept. Anything outside the work directory, or a link
leading out of it, is refused with `OutputRejected`. A File or Directory that does not
exist (a failed or partial run) becomes null, or is dropped from a secondaryFiles or
listing list.
"""

from __future__ import annotations

import posixpath
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

from cerise.model.cwl import FileKind, Pointer
from cerise.model.exchange import Exchange
from cerise.remote.jobscript import JobFiles
from cerise.remote.staging.listing import WorkListing
from cerise.remote.staging.rejections import OutputRejected


@dataclass(frozen=True)
class Copy:
    """A file to publish: from the physical `remote` path to `relpath` in the outputs."""

    remote: str
    relpath: str
    size: int


@dataclass(frozen=True)
class OutputPlan:
    """The output object as published, and the copying that publishing takes."""

    outputs: dict[str, Any]
    copies: tuple[Copy, ...]
    dirs: tuple[str, ...]


def plan_outputs(
    outputs: Mapping[str, Any],
    listing: WorkListing,
    files: JobFiles,
    exchange: Exchange,
    job_key: str,
) -> OutputPlan:
    """Decide what to copy and rewrite the output object (pure); see the module docstring."""
    destager = _Destager(listing, files.work, exchange, job_key)
    published = {key: destager.value(value, (key,)) for key, value in outputs.items()}
    return OutputPlan(published, tuple(destager.copies.values()), tuple(sorted(destager.dirs)))


class _Destager:
    def __init__(self, listing: WorkListing, work: str, exchange: Exchange, job_key: str) -> None:
        self.listing = listing
        self.work = posixpath.normpath(work)
        self.exchange = exchange
        self.job_key = job_key
        self.copies: dict[str, Copy] = {}
        self.dirs: set[str] = set()
        self.children: dict[str, list[str]] = {}
        for path in sorted(listing.entries):
            parent, _, name = path.rpartition("/")
            self.children.setdefault(parent, []).append(name)

    def value(self, value: Any, at: Pointer) -> Any:
        if isinstance(value, list):
            return [self.value(item, (*at, index)) for index, item in enumerate(value)]
        if isinstance(value, dict):
            if value.get("class") in ("File", "Directory"):
                return self.file_object(value, at)
            return {key: self.value(item, (*at, key)) for key, item in value.items()}
        return value

    def file_object(self, value: dict[str, Any], at: Pointer) -> dict[str, Any] | None:
        kind = FileKind(value["class"])
        shown = f"output {kind} at /{'/'.join(str(part) for part in at)}"
        relpath = self.relpath(value, shown)
        found = self.listing.resolve(relpath, shown=shown)
        if found is None:
            return None
        real, entry = found
        if entry.kind != ("f" if kind is FileKind.FILE else "d"):
            raise OutputRejected(f"{shown}: {relpath} is not a {kind} on the compute resource")
        if kind is FileKind.FILE:
            self.copies[relpath] = Copy(f"{self.listing.real}/{real}", relpath, entry.size)
        else:
            self.tree(relpath, real, shown, frozenset())
        published = {k: v for k, v in value.items() if k not in ("location", "path", "dirname")}
        published["location"] = self.exchange.output_url(self.job_key, relpath)
        for key in ("secondaryFiles", "listing"):
            if isinstance(value.get(key), list):
                nested = (self.value(item, (*at, key, i)) for i, item in enumerate(value[key]))
                published[key] = [item for item in nested if item is not None]
        return published

    def relpath(self, value: Mapping[str, Any], shown: str) -> str:
        """The object's path relative to the work directory; refused if it is not inside."""
        location = value.get("location") or value.get("path") or ""
        path = location
        if isinstance(location, str) and location.startswith("file:"):
            parts = urlsplit(location)
            path = unquote(parts.path) if parts.netloc in ("", "localhost") else ""
        if not isinstance(path, str) or not path.startswith("/"):
            raise OutputRejected(
                f"{shown}: {str(location)[:200]!r} is not a file on the compute resource"
            )
        path = posixpath.normpath(path)
        for work in (self.work, self.listing.real):
            if work and path.startswith(work + "/"):
                return path[len(work) + 1 :]
        raise OutputRejected(f"{shown}: {path[:200]!r} is outside the job's work directory")

    def tree(self, shown_dir: str, real_dir: str, shown: str, seen: frozenset[str]) -> None:
        """Copy everything under a directory, following links that stay in the work dir."""
        if real_dir in seen:
            raise OutputRejected(f"{shown}: {shown_dir} is a symbolic link loop")
        self.dirs.add(shown_dir)
        for name in self.children.get(real_dir, []):
            found = self.listing.resolve(f"{real_dir}/{name}", shown=shown)
            if found is None:
                continue
            real, entry = found
            if entry.kind == "f":
                here = f"{shown_dir}/{name}"
                self.copies[here] = Copy(f"{self.listing.real}/{real}", here, entry.size)
            elif entry.kind == "d":
                self.tree(f"{shown_dir}/{name}", real, shown, seen | {real_dir})
