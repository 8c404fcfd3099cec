"""The fetch back: published outputs copied from the compute resource into the exchange.

A file already published with the right size is not copied again (large files are
renamed into place when complete; small ones are written in place, and one left
incomplete has the wrong size), so a repeat after a crash gives the same result.
"""

from __future__ import annotations

import asyncio
import contextlib
import shlex
from collections.abc import Sequence
from pathlib import Path

from cerise.remote.protocol import Progress, Remote
from cerise.remote.staging.concurrency import (
    BATCHES_IN_FLIGHT,
    SMALL_BATCH,
    SMALL_FILE,
    gather_limited,
)
from cerise.remote.staging.outputs import Copy, OutputPlan


def prepare_outputs(target: Path, planned: OutputPlan) -> set[str]:
    """Make the output directories; the copies already published with their size
    (blocking: run it in a thread)."""
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


async def fetch(remote: Remote, copies: Sequence[Copy], target_dir: Path, parallel: int,
                progress: Progress | None = None) -> list[str]:
    """Copy files into the exchange; the relpaths of those that have vanished.

    Large files are downloaded, `parallel` at once. Small ones come a batch at a time
    from ONE ``cat`` of them all, cut at the sizes the listing gave; SFTP would take
    three requests per file. A batch whose output does not add up (a file changed or
    vanished since the listing) is downloaded file by file instead. `progress` hears of
    every chunk and batch received.
    """
    slots = asyncio.Semaphore(parallel)

    def local(copy_: Copy) -> Path:
        return target_dir.joinpath(*copy_.relpath.split("/"))

    async def download(copy_: Copy) -> list[str]:
        async with slots:
            try:
                await remote.download(copy_.remote, local(copy_), progress=progress)
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
            if progress is not None:
                progress(len(result.stdout))
            return []
        return [path for paths in await gather_limited(map(download, group), parallel)
                for path in paths]

    small = [copy_ for copy_ in copies if copy_.size <= SMALL_FILE]
    jobs = [
        *(batch(small[i : i + SMALL_BATCH]) for i in range(0, len(small), SMALL_BATCH)),
        *(download(copy_) for copy_ in copies if copy_.size > SMALL_FILE),
    ]
    return [path for paths in await gather_limited(jobs, BATCHES_IN_FLIGHT) for path in paths]


def _write_files(files: Sequence[tuple[Path, bytes]]) -> None:
    """Write small files in place: a rerun finds one left incomplete by its size."""
    for path, data in files:
        path.write_bytes(data)
