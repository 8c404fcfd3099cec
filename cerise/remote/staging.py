"""Staging: a job's inputs from the file exchange (or the web) into its work directory, and
its outputs back into the exchange.

Staging in takes two steps. `plan` (pure) gives every File and Directory that
`cwl.check_inputs` found a name in ``work/`` and says where each reference now points;
`Plan.apply` rewrites the input object or workflow accordingly. `stage_in` carries the
transfers out:

* Sources are the exchange (a file, or a directory tree copied whole) and http(s) URLs,
  which are streamed to a scratch file first so that they can be checksummed like the
  rest. A location that `Exchange.source` refuses, a missing file, or a symbolic link
  leading out of the exchange is the user's doing: `InputRejected`, whose message
  becomes the job's PermanentFailure message. Failures of the compute resource or the
  network (RemoteUnavailable, OSError) propagate for a retry.
* Remote names are ``NN_<name>``: a counter, then the user's file name with every run of
  characters outside ``[A-Za-z0-9_.-]`` replaced by ``_`` and long names shortened. So no
  name can traverse, start with ``-`` or mean anything to a shell (every path reaching
  a shell is quoted all the same). The tool still sees the user's name: where the object
  has no ``basename``, the plan sets it (made portable, since cwltool refuses names with
  spaces, quotes and the like), and runners stage inputs under their basename (cwltool
  links ``reads.bam`` and its ``reads.bam.bai`` side by side). Entries inside a staged
  directory keep their own names: they are the directory's content.
* Locations on the remote side are percent-encoded ``file://`` URLs. cwltool also takes
  absolute paths, but reads a location without a scheme as a URI reference, so a ``#``,
  ``?`` or ``%`` in a path (names inside directories are kept verbatim) would be misread.
* Idempotent: ONE remote command creates the directories (0700) and reports size and
  sha256 of every planned file that is already there with the right size; only those
  are hashed locally (in threads), and an equal file is not sent again. Files are
  created 0600. Up to `PARALLEL_FILES` files travel at once, each one pipelined
  (`Remote.upload`).

Staging out (`stage_out`) reads the runner's output object, lists the work directory in
ONE remote command (types, sizes, and where each symbolic link really leads), and copies
every File and Directory of the object (arrays, records, secondaryFiles and listings
included) to ``<exchange>/output/<job key>/<path in work>``, with ``location`` rewritten
to the exchange URL and ``path`` and ``dirname`` dropped; every other key and every plain
value is kept. Anything outside the work directory, or a link leading out of it, is
refused with `OutputRejected` (a SystemError: the runner misbehaved). A File or Directory
that does not exist (a failed or partial run) becomes null, or is dropped from a
secondaryFiles or listing list. A file already published with the right size is not
copied again (large files are renamed into place when complete; small ones are written in
place, and one left incomplete has the wrong size), so a repeat after a crash gives the
same result. Small files travel in batches, both ways: one thread hop reads or writes a
batch locally, and on the way out one ``cat`` brings a batch, cut at the listed sizes.

Limits: a Directory must come from the exchange (http has no listing); symbolic links to
directories inside an input directory are refused; the output object is read whole, up
to `MAX_OUTPUT_OBJECT` bytes. The remote scripts need bash 4 and GNU coreutils and
findutils (``sha256sum``, ``stat -c``, ``realpath -z``, ``find -printf``), as on any
Linux cluster. Remote names are assumed to be valid UTF-8.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import posixpath
import re
import shlex
import shutil
import stat
import tempfile
from collections.abc import Awaitable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePosixPath
from typing import Any, TypeVar
from urllib.parse import quote, unquote, urlsplit

import httpx

from cerise.model import exchange as exchange_
from cerise.model.cwl import FileKind, FileReference, Origin, Pointer, relocate
from cerise.model.exchange import DownloadSource, Exchange, LocalSource, Source
from cerise.remote.connection import Remote
from cerise.remote.jobscript import JobFiles

PARALLEL_FILES = 16
"""Files in flight at once; each is pipelined on its own, so more mainly helps small files."""
SMALL_FILE = 64 << 10
SMALL_BATCH = 64
BATCHES_IN_FLIGHT = 8
"""Batches of small files (or large files) in transfer at once; bounds memory to 8 x 4 MiB."""
HASH_THREADS = 2
MAX_OUTPUT_OBJECT = 64 << 20
HTTP_TIMEOUT = httpx.Timeout(60.0, connect=20.0)
_NAME_LIMIT = 48
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")
_PORTABLE = re.compile(r"[\w.+,:@-]+")
_SAME_MARK = "cerise-same:"
_WORK_MARK = "cerise-work"
_LINKS_MARK = "cerise-links"

T = TypeVar("T")


class InputRejected(Exception):
    """An input cannot be staged because of what the user gave; the message says why."""


class OutputRejected(Exception):
    """The runner's output cannot be published (a SystemError); the message says why."""


# --- planning (pure) ---------------------------------------------------------------------


@dataclass(frozen=True)
class Transfer:
    """One file or directory tree to put in the work directory under `name`."""

    source: Source
    kind: FileKind
    name: str
    location: str
    """As the user gave it, for messages."""


@dataclass(frozen=True)
class Placement:
    """Where the File or Directory at `pointer` in the `origin` document now is."""

    origin: Origin
    pointer: Pointer
    location: str
    """A ``file://`` URL on the compute resource."""
    basename: str | None
    """The user's name for it, to set where the object has no ``basename``."""


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
                target.setdefault("basename", placement.basename)
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


# --- staging in --------------------------------------------------------------------------


@dataclass(frozen=True)
class StageInReport:
    """What `stage_in` did: files and bytes sent, and files found already in place."""

    files_sent: int
    bytes_sent: int
    files_kept: int


@dataclass(frozen=True)
class _Upload:
    local: Path
    remote: str
    size: int


@dataclass(frozen=True)
class _Local:
    """A transfer made concrete: local files with their remote paths, and remote dirs."""

    uploads: tuple[_Upload, ...]
    dirs: tuple[str, ...] = ()


async def stage_in(
    remote: Remote,
    files: JobFiles,
    transfers: Sequence[Transfer],
    exchange: Exchange,
    *,
    parallel: int = PARALLEL_FILES,
) -> StageInReport:
    """Put every transfer into the job's work directory; files already there are kept."""
    scratch = Path(await asyncio.to_thread(tempfile.mkdtemp, prefix="cerise-stage-"))
    try:
        real_root = Path(await asyncio.to_thread(os.path.realpath, exchange.root))
        async with contextlib.AsyncExitStack() as stack:
            client = None
            if any(isinstance(t.source, DownloadSource) for t in transfers):
                # Loading CA certificates takes tens of milliseconds: in a thread.
                tls = await asyncio.to_thread(httpx.create_ssl_context)
                client = await stack.enter_async_context(
                    httpx.AsyncClient(verify=tls, timeout=HTTP_TIMEOUT, follow_redirects=True)
                )
            local = await _all(
                (_localise(t, files, real_root, scratch / t.name, client) for t in transfers),
                parallel,
            )
        uploads = [upload for item in local for upload in item.uploads]
        dirs = [files.work, *(d for item in local for d in item.dirs)]
        result = await remote.run(
            prepare_script(dirs, [(u.remote, u.size) for u in uploads]), timeout=600
        )
        if result.exit_status != 0:
            raise OSError(f"cannot create the job's directories: {result.stderr.strip()[-500:]}")
        remote_sums = parse_checksums(result.stdout, [u.remote for u in uploads])
        checked = [u for u in uploads if u.remote in remote_sums]
        sums = await _all((asyncio.to_thread(_sha256, u.local) for u in checked), HASH_THREADS)
        kept = {u.remote for u, s in zip(checked, sums, strict=True) if remote_sums[u.remote] == s}
        sent = await _send(remote, [u for u in uploads if u.remote not in kept], parallel)
    finally:
        await asyncio.to_thread(shutil.rmtree, scratch, ignore_errors=True)
    return StageInReport(files_sent=len(sent), bytes_sent=sum(sent), files_kept=len(kept))


async def _localise(
    transfer: Transfer,
    files: JobFiles,
    real_root: Path,
    scratch: Path,
    client: httpx.AsyncClient | None,
) -> _Local:
    target = f"{files.work}/{transfer.name}"
    source = transfer.source
    if isinstance(source, DownloadSource):
        assert client is not None  # made when there are downloads
        await _download(client, transfer, source.url, scratch)
        size = (await asyncio.to_thread(scratch.stat)).st_size
        return _Local((_Upload(scratch, target, size),))
    if transfer.kind is FileKind.FILE:
        return await asyncio.to_thread(_local_file, transfer, source.path, real_root, target)
    return await asyncio.to_thread(_local_tree, transfer, source.path, real_root, target)


def _local_file(transfer: Transfer, path: Path, real_root: Path, target: str) -> _Local:
    status = confined(_show(transfer), path, real_root)
    if stat.S_ISDIR(status.st_mode):
        raise InputRejected(f"{_show(transfer)} is a directory; give it as a Directory")
    if not stat.S_ISREG(status.st_mode):
        raise InputRejected(f"{_show(transfer)} is not a regular file")
    return _Local((_Upload(path, target, status.st_size),))


def _local_tree(transfer: Transfer, top: Path, real_root: Path, target: str) -> _Local:
    """Every file and directory below `top`; only symbolic links need resolving."""
    if not stat.S_ISDIR(confined(_show(transfer), top, real_root).st_mode):
        raise InputRejected(f"{_show(transfer)} is not a directory; give it as a File")
    uploads: list[_Upload] = []
    dirs = [target]
    pending = [(top, target)]
    while pending:
        here, remote_here = pending.pop()
        with os.scandir(here) as scan:
            entries = sorted(scan, key=lambda entry: entry.name)
        for entry in entries:
            path, remote = Path(entry.path), f"{remote_here}/{entry.name}"
            shown = f"{path.relative_to(top)} in {_show(transfer)}"
            if entry.is_symlink():
                status = confined(shown, path, real_root)
                if stat.S_ISDIR(status.st_mode):
                    raise InputRejected(f"{shown} is a symbolic link to a directory (unsupported)")
            elif entry.is_dir(follow_symlinks=False):
                dirs.append(remote)
                pending.append((path, remote))
                continue
            else:
                status = entry.stat(follow_symlinks=False)
            if not stat.S_ISREG(status.st_mode):
                raise InputRejected(f"{shown} is not a regular file")
            uploads.append(_Upload(path, remote, status.st_size))
    return _Local(tuple(uploads), tuple(dirs))


def confined(shown: str, path: Path, real_root: Path) -> os.stat_result:
    """`path`'s status, if it exists and really lies in the exchange (symlinks followed)."""
    real = Path(os.path.realpath(path))
    if not exchange_.contains(real_root, real):
        raise InputRejected(f"{shown} leads outside the file exchange (through a symbolic link)")
    try:
        return real.stat()
    except FileNotFoundError:
        raise InputRejected(f"{shown} does not exist in the file exchange") from None


async def _download(
    client: httpx.AsyncClient, transfer: Transfer, url: str, target: Path
) -> None:
    try:
        async with client.stream("GET", url) as response:
            if 400 <= response.status_code < 500:
                raise InputRejected(
                    f"{_show(transfer)} could not be downloaded: HTTP {response.status_code} "
                    f"{response.reason_phrase}"
                )
            response.raise_for_status()
            handle = await asyncio.to_thread(target.open, "wb")
            try:
                async for chunk in response.aiter_bytes(1 << 20):
                    await asyncio.to_thread(handle.write, chunk)
            finally:
                await asyncio.to_thread(handle.close)
    except httpx.InvalidURL:
        raise InputRejected(f"{_show(transfer)} is not a valid URL") from None
    except httpx.HTTPError as error:
        raise OSError(f"downloading {url} failed: {str(error) or type(error).__name__}") from None


def prepare_script(dirs: Sequence[str], candidates: Sequence[tuple[str, int]]) -> str:
    """Make `dirs` (0700); print size-matching candidates' indices, then their sha256 lines.

    Output: nothing, or ``cerise-same: i j …`` followed by one ``sha256sum`` line for each
    index in that order. Every path is quoted; long lists go through xargs.
    """
    q = shlex.quote
    paths = " ".join(q(path) for path, _ in candidates)
    sizes = " ".join(str(size) for _, size in candidates)
    return f"""umask 077
printf '%s\\0' {' '.join(q(d) for d in dirs)} | xargs -0 mkdir -p -- || return 1
paths=({paths})
sizes=({sizes})
present=()
for i in "${{!paths[@]}}"; do
    [ -f "${{paths[i]}}" ] && [ -r "${{paths[i]}}" ] && present+=("$i")
done
[ "${{#present[@]}}" -eq 0 ] && return 0
mapfile -t found < <(for i in "${{present[@]}}"; do printf '%s\\0' "${{paths[i]}}"; done \\
    | xargs -0 stat -L -c %s --)
[ "${{#found[@]}}" -eq "${{#present[@]}}" ] || return 0
same=()
for j in "${{!present[@]}}"; do
    i=${{present[j]}}
    [ "${{found[j]}}" = "${{sizes[i]}}" ] && same+=("$i")
done
[ "${{#same[@]}}" -eq 0 ] && return 0
echo "{_SAME_MARK} ${{same[*]}}"
for i in "${{same[@]}}"; do printf '%s\\0' "${{paths[i]}}"; done | xargs -0 sha256sum --
"""


def parse_checksums(output: str, paths: Sequence[str]) -> dict[str, str]:
    """The sha256 of each path the prepare script found with its expected size.

    Anything unexpected (a file vanished mid-way, a truncated reply) yields nothing, which
    only means that those files are sent again.
    """
    lines = output.split("\n")
    for number, line in enumerate(lines):
        if line.startswith(_SAME_MARK):
            try:
                indices = [int(word) for word in line[len(_SAME_MARK) :].split()]
            except ValueError:
                return {}
            sums = [entry.lstrip("\\")[:64] for entry in lines[number + 1 :] if entry]
            valid = all(re.fullmatch(r"[0-9a-f]{64}", value) for value in sums)
            if len(sums) != len(indices) or not valid or not all(
                0 <= i < len(paths) for i in indices
            ):
                return {}
            return {paths[i]: value for i, value in zip(indices, sums, strict=True)}
    return {}


async def _send(remote: Remote, uploads: Sequence[_Upload], parallel: int) -> list[int]:
    """Upload, at most `parallel` files at once; small files are read a batch per thread hop.

    One hop per file (open, read, close) costs as much as the SFTP requests that send a
    small file, so batching them makes thousands of small files about a third faster.
    """
    slots = asyncio.Semaphore(parallel)

    async def one(upload: _Upload, content: Path | bytes) -> int:
        async with slots:
            return await remote.upload(content, upload.remote)

    async def batch(group: Sequence[_Upload]) -> list[int]:
        contents = await asyncio.to_thread(_read_files, [upload.local for upload in group])
        return await _all((one(u, c) for u, c in zip(group, contents, strict=True)), len(group))

    async def alone(upload: _Upload) -> list[int]:
        return [await one(upload, upload.local)]

    small = [upload for upload in uploads if upload.size <= SMALL_FILE]
    jobs = [
        *(batch(small[i : i + SMALL_BATCH]) for i in range(0, len(small), SMALL_BATCH)),
        *(alone(upload) for upload in uploads if upload.size > SMALL_FILE),
    ]
    return [size for sizes in await _all(jobs, BATCHES_IN_FLIGHT) for size in sizes]


def _read_files(paths: Sequence[Path]) -> list[bytes]:
    return [path.read_bytes() for path in paths]


def _sha256(path: Path) -> str:
    with path.open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def _show(transfer: Transfer) -> str:
    location = transfer.location
    return f"{transfer.kind} {location[:200]!r}" + ("…" if len(location) > 200 else "")


async def _all(jobs: Iterable[Awaitable[T]], limit: int) -> list[T]:
    """Await `jobs`, at most `limit` at once; on a failure the rest are cancelled."""
    semaphore = asyncio.Semaphore(limit)

    async def one(job: Awaitable[T]) -> T:
        async with semaphore:
            return await job

    tasks = [asyncio.ensure_future(one(job)) for job in jobs]
    try:
        return await asyncio.gather(*tasks)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


# --- staging out -------------------------------------------------------------------------


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


async def stage_out(
    remote: Remote,
    files: JobFiles,
    exchange: Exchange,
    job_key: str,
    *,
    parallel: int = PARALLEL_FILES,
) -> dict[str, Any]:
    """Publish the runner's outputs in the exchange; the output object with their URLs."""
    outputs = _parse_outputs(await _read_whole(remote, files.stdout))
    result = await remote.run(listing_script(files.work), timeout=600)
    if result.exit_status != 0:
        raise OSError(f"cannot list the job's work directory: {result.stderr.strip()[-500:]}")
    listing = parse_listing(result.stdout)
    planned = plan_outputs(outputs, listing, files, exchange, job_key)
    target = exchange.output_dir(job_key)
    there = await asyncio.to_thread(_prepare_outputs, target, planned)
    copies = [c for c in planned.copies if c.relpath not in there]
    vanished = await _fetch(remote, copies, target, parallel)
    if vanished:  # deleted since the listing: report them missing, like the rest
        real = [c.remote for c in planned.copies if c.relpath in vanished]
        listing = listing.without(filter(None, map(listing.relative, real)))
        planned = plan_outputs(outputs, listing, files, exchange, job_key)
    return planned.outputs


async def _read_whole(remote: Remote, path: str) -> bytes:
    data = b""
    while True:
        chunk = await remote.read(path, len(data), 1 << 20)
        data += chunk
        if len(chunk) < 1 << 20:
            return data
        if len(data) > MAX_OUTPUT_OBJECT:
            raise OutputRejected(
                f"the runner's output object is larger than {MAX_OUTPUT_OBJECT >> 20} MiB"
            )


def _parse_outputs(data: bytes) -> dict[str, Any]:
    if not data.strip():
        return {}
    try:
        outputs = json.loads(data)
    except ValueError as error:
        raise OutputRejected(f"the runner's output is not valid JSON: {error}") from None
    if not isinstance(outputs, dict):
        raise OutputRejected("the runner's output is not a JSON object")
    return outputs


def _prepare_outputs(target: Path, planned: OutputPlan) -> set[str]:
    """Make the output directories; the copies already published with their size."""
    target.mkdir(parents=True, exist_ok=True)
    for relpath in planned.dirs:
        target.joinpath(*relpath.split("/")).mkdir(parents=True, exist_ok=True)
    there = set()
    for copy_ in planned.copies:
        path = target.joinpath(*copy_.relpath.split("/"))
        path.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            if path.stat().st_size == copy_.size:
                there.add(copy_.relpath)
    return there


async def _fetch(
    remote: Remote, copies: Sequence[Copy], target_dir: Path, parallel: int
) -> list[str]:
    """Copy files into the exchange; the relpaths of those that have vanished.

    Large files are downloaded, `parallel` at once. Small ones come a batch at a time
    from ONE ``cat`` of them all, cut at the sizes the listing gave; SFTP would take
    three requests per file. A batch whose output does not add up (a file changed or
    vanished since the listing) is downloaded file by file instead.
    """
    slots = asyncio.Semaphore(parallel)

    def local(copy_: Copy) -> Path:
        return target_dir.joinpath(*copy_.relpath.split("/"))

    async def download(copy_: Copy) -> list[str]:
        async with slots:
            try:
                await remote.download(copy_.remote, local(copy_))
            except FileNotFoundError:
                return [copy_.relpath]
        return []

    async def batch(group: Sequence[Copy]) -> list[str]:
        paths = " ".join(shlex.quote(copy_.remote) for copy_ in group)
        result = await remote.run_bytes(f"cat -- {paths}")
        if result.exit_status == 0 and len(result.stdout) == sum(c.size for c in group):
            pieces, offset = [], 0
            for copy_ in group:
                pieces.append((local(copy_), result.stdout[offset : offset + copy_.size]))
                offset += copy_.size
            await asyncio.to_thread(_write_files, pieces)
            return []
        return [path for paths in await _all(map(download, group), parallel) for path in paths]

    small = [copy_ for copy_ in copies if copy_.size <= SMALL_FILE]
    jobs = [
        *(batch(small[i : i + SMALL_BATCH]) for i in range(0, len(small), SMALL_BATCH)),
        *(download(copy_) for copy_ in copies if copy_.size > SMALL_FILE),
    ]
    return [path for paths in await _all(jobs, BATCHES_IN_FLIGHT) for path in paths]


def _write_files(files: Sequence[tuple[Path, bytes]]) -> None:
    """Write small files in place: a rerun finds one left incomplete by its size."""
    for path, data in files:
        path.write_bytes(data)
