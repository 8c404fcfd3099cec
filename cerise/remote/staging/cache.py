"""The input cache on a compute resource, ``<base>/cache/<sha256>``: a file that many jobs
use is sent once and linked into each job's work directory (`cerise.model.input_cache`
says what to evict and what the status shows).

* The prepare command (`prepare`) links every cached file a job needs into place with
  `link_lines`, in the same ONE command that checks the rest.
* A file not in the cache is uploaded to ``.part-<sha256>`` there (a stable name, so an
  upload cut off resumes: `cerise.remote.resume`), then ONE
  command (`commit_script`) checks it, makes it read-only, adds it under its digest
  (``ln`` never replaces an entry), links it into the job and lists the cache; least
  recently used entries over the limit are then removed, only those no job links to.
  A file that changed while it was sent is never cached: if the local digest memo
  (`hashes`) still holds the local file's digest after the upload (it was hashed and has
  not changed since: the same size, mtime and ctime), what arrived is what was hashed
  (SSH checks every packet) and only its size is checked; otherwise its sha256 is
  computed on the remote side (reading all of it there once more).
* Two jobs that need the same new file at once send it once: one operator drives a
  compute resource, so a lock per (resource, digest) in this process orders them, and the
  second links what the first committed. (A second process staging to the same base
  directory could at worst send a file twice; an entry is never partial.)

The scripts need bash 4 and GNU coreutils and findutils (``sha256sum``, ``stat -c``,
``touch -c``, ``find -printf``), as the rest of staging.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import shlex
from collections import OrderedDict
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from itertools import accumulate
from pathlib import Path
from typing import Any

from cerise.model import input_cache
from cerise.model.input_cache import CacheCounters, CacheFile, CacheListing
from cerise.remote.protocol import Progress, Remote
from cerise.remote.staging.concurrency import gather_limited
from cerise.remote.staging.hashes import HashMemo
from cerise.remote.staging.local import Upload

_LINKED_MARK = "cerise-linked:"
_LISTING_MARK = "cerise-cache"
_MISMATCH_MARK = "cerise-mismatch"
_COMMITS_REMEMBERED = 4096


@dataclass(frozen=True)
class Needed:
    """A cached file one job needs: its digest, size and local copy, and where the job
    wants it."""

    sha256: str
    size: int
    local: Path
    targets: tuple[str, ...]


@dataclass
class Filled:
    """What `InputCache.fill` did: the bytes sent of each entry sent, and entries linked
    because another job had just sent them."""

    sent: list[int] = field(default_factory=list)
    linked: int = 0


def needed(uploads: Sequence[Upload]) -> list[Needed]:
    """The uploads (with known digests) grouped by content."""
    grouped: dict[tuple[str, int], list[Upload]] = {}
    for upload in uploads:
        assert upload.sha256 is not None
        grouped.setdefault((upload.sha256, upload.size), []).append(upload)
    return [Needed(sha, size, same[0].local, tuple(upload.remote for upload in same))
            for (sha, size), same in grouped.items()]


def link_lines(directory: str, wanted: Sequence[Needed]) -> str:
    """Bash lines that link each wanted entry present (with its size) into its targets,
    touch it, and print ``cerise-linked: i j …`` (indices into `wanted`).

    A target on another file system than the cache gets a copy instead of a link.
    """
    q = shlex.quote
    counts = [len(item.targets) for item in wanted]
    starts = [total - count for total, count in zip(accumulate(counts), counts, strict=True)]
    return f"""cache={q(directory)}
mkdir -p -- "$cache" || return 1
sums=({" ".join(q(item.sha256) for item in wanted)})
sizes=({" ".join(str(item.size) for item in wanted)})
starts=({" ".join(map(str, starts))})
counts=({" ".join(map(str, counts))})
targets=({" ".join(q(target) for item in wanted for target in item.targets)})
linked=()
for i in "${{!sums[@]}}"; do
    entry="$cache/${{sums[i]}}"
    [ -f "$entry" ] && [ "$(stat -c %s -- "$entry")" = "${{sizes[i]}}" ] || continue
    ok=1
    for ((j = starts[i]; j < starts[i] + counts[i]; j++)); do
        [ "$entry" -ef "${{targets[j]}}" ] && continue
        ln -f -- "$entry" "${{targets[j]}}" 2>/dev/null || cp -f -- "$entry" "${{targets[j]}}" \\
            || ok=0
    done
    [ "$ok" = 1 ] && linked+=("$i")
done
for i in "${{linked[@]}}"; do printf '%s\\0' "$cache/${{sums[i]}}"; done | xargs -0 -r touch -c --
echo "{_LINKED_MARK} ${{linked[*]}}"
"""


def parse_linked(output: str, count: int) -> set[int]:
    """The indices `link_lines` reports linked (nothing, if its line is missing)."""
    for line in output.split("\n"):
        if line.startswith(_LINKED_MARK):
            words = line[len(_LINKED_MARK):].split()
            if all(word.isdigit() and int(word) < count for word in words):
                return {int(word) for word in words}
            return set()
    return set()


def listing_lines(directory: str) -> str:
    """Bash lines that list the cache: the remote clock, then every regular file in it."""
    return f"""printf '{_LISTING_MARK}\\0%s\\0' "$(date +%s)"
find {shlex.quote(directory)} -maxdepth 1 -type f -printf '%T@ %n %s %f\\0'
"""


def parse_listing(output: str) -> CacheListing | None:
    """The `CacheListing` that `listing_lines` printed, or None if it is not there."""
    start = output.find(f"{_LISTING_MARK}\0")
    if start < 0:
        return None
    fields = output[start:].split("\0")
    try:
        now = float(fields[1])
    except (IndexError, ValueError):
        return None
    files = []
    for record in fields[2:]:
        parts = record.split(" ", 3)
        if len(parts) == 4 and all(re.fullmatch(r"[0-9.]+", p) for p in parts[:3]):
            files.append(CacheFile(parts[3], int(parts[2]), int(parts[1]), float(parts[0])))
    return CacheListing(now, tuple(files))


def commit_script(directory: str, partial: str, item: Needed, *, unchanged: bool = False) -> str:
    """Check an uploaded `partial` file (its size only if its local file is known
    `unchanged` since it was hashed; else its sha256), add it to the cache, link it, list
    the cache."""
    q = shlex.quote
    entry = f"{directory}/{item.sha256}"
    check = (f"got=$(stat -L -c %s -- {q(partial)} 2>/dev/null)\nwant={item.size}"
             if unchanged else
             f"got=$(sha256sum < {q(partial)} 2>/dev/null)\ngot=${{got%% *}}\n"
             f"want={q(item.sha256)}")
    return f"""umask 077
{check}
if [ "$got" != "$want" ]; then
    rm -f -- {q(partial)}
    echo {_MISMATCH_MARK}
    return 0
fi
chmod 0400 -- {q(partial)} || return 1
ln -- {q(partial)} {q(entry)} 2>/dev/null
rm -f -- {q(partial)}
{link_lines(directory, [item])}{listing_lines(directory)}"""


def evict_script(directory: str, names: Sequence[str]) -> str:
    """Remove cache files by name, each only if still no job links to it."""
    q = shlex.quote
    tests = " -o ".join(f"-name {q(name)}" for name in names)
    return f"find {q(directory)} -maxdepth 1 -type f -links 1 \\( {tests} \\) -delete"


class InputCache:
    """The input cache of one compute resource; one object per resource, shared by all its
    jobs' staging (it holds the locks that make two jobs send a new file once)."""

    def __init__(self, base: str, max_bytes: int) -> None:
        self.directory = f"{base.rstrip('/')}/cache"
        self.max_bytes = max_bytes
        self.counters = CacheCounters()
        self.listing: CacheListing | None = None
        """The cache as last seen."""
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}
        self._commits: OrderedDict[str, int] = OrderedDict()
        self._sequence = 0

    def status_fields(self) -> dict[str, Any]:
        """The ComputeResource's ``status.inputCache``."""
        return input_cache.status_fields(self.listing, self.counters, self.max_bytes)

    def mark(self) -> int:
        """Take before checking what the cache holds: `fill` links what was committed since."""
        return self._sequence

    def hit(self, items: Sequence[Needed]) -> None:
        """Count files linked from the cache."""
        self.counters.hits += len(items)
        self.counters.bytes_linked += sum(item.size for item in items)

    async def survey(self, remote: Remote) -> None:
        """List the cache and evict what is over the limit (e.g. when a worker starts)."""
        result = await remote.run(
            f"umask 077\nmkdir -p -- {shlex.quote(self.directory)} || return 1\n"
            f"{listing_lines(self.directory)}", timeout=600)
        listing = parse_listing(result.stdout)
        if result.exit_status != 0 or listing is None:
            raise OSError(f"cannot list the input cache: {result.stderr.strip()[-500:]}")
        await self._evict(remote, listing)

    async def fill(self, remote: Remote, missing: Sequence[Needed], mark: int, parallel: int,
                   progress: Progress | None = None, *, memo: HashMemo | None = None) -> Filled:
        """Put `missing` entries into the cache and link them into place.

        An entry that another job committed since `mark` is linked, not sent again.
        `progress` hears of every chunk sent and of every target linked. `memo`, which
        hashed the local files, vouches for those unchanged since.
        """
        filled = Filled()

        async def one(item: Needed) -> None:
            async with self._lock(item.sha256):
                if self._commits.get(item.sha256, -1) > mark and await self._link(remote, item):
                    self.hit([item])
                    filled.linked += 1
                    extra = item.size * len(item.targets)
                else:
                    filled.sent.append(await self._send(remote, item, progress, memo))
                    extra = item.size * (len(item.targets) - 1)
            if progress is not None:
                progress(extra)

        await gather_limited(map(one, missing), parallel)
        return filled

    async def _link(self, remote: Remote, item: Needed) -> bool:
        result = await remote.run(f"umask 077\n{link_lines(self.directory, [item])}")
        return result.exit_status == 0 and parse_linked(result.stdout, 1) == {0}

    async def _send(self, remote: Remote, item: Needed, progress: Progress | None,
                    memo: HashMemo | None) -> int:
        partial = f"{self.directory}/.part-{item.sha256}"
        sent = await remote.upload(item.local, partial, progress=progress)
        unchanged = memo is not None and await asyncio.to_thread(
            memo.known, item.local) == item.sha256
        result = await remote.run(
            commit_script(self.directory, partial, item, unchanged=unchanged), timeout=600)
        if _MISMATCH_MARK in result.stdout.split("\n"):
            raise OSError(f"{item.targets[0]}: its local file changed while it was sent "
                          "(sent again on the next attempt)")
        if result.exit_status != 0 or parse_linked(result.stdout, 1) != {0}:
            raise OSError(f"cannot add {item.targets[0]} to the input cache: "
                          f"{result.stderr.strip()[-500:]}")
        self._sequence += 1
        self._commits[item.sha256] = self._sequence
        while len(self._commits) > _COMMITS_REMEMBERED:
            self._commits.popitem(last=False)
        self.counters.misses += 1
        self.counters.bytes_sent += sent
        listing = parse_listing(result.stdout)
        if listing is not None:
            await self._evict(remote, listing)
        return sent

    async def _evict(self, remote: Remote, listing: CacheListing) -> None:
        doomed = input_cache.evictions(listing, self.max_bytes)
        if doomed:
            await remote.run(evict_script(self.directory, doomed), timeout=600)
            self.counters.evicted += sum(input_cache.is_digest(name) for name in doomed)
            listing = input_cache.without(listing, doomed)
        self.listing = listing

    @contextlib.asynccontextmanager
    async def _lock(self, sha256: str) -> AsyncIterator[None]:
        """The lock of one digest; forgotten when nobody holds or awaits it."""
        lock, users = self._locks.get(sha256, (asyncio.Lock(), 0))
        self._locks[sha256] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[sha256]
            if users == 1:
                del self._locks[sha256]
            else:
                self._locks[sha256] = (lock, users - 1)
