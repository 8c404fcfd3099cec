"""The input cache: what to evict (pure), and its scripts run in a real bash on local files,
as on a compute resource; the local digests remembered."""

from __future__ import annotations

import hashlib
import os
import subprocess
import time
from pathlib import Path

import pytest

from cerise.model import compute, input_cache
from cerise.model.input_cache import CacheCounters, CacheFile, CacheListing
from cerise.remote.protocol import wrap_script
from cerise.remote.staging import cache
from cerise.remote.staging.cache import Needed
from cerise.remote.staging.hashes import HashMemo

MiB = 1 << 20


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def entry(name: str, size: int, used: float, links: int = 1) -> CacheFile:
    return CacheFile(name=name * 64 if len(name) == 1 else name, size=size, links=links,
                     used=used)


def test_the_least_recently_used_entries_no_job_links_to_go_first() -> None:
    listing = CacheListing(now=1000.0, files=(
        entry("a", 4 * MiB, used=10, links=3),   # oldest, but jobs link to it
        entry("b", 2 * MiB, used=20),
        entry("c", 2 * MiB, used=30),
        entry("d", 2 * MiB, used=40, links=2),
        entry("e", 1 * MiB, used=50),
    ))
    assert input_cache.evictions(listing, limit=11 * MiB) == []
    assert input_cache.evictions(listing, limit=9 * MiB) == ["b" * 64]
    assert input_cache.evictions(listing, limit=8 * MiB) == ["b" * 64, "c" * 64]
    # over the limit with every unused entry gone: jobs still hold the rest
    assert input_cache.evictions(listing, limit=0) == ["b" * 64, "c" * 64, "e" * 64]


def test_abandoned_partial_uploads_go_and_strangers_stay() -> None:
    old = f".part-{'f' * 64}"
    fresh = f".part-{'e' * 64}"
    left = f".part-{'d' * 64}.1f2e3d4c5b6a.partial"  # what a cut-off transfer leaves
    listing = CacheListing(now=10 * 86400.0, files=(
        CacheFile(old, 5, 1, used=86400.0), CacheFile(fresh, 5, 1, used=10 * 86400.0 - 60),
        CacheFile(left, 5, 1, used=86400.0), CacheFile("notes.txt", 10 * MiB, 1, used=0.0)))
    assert input_cache.evictions(listing, limit=0) == [old, left]
    assert listing.size == 0


def test_status_fields() -> None:
    listing = CacheListing(now=0.0, files=(entry("a", 3, 0.0, links=2), entry("b", 4, 0.0)))
    counters = CacheCounters(hits=3, misses=1)
    assert input_cache.status_fields(listing, counters, limit=100) == {
        "limitBytes": 100, "hits": 3, "misses": 1, "bytes": 7, "files": 2, "pinnedBytes": 3,
        "hitRatio": 0.75}
    assert input_cache.status_fields(None, CacheCounters(), limit=5) == {
        "limitBytes": 5, "hits": 0, "misses": 0}


# --- the scripts -------------------------------------------------------------------------


def bash(script: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", "-s"], input=wrap_script(script), capture_output=True,
                          text=True, timeout=60)


@pytest.fixture
def hostile(tmp_path: Path) -> Path:
    """A base directory whose name a shell would misread; its work/ made."""
    base = tmp_path / "base 'x' $(touch pwned);\n"
    (base / "work").mkdir(parents=True)
    return base


def test_cached_files_are_linked_into_place_and_touched(hostile: Path) -> None:
    directory = hostile / "cache"
    directory.mkdir()
    there, wrong, absent = b"there" * 1000, b"wrong size", b"absent"
    (directory / digest(there)).write_bytes(there)
    (directory / digest(wrong)).write_bytes(wrong + b"!")
    os.utime(directory / digest(there), (0, 0))
    targets = [str(hostile / "work" / name) for name in ("01_a", "-rf b", "03_c", "04_d")]
    wanted = [Needed(digest(there), len(there), Path("x"), (targets[0], targets[1])),
              Needed(digest(wrong), len(wrong), Path("x"), (targets[2],)),
              Needed(digest(absent), len(absent), Path("x"), (targets[3],))]

    result = bash(cache.link_lines(str(directory), wanted))

    assert result.returncode == 0, result.stderr
    assert cache.parse_linked(result.stdout, len(wanted)) == {0}
    for target in targets[:2]:
        assert Path(target).read_bytes() == there
        assert os.stat(target).st_ino == (directory / digest(there)).stat().st_ino
    assert (directory / digest(there)).stat().st_nlink == 3
    assert (directory / digest(there)).stat().st_mtime > time.time() - 60
    assert not Path(targets[2]).exists() and not Path(targets[3]).exists()
    again = bash(cache.link_lines(str(directory), wanted[:1]))  # already linked: kept
    assert cache.parse_linked(again.stdout, 1) == {0}
    assert not list(hostile.parent.rglob("pwned"))


def test_a_commit_checks_the_content_adds_it_read_only_and_lists_the_cache(
    hostile: Path,
) -> None:
    directory = hostile / "cache"
    directory.mkdir()
    data = os.urandom(3000)
    item = Needed(digest(data), len(data), Path("x"), (str(hostile / "work" / "01 in"),))
    partial = directory / f".part-{item.sha256}-abc"
    partial.write_bytes(data)

    result = bash(cache.commit_script(str(directory), str(partial), item))

    assert result.returncode == 0, result.stderr
    assert cache.parse_linked(result.stdout, 1) == {0}
    stored = directory / item.sha256
    assert stored.read_bytes() == data and stored.stat().st_mode & 0o777 == 0o400
    assert stored.stat().st_nlink == 2 and not partial.exists()
    listing = cache.parse_listing(result.stdout)
    assert listing is not None and abs(listing.now - time.time()) < 60
    assert [(f.name, f.size, f.links) for f in listing.files] == [(item.sha256, 3000, 2)]

    # changed while it was sent (not to b"?": one random last byte in 256 was that already)
    partial.write_bytes(data[:-1] + bytes([data[-1] ^ 0xFF]))
    changed = bash(cache.commit_script(str(directory), str(partial), Needed(
        item.sha256, len(data), Path("x"), (str(hostile / "work" / "02 in"),))))
    assert "cerise-mismatch" in changed.stdout
    assert not partial.exists() and not (hostile / "work" / "02 in").exists()
    assert stored.read_bytes() == data


def test_a_commit_vouched_for_by_the_local_side_checks_only_the_size(hostile: Path) -> None:
    directory = hostile / "cache"
    directory.mkdir()
    data = os.urandom(3000)
    item = Needed(digest(data), len(data), Path("x"), (str(hostile / "work" / "01 in"),))
    partial = directory / f".part-{item.sha256}"
    partial.write_bytes(data[:-1])  # cut short

    short = bash(cache.commit_script(str(directory), str(partial), item, unchanged=True))
    assert "cerise-mismatch" in short.stdout and not partial.exists()

    # Not read again: the local file was hashed and has not changed since, and SSH
    # delivers what was read from it.
    partial.write_bytes(data)
    result = bash(cache.commit_script(str(directory), str(partial), item, unchanged=True))
    assert result.returncode == 0, result.stderr
    assert cache.parse_linked(result.stdout, 1) == {0}
    assert (directory / item.sha256).read_bytes() == data


def test_eviction_removes_only_files_no_job_links_to(hostile: Path) -> None:
    directory = hostile / "cache"
    directory.mkdir()
    for name in ("a", "b"):
        (directory / (name * 64)).write_bytes(b"x")
    os.link(directory / ("a" * 64), hostile / "work" / "a")

    result = bash(cache.evict_script(str(directory), ["a" * 64, "b" * 64]))

    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in directory.iterdir()) == ["a" * 64]


@pytest.mark.parametrize("output", ["", "cerise-linked: 0 7\n", "cerise-linked: x\n"])
def test_a_garbled_link_reply_means_nothing_linked(output: str) -> None:
    assert cache.parse_linked(output, 2) == set()


# --- local digests -----------------------------------------------------------------------


def test_a_files_digest_is_read_once_until_it_changes(tmp_path: Path) -> None:
    path = tmp_path / "input.bin"
    path.write_bytes(b"one")
    memo = HashMemo(size=2)

    assert memo.sha256(path) == digest(b"one")
    assert memo.sha256(path) == digest(b"one")
    assert (memo.hits, memo.misses) == (1, 1)

    path.write_bytes(b"two")
    os.utime(path, ns=(0, 0))
    assert memo.sha256(path) == digest(b"two")  # the same mtime as before: ctime tells
    assert memo.misses == 2


def test_the_memo_vouches_only_for_a_file_unchanged_since_it_was_read(tmp_path: Path) -> None:
    path = tmp_path / "input.bin"
    path.write_bytes(b"one")
    memo = HashMemo()
    assert memo.known(path) is None  # never read

    read = memo.sha256(path)
    assert memo.known(path) == read

    with path.open("r+b") as handle:  # changed in place, its size kept
        handle.write(b"two")
    before = path.stat()  # (timestamps are coarse: a later change has a later mtime)
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns + 10**9))
    assert memo.known(path) is None


def test_the_cache_limit_comes_from_the_resource() -> None:
    local = {"jobs": {"protocol": "local"}}
    assert compute.parse_spec(local).cache_max_bytes == 10 << 30
    assert compute.parse_spec({**local, "inputCache": {"maxBytes": 0}}).cache_max_bytes == 0
