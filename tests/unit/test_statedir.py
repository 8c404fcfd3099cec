"""State directories of local daemons: a run reaping stale ones spares those being claimed."""

from __future__ import annotations

import fcntl
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
