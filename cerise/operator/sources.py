"""A project's files from where its Specialisation says: a ConfigMap, a directory on the
operator's file system inside the one its settings allow (`settings.project_paths`), or an
http(s) ``.tar.gz`` archive.

Every entry passes `project_files.check_entries` before anything is written: an archive
is listed (at most `MAX_ENTRIES` entries and `MAX_UNPACKED_BYTES`, going by its headers;
the listing stops at the first header past either) and only then unpacked, into a scratch
directory, with tarfile's ``data`` filter as a second guard. A download goes behind the
web fence (`cerise.remote.web`) and is limited to `MAX_ARCHIVE_BYTES` and
`DOWNLOAD_TIMEOUT` seconds. A source that is missing or does not answer is
`SourceUnavailable` (tried again later); one that is refused (by the fence too) is
`InvalidProject`.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import stat
import tarfile
from collections.abc import Iterator, Sequence
from pathlib import Path

from lightkube import AsyncClient

from cerise.kube import objects
from cerise.model import exchange, project_files, webfence
from cerise.model.project_files import Entry, EntryKind, InvalidProject
from cerise.model.specialisation import Source
from cerise.model.webfence import Fence
from cerise.operator import settings as operator_settings
from cerise.remote import web
from cerise.remote.install import ProjectFile

MAX_ARCHIVE_BYTES = 256 << 20
DOWNLOAD_TIMEOUT = 300.0
"""Seconds a whole download may take."""


class SourceUnavailable(Exception):
    """The source cannot be read now (missing, or the server failed); try again later."""


async def project(kube: AsyncClient, namespace: str, source: Source,
                  scratch: Path, fence: Fence | None = None) -> list[ProjectFile]:
    """The files to install; `scratch` is an empty directory that outlives the install.
    An archive is fetched behind `fence` (by default the operator's, from its environment)."""
    if source.kind == "configMap":
        try:
            data = await objects.configmap_files(kube, namespace, source.value)
        except objects.ConfigMapUnavailable as error:
            raise SourceUnavailable(str(error)) from None
        return from_configmap(data)
    if source.kind == "path":
        root = await asyncio.to_thread(confined, Path(source.value),
                                       operator_settings.project_paths(os.environ))
        return await asyncio.to_thread(from_directory, root)
    if source.kind == "url":
        archive = scratch / "project.tar.gz"
        await download(source.value, archive, fence or webfence.operator_fence(os.environ))
        return await asyncio.to_thread(unpack, archive, scratch / "project")
    raise InvalidProject(f"unknown source {source}")


def from_configmap(data: dict[str, bytes]) -> list[ProjectFile]:
    """A ConfigMap's files; those starting with ``#!`` are made executable."""
    paths = {project_files.configmap_path(key): key for key in data}
    checked = project_files.check_entries(
        Entry(name=path, kind=EntryKind.FILE, size=len(data[key])) for path, key in paths.items())
    return [ProjectFile(path=c.path, data=data[paths[c.source]],
                        mode=0o755 if data[paths[c.source]].startswith(b"#!") else 0o644)
            for c in checked]


def confined(root: Path, allowed: Path) -> Path:
    """`root` if it lies in `allowed` (links followed), else InvalidProject."""
    if not root.is_absolute() or not exchange.contains(allowed, Path(os.path.realpath(root))):
        raise InvalidProject(
            f"{root} is not inside {allowed}, the directory the operator takes projects from "
            "(its setting CERISE_PROJECT_PATHS)")
    return root


def from_directory(root: Path) -> list[ProjectFile]:
    """A directory's files with their permissions (links inside it kept as links)."""
    if not root.is_dir():
        raise SourceUnavailable(f"{root} is not a directory on the operator's file system")
    return _files(root, project_files.check_entries(_walk(root)))


def _walk(root: Path) -> Iterator[Entry]:
    for directory, directories, names in os.walk(root):
        for name in [*directories, *names]:
            path = Path(directory, name)
            yield _entry(path.relative_to(root).as_posix(), path.lstat(), path)


def _entry(name: str, info: os.stat_result, path: Path) -> Entry:
    if stat.S_ISLNK(info.st_mode):
        return Entry(name, EntryKind.SYMLINK, link=os.readlink(path))
    if stat.S_ISDIR(info.st_mode):
        return Entry(name, EntryKind.DIRECTORY)
    if stat.S_ISREG(info.st_mode):
        return Entry(name, EntryKind.FILE, size=info.st_size)
    return Entry(name, EntryKind.OTHER)


def _files(root: Path, checked: list[project_files.Checked]) -> list[ProjectFile]:
    found = []
    for entry in checked:
        path = root / entry.source
        if entry.kind is EntryKind.SYMLINK:
            found.append(ProjectFile(path=entry.path, link=os.readlink(path)))
        elif entry.kind is not EntryKind.DIRECTORY:
            found.append(ProjectFile(path=entry.path, local=path,
                                     mode=path.stat().st_mode & 0o777))
    return found


async def download(url: str, target: Path, fence: Fence) -> None:
    """Fetch `url` into `target`, behind `fence` and within the size and time limits."""
    try:
        await web.download(url, target, fence=fence, limit=MAX_ARCHIVE_BYTES,
                           timeout=DOWNLOAD_TIMEOUT)
    except web.Refused as error:
        raise InvalidProject(str(error)) from None
    except web.FetchFailed as error:
        raise SourceUnavailable(str(error)) from None


def digest(files: Sequence[ProjectFile]) -> str:
    """A digest of a project's files: their paths, modes, link targets and contents."""
    hashed = hashlib.sha256()
    for entry in sorted(files, key=lambda f: f.path):
        hashed.update(f"{entry.path}\0{entry.mode:o}\0{entry.link}\0".encode())
        if entry.data is not None:
            hashed.update(entry.data)
        elif entry.local is not None:
            with entry.local.open("rb") as handle:
                while chunk := handle.read(1 << 20):
                    hashed.update(chunk)
        hashed.update(b"\0")
    return hashed.hexdigest()


def unpack(archive: Path, target: Path) -> list[ProjectFile]:
    """Check and unpack a (compressed) tar archive into `target`."""
    try:
        with tarfile.open(archive, "r:*") as tar:
            members: dict[str, tarfile.TarInfo] = {}

            def entries() -> Iterator[Entry]:
                for member in tar:  # lazily: a refused entry stops the reading
                    members[member.name] = member
                    yield _member(member)

            checked = project_files.check_entries(entries())
            tar.extractall(target, members=[members[c.source] for c in checked], filter="data")
    except (tarfile.TarError, EOFError, OSError) as error:
        raise InvalidProject(f"the archive cannot be unpacked: {error}") from None
    return _files(target, checked)


def _member(member: tarfile.TarInfo) -> Entry:
    if member.isreg():
        return Entry(member.name, EntryKind.FILE, size=member.size)
    if member.isdir():
        return Entry(member.name, EntryKind.DIRECTORY)
    if member.issym():
        return Entry(member.name, EntryKind.SYMLINK, link=member.linkname)
    if member.islnk():
        return Entry(member.name, EntryKind.HARDLINK, link=member.linkname)
    return Entry(member.name, EntryKind.OTHER)
