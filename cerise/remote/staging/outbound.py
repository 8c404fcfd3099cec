"""Staging out: the runner's output object read, its files published in the exchange.

`stage_out` reads the output object (whole, up to `MAX_OUTPUT_OBJECT` bytes), lists the
work directory in ONE remote command (`listing`), decides what to publish (`outputs`)
and copies it (`fetch_back`). Small files travel in batches: one thread hop writes a
batch locally, and one ``cat`` brings it, cut at the listed sizes.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from cerise.model.exchange import Exchange
from cerise.remote.jobscript import JobFiles
from cerise.remote.protocol import Remote
from cerise.remote.staging import fetch_back
from cerise.remote.staging.concurrency import PARALLEL_FILES
from cerise.remote.staging.listing import listing_script, parse_listing
from cerise.remote.staging.outputs import plan_outputs
from cerise.remote.staging.progress import StagingProgress, Tally
from cerise.remote.staging.rejections import OutputRejected

MAX_OUTPUT_OBJECT = 64 << 20


async def stage_out(
    remote: Remote,
    files: JobFiles,
    exchange: Exchange,
    job_key: str,
    *,
    parallel: int = PARALLEL_FILES,
    progress: StagingProgress | None = None,
) -> dict[str, Any]:
    """Publish the runner's outputs in the exchange; the output object with their URLs.

    `progress` hears the bytes published so far (those already there count as done) of
    all the outputs' bytes.
    """
    outputs = _parse_outputs(await _read_whole(remote, files.stdout))
    result = await remote.run(listing_script(files.work), timeout=600)
    if result.exit_status != 0:
        raise OSError(f"cannot list the job's work directory: {result.stderr.strip()[-500:]}")
    listing = parse_listing(result.stdout)
    planned = plan_outputs(outputs, listing, files, exchange, job_key)
    target = exchange.output_dir(job_key)
    there = await asyncio.to_thread(fetch_back.prepare_outputs, target, planned)
    copies = [c for c in planned.copies if c.relpath not in there]
    tally = Tally(progress, total=sum(c.size for c in planned.copies),
                  done=sum(c.size for c in planned.copies if c.relpath in there))
    vanished = await fetch_back.fetch(remote, copies, target, parallel, tally.add)
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
