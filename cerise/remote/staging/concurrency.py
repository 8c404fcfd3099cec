"""How much staging moves at once, both ways, and the helper that bounds it."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Iterable
from typing import TypeVar

PARALLEL_FILES = 16
"""Files in flight at once; each is pipelined on its own, so more mainly helps small files."""
SMALL_FILE = 64 << 10
"""Files up to this size travel in batches (one thread hop, or one ``cat``, per batch)."""
SMALL_BATCH = 64
BATCHES_IN_FLIGHT = 8
"""Batches of small files (or large files) in transfer at once; bounds memory to 8 x 4 MiB."""
HASH_THREADS = 2

T = TypeVar("T")


async def gather_limited(jobs: Iterable[Awaitable[T]], limit: int) -> list[T]:
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
