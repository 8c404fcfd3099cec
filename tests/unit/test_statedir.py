"""State directories of local daemons: a run reaping stale ones spares those being claimed."""

from __future__ import annotations

import fcntl
import os
import subprocess
from pathlib import Path

import pytest

from cerise.devenv import statedir


def test_a_directory_being_claimed_is_not_reaped_by_a_run_starting_beside_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    lock = fcntl.flock
    reaping = False

    def reap_first(fd: int, operation: int) -> None:
        # Another worker reaps in the instant between the claim's open and its lock.
        nonlocal reaping
        if not reaping:
            reaping = True
            statedir.reap_stale("sshd", base=tmp_path)
        lock(fd, operation)

    monkeypatch.setattr(fcntl, "flock", reap_first)
    claimed = statedir.claim("sshd", base=tmp_path)
    monkeypatch.undo()
    try:
        assert claimed.path.is_dir()
        assert statedir.reap_stale("sshd", base=tmp_path) == [claimed.path]
    finally:
        claimed.release()


def test_a_crashed_runs_directory_is_reaped_with_what_was_mounted_below_it(
    tmp_path: Path,
) -> None:
    if os.geteuid() != 0:
        pytest.fail("mounting needs root, as the test node does")
    crashed = statedir.claim("node", base=tmp_path)
    mounted = crashed.path / "kubelet"
    mounted.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "tmpfs", str(mounted)], check=True)
    (mounted / "pod").write_text("left behind\n")
    os.close(crashed.lock_fd)  # the run dies: its lock goes with it, its mount stays
    try:
        assert statedir.reap_stale("node", base=tmp_path) == []
        assert not crashed.path.exists()
    finally:
        subprocess.run(["umount", "--lazy", str(mounted)], capture_output=True, check=False)
    assert str(mounted) not in Path("/proc/self/mountinfo").read_text()
