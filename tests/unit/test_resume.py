"""Resuming transfers: partial names, block sums on both sides, progress counted once."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from cerise.remote import resume
from cerise.remote.sftp import Meter

BLOCK = resume.BLOCK


def test_partial_files_are_hidden_beside_their_target_and_named_for_the_source() -> None:
    name = resume.partial_name("/work/job/01_reads.bam", resume.version(10, 123))
    assert name.startswith("/work/job/.01_reads.bam.") and name.endswith(".partial")
    assert name == resume.partial_name("/work/job/01_reads.bam", resume.version(10, 123))
    assert name != resume.partial_name("/work/job/01_reads.bam", resume.version(10, 124))
    assert name != resume.partial_name("/work/job/02_reads.bam", resume.version(10, 123))
    long = resume.partial_name("/w/" + "x" * 255, "1:2")
    assert len(long.rsplit("/", 1)[1]) < 100
    assert long != resume.partial_name("/w/" + "x" * 254 + "y", "1:2")


def test_the_remote_script_sums_blocks_as_the_local_side_does(tmp_path: Path) -> None:
    path = tmp_path / "it's a file"
    path.write_bytes(bytes(range(256)) * (BLOCK // 256) * 2 + b"tail")
    script = resume.sums_script(str(path), 2)
    output = subprocess.run(["bash", "-c", script], capture_output=True, text=True, check=True)
    assert resume.parse_sums(output.stdout, 2) == resume.local_sums(path, 2)
    missing = subprocess.run(["bash", "-c", resume.sums_script(str(tmp_path / "none"), 1)],
                             capture_output=True, text=True)
    assert missing.returncode != 0


@pytest.mark.parametrize("output", ["", "a" * 64 + "  -\n", ("z" * 64 + "  -\n") * 2])
def test_output_that_is_not_all_there_gives_no_sums(output: str) -> None:
    assert resume.parse_sums(output, 2) == []


def test_transfers_resume_after_the_leading_blocks_that_match() -> None:
    assert resume.matching_prefix(["a", "b", "c"], ["a", "b", "c"]) == 3 * BLOCK
    assert resume.matching_prefix(["a", "b", "c"], ["a", "x", "c"]) == BLOCK
    assert resume.matching_prefix(["a", "b"], []) == 0


def test_progress_counts_each_byte_once_whatever_the_order() -> None:
    calls: list[int] = []
    meter = Meter(calls.append)
    for position in (40, 20, 60, 60, 100):
        meter.reach(position)
    assert calls == [40, 20, 40]
    Meter(None).reach(10)  # no callback: nothing to tell
