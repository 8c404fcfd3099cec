"""The upload pipeline: files to the compute resource, many at once, small ones batched."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path

from cerise.remote.protocol import Progress, Remote
from cerise.remote.staging.concurrency import (
    BATCHES_IN_FLIGHT,
    SMALL_BATCH,
    SMALL_FILE,
    gather_limited,
)
from cerise.remote.staging.local import Upload


async def send(remote: Remote, uploads: Sequence[Upload], parallel: int,
               progress: Progress | None = None) -> list[int]:
    """Upload, at most `parallel` files at once; the bytes sent of each. Small files are
    read a batch per thread hop; `progress` hears of every chunk sent.

    One hop per file (open, read, close) costs as much as the SFTP requests that send a
    small file, so batching them makes thousands of small files about a third faster.
    """
    slots = asyncio.Semaphore(parallel)

    async def one(upload: Upload, content: Path | bytes) -> int:
        async with slots:
            return await remote.upload(content, upload.remote, progress=progress)

    async def batch(group: Sequence[Upload]) -> list[int]:
        contents = await asyncio.to_thread(_read_files, [upload.local for upload in group])
        return await gather_limited(
            (one(u, c) for u, c in zip(group, contents, strict=True)), len(group))

    async def alone(upload: Upload) -> list[int]:
        return [await one(upload, upload.local)]

    small = [upload for upload in uploads if upload.size <= SMALL_FILE]
    jobs = [
        *(batch(small[i : i + SMALL_BATCH]) for i in range(0, len(small), SMALL_BATCH)),
        *(alone(upload) for upload in uploads if upload.size > SMALL_FILE),
    ]
    return [size for sizes in await gather_limited(jobs, BATCHES_IN_FLIGHT) for size in sizes]


def _read_files(paths: Sequence[Path]) -> list[bytes]:
    return [path.read_bytes() for path in paths]
