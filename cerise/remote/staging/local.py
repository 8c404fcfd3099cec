"""The local side of staging in: the files of a transfer from the exchange, found by
walking it, each confined to the exchange (`cerise.remote.staging.confinement`)."""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path

from cerise.model.exchange import RefusedLocation
from cerise.remote.staging.confinement import confined
from cerise.remote.staging.planning import Transfer
from cerise.remote.staging.rejections import InputRejected


@dataclass(frozen=True)
class Upload:
    """A local file to put at the `remote` path; `sha256` if already known."""

    local: Path
    remote: str
    size: int
    sha256: str | None = None


@dataclass(frozen=True)
class Localised:
    """A transfer made concrete: local files with their remote paths, and remote dirs."""

    uploads: tuple[Upload, ...]
    dirs: tuple[str, ...] = ()


def local_file(transfer: Transfer, path: Path, real_root: Path, target: str) -> Localised:
    """The one regular file of a File transfer (blocking: run it in a thread)."""
    status = _confined(transfer.shown, path, real_root)
    if stat.S_ISDIR(status.st_mode):
        raise InputRejected(f"{transfer.shown} is a directory; give it as a Directory")
    if not stat.S_ISREG(status.st_mode):
        raise InputRejected(f"{transfer.shown} is not a regular file")
    return Localised((Upload(path, target, status.st_size),))


def local_tree(transfer: Transfer, top: Path, real_root: Path, target: str) -> Localised:
    """Every file and directory below `top`; only symbolic links need resolving
    (blocking: run it in a thread)."""
    if not stat.S_ISDIR(_confined(transfer.shown, top, real_root).st_mode):
        raise InputRejected(f"{transfer.shown} is not a directory; give it as a File")
    uploads: list[Upload] = []
    dirs = [target]
    pending = [(top, target)]
    while pending:
        here, remote_here = pending.pop()
        with os.scandir(here) as scan:
            entries = sorted(scan, key=lambda entry: entry.name)
        for entry in entries:
            path, remote = Path(entry.path), f"{remote_here}/{entry.name}"
            shown = f"{path.relative_to(top)} in {transfer.shown}"
            if entry.is_symlink():
                status = _confined(shown, path, real_root)
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
            uploads.append(Upload(path, remote, status.st_size))
    return Localised(tuple(uploads), tuple(dirs))


def _confined(shown: str, path: Path, real_root: Path) -> os.stat_result:
    try:
        return confined(shown, path, real_root)
    except RefusedLocation as error:
        raise InputRejected(str(error)) from None
