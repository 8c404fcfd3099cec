"""Resuming interrupted transfers: partial files with stable names, and how much of one is right.

A large file travels into a partial file beside its target, renamed into place once
complete. Its name comes from the target and the source's version (size and modification
time), so a transfer cut off (connection dropped, server restarted, operator killed)
leaves it for the next attempt to find, and a different source never lands in it. Before
carrying on, both sides compute the sha256 of each `BLOCK` of what is there, and the
transfer resumes after the leading blocks that match. Blocks rather than one sum of the
whole prefix: SFTP writes blocks out of order, so a file cut off may have a hole before
its last bytes, and the blocks up to the hole still count.
"""

from __future__ import annotations

import hashlib
import posixpath
import re
import shlex
from collections.abc import Sequence
from pathlib import Path

BLOCK = 8 << 20
"""Bytes per checked block: a resumed transfer repeats at most this much of what arrived."""
_NAME_KEPT = 64
"""Characters of the target's name kept in the partial file's (its hash tells them apart)."""


def version(size: int, mtime: float | int | None) -> str:
    """What tells one content of a source from another, cheaply."""
    return f"{size}:{mtime}"


def partial_name(target: str, source_version: str) -> str:
    """The hidden partial file beside `target` for a source at `source_version`."""
    directory, name = posixpath.split(target)
    key = hashlib.sha256(f"{target}\0{source_version}".encode()).hexdigest()[:20]
    return posixpath.join(directory, f".{name[:_NAME_KEPT]}.{key}.partial")


def sums_script(path: str, blocks: int) -> str:
    """A bash script that prints the sha256 of each of the first `blocks` blocks of `path`."""
    return (
        "set -o pipefail\n"
        f"p={shlex.quote(path)}\n"
        f"for ((i = 0; i < {blocks}; i++)); do\n"
        f'  dd if="$p" bs={BLOCK} skip=$i count=1 status=none | sha256sum || exit 1\n'
        "done\n"
    )


def parse_sums(output: str, blocks: int) -> list[str]:
    """The block sums that `sums_script` printed; none if its output is not all there."""
    sums = [line[:64] for line in output.splitlines()]
    if len(sums) != blocks or not all(re.fullmatch(r"[0-9a-f]{64}", s) for s in sums):
        return []
    return sums


def local_sums(path: Path, blocks: int) -> list[str]:
    """The sha256 of each of the first `blocks` blocks of a local file (blocking: a thread)."""
    sums = []
    with path.open("rb") as handle:
        for _ in range(blocks):
            sums.append(hashlib.sha256(handle.read(BLOCK)).hexdigest())
    return sums


def matching_prefix(ours: Sequence[str], theirs: Sequence[str]) -> int:
    """The bytes at the start that are the same on both sides: the leading equal blocks."""
    same = 0
    for mine, other in zip(ours, theirs, strict=False):
        if mine != other:
            break
        same += 1
    return same * BLOCK
