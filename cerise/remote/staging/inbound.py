"""Staging in: every transfer of a plan put into the job's work directory.

Sources are the exchange (a file, or a directory tree copied whole; `local`) and http(s)
URLs, which are fetched behind the fence (`cerise.remote.web`) into a scratch file first,
so that they can be checksummed like the rest. A location that `Exchange.source` refuses,
a missing file, a symbolic link leading out of the exchange, or a URL the fence or the
size cap refuses is the user's doing: `InputRejected`, whose message becomes the job's
PermanentFailure message. Failures of the compute resource or the network
(RemoteUnavailable, OSError) propagate for a retry.

Idempotent: ONE remote command (`prepare`) creates the directories (0700), links what
the input cache holds (`cache`), and reports size and sha256 of every other planned file
already there with the right size; only those are hashed locally (in threads), and an
equal file is not sent again. Files are created 0600 (cached ones are read-only). Up to
`PARALLEL_FILES` files travel at once, each one pipelined (`Remote.upload`).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from cerise.model import input_cache, webfence
from cerise.model.cwl import FileKind
from cerise.model.exchange import DownloadSource, Exchange
from cerise.model.webfence import WebInputs
from cerise.remote import web
from cerise.remote.jobscript import JobFiles
from cerise.remote.protocol import Remote
from cerise.remote.staging import cache as cache_
from cerise.remote.staging.cache import InputCache
from cerise.remote.staging.concurrency import HASH_THREADS, PARALLEL_FILES, gather_limited
from cerise.remote.staging.hashes import MEMO, HashMemo
from cerise.remote.staging.local import Localised, Upload, local_file, local_tree
from cerise.remote.staging.planning import Transfer
from cerise.remote.staging.prepare import parse_checksums, prepare_script
from cerise.remote.staging.progress import StagingProgress, Tally
from cerise.remote.staging.rejections import InputRejected
from cerise.remote.staging.upload import send


@dataclass(frozen=True)
class StageInReport:
    """What `stage_in` did: files and bytes sent, files found already in place, and files
    linked from the input cache instead of sent."""

    files_sent: int
    bytes_sent: int
    files_kept: int
    files_cached: int = 0


async def stage_in(
    remote: Remote,
    files: JobFiles,
    transfers: Sequence[Transfer],
    exchange: Exchange,
    *,
    parallel: int = PARALLEL_FILES,
    web_inputs: WebInputs | None = None,
    cache: InputCache | None = None,
    progress: StagingProgress | None = None,
    memo: HashMemo = MEMO,
) -> StageInReport:
    """Put every transfer into the job's work directory; files already there are kept.

    `web_inputs` fences http(s) inputs (by default the operator's fence from its
    environment, with the default limits); files of at least `input_cache.MIN_BYTES` go
    through `cache` if there is one; `progress` hears the bytes in place so far (kept and
    linked ones count as done) of all the inputs' bytes.
    """
    web_inputs = web_inputs or webfence.WebInputs(webfence.operator_fence(os.environ))
    scratch = Path(await asyncio.to_thread(tempfile.mkdtemp, prefix="cerise-stage-"))
    try:
        real_root = Path(await asyncio.to_thread(os.path.realpath, exchange.root))
        local = await gather_limited(
            (_localise(t, files, real_root, scratch / t.name, web_inputs) for t in transfers),
            parallel)
        uploads = [upload for item in local for upload in item.uploads]
        dirs = [files.work, *(d for item in local for d in item.dirs)]
        cacheable: list[Upload] = []
        plain: list[Upload] = []
        for upload in uploads:
            cached_ = cache is not None and upload.size >= input_cache.MIN_BYTES
            (cacheable if cached_ else plain).append(upload)
        cached = cache_.needed(await gather_limited(
            (_hashed(upload, memo) for upload in cacheable), HASH_THREADS))
        mark = cache.mark() if cache is not None else 0
        result = await remote.run(prepare_script(
            dirs, [(u.remote, u.size) for u in plain],
            cache.directory if cache is not None else None, cached), timeout=600)
        if result.exit_status != 0:
            raise OSError(f"cannot create the job's directories: {result.stderr.strip()[-500:]}")
        linked = cache_.parse_linked(result.stdout, len(cached))
        remote_sums = parse_checksums(result.stdout, [u.remote for u in plain])
        checked = [u for u in plain if u.remote in remote_sums]
        sums = await gather_limited(
            (asyncio.to_thread(memo.sha256, u.local) for u in checked), HASH_THREADS)
        kept = {u.remote for u, s in zip(checked, sums, strict=True) if remote_sums[u.remote] == s}
        hits = [item for i, item in enumerate(cached) if i in linked]
        missing = [item for i, item in enumerate(cached) if i not in linked]
        tally = Tally(progress, total=sum(u.size for u in uploads),
                      done=sum(u.size for u in plain if u.remote in kept)
                      + sum(item.size * len(item.targets) for item in hits))
        if cache is not None:
            cache.hit(hits)
        sent = await send(remote, [u for u in plain if u.remote not in kept], parallel, tally.add)
        filled = cache_.Filled()
        if cache is not None and missing:
            filled = await cache.fill(remote, missing, mark, parallel, tally.add,
                                      memo=memo)
    finally:
        await asyncio.to_thread(shutil.rmtree, scratch, ignore_errors=True)
    return StageInReport(files_sent=len(sent) + len(filled.sent),
                         bytes_sent=sum(sent) + sum(filled.sent), files_kept=len(kept),
                         files_cached=len(hits) + filled.linked)


async def _hashed(upload: Upload, memo: HashMemo) -> Upload:
    if upload.sha256 is not None:
        return upload
    return replace(upload, sha256=await asyncio.to_thread(memo.sha256, upload.local))


async def _localise(
    transfer: Transfer, files: JobFiles, real_root: Path, scratch: Path, web_inputs: WebInputs,
) -> Localised:
    target = f"{files.work}/{transfer.name}"
    source = transfer.source
    if isinstance(source, DownloadSource):
        got = await _download(transfer, source.url, scratch, web_inputs)
        return Localised((Upload(scratch, target, got.size, got.sha256),))
    if transfer.kind is FileKind.FILE:
        return await asyncio.to_thread(local_file, transfer, source.path, real_root, target)
    return await asyncio.to_thread(local_tree, transfer, source.path, real_root, target)


async def _download(transfer: Transfer, url: str, target: Path,
                    web_inputs: WebInputs) -> web.Downloaded:
    """Fetch an http(s) input; what the user can fix is InputRejected, the rest OSError."""
    try:
        return await web.download(url, target, fence=web_inputs.fence,
                                  limit=web_inputs.max_bytes, timeout=web_inputs.timeout)
    except web.TooLarge as error:
        raise InputRejected(f"{transfer.kind} {error} (the compute resource's "
                            "spec.webInputs.maxBytes)") from None
    except web.TimedOut as error:
        raise InputRejected(f"{transfer.kind} {error} (the compute resource's "
                            "spec.webInputs.timeoutSeconds)") from None
    except web.HttpStatus as error:
        if 400 <= error.status < 500:
            raise InputRejected(f"{transfer.kind} could not be downloaded: {error}") from None
        raise OSError(f"downloading failed: {error}") from None
    except web.Refused as error:
        raise InputRejected(f"{transfer.kind} {error}") from None
    except web.FetchFailed as error:
        raise OSError(f"downloading failed: {error}") from None
