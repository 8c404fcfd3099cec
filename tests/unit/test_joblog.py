"""The job log: the runner's lines land exactly once, also across a crash, and it is bounded."""

from __future__ import annotations

import asyncio
import os
import threading
from pathlib import Path
from typing import Any

import pytest

from cerise.operator import joblog

RUNNER_LOG = "step one\nstep two\n"


class Crash(Exception):
    """The operator died here."""


def crash_once_the_log_grew(monkeypatch: pytest.MonkeyPatch, log: Path) -> None:
    """Kill the 'operator' at its first write of the offset record after the log grew."""
    size = log.stat().st_size if log.exists() else 0
    real_write, real_replace = Path.write_text, os.replace

    def grown() -> bool:
        return log.exists() and log.stat().st_size > size

    def write_text(self: Path, *args: Any, **kwargs: Any) -> int:
        if self.name.startswith(f"{log.name}.offset") and grown():
            raise Crash
        return real_write(self, *args, **kwargs)

    def replace(source: Any, target: Any) -> None:
        if Path(target).name.startswith(f"{log.name}.offset") and grown():
            raise Crash
        real_replace(source, target)

    monkeypatch.setattr(Path, "write_text", write_text)
    monkeypatch.setattr(os, "replace", replace)


async def follow(log: Path) -> None:
    """What the worker does with a poll: the runner's lines past the recorded offset."""
    offset = await joblog.runner_offset(log)
    if RUNNER_LOG[offset:]:
        await joblog.runner_output(log, RUNNER_LOG[offset:], len(RUNNER_LOG))


async def test_a_crash_after_the_append_does_not_repeat_the_runners_lines(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    log = tmp_path / "job.log"
    await joblog.message(log, "INFO", "staged in")
    with monkeypatch.context() as patch:
        crash_once_the_log_grew(patch, log)
        with pytest.raises(Crash):
            await follow(log)
    await follow(log)  # the restarted operator
    await follow(log)
    text = log.read_text()
    assert text.count("step one") == 1 and text.count("step two") == 1, text
    assert await joblog.runner_offset(log) == len(RUNNER_LOG)


async def test_a_torn_append_is_cut_off_and_made_again(tmp_path: Path) -> None:
    log = tmp_path / "job.log"
    await joblog.message(log, "INFO", "staged in")
    before = log.stat().st_size
    # What a crash in the middle of the append leaves: the write-ahead record, half the lines.
    joblog.offset_path(log).write_text(
        f'{{"offset": 0, "next": {len(RUNNER_LOG)}, "from": {before}, '
        f'"to": {before + len(RUNNER_LOG)}}}')
    with log.open("a") as handle:
        handle.write(RUNNER_LOG[:7])
    await joblog.message(log, "INFO", "restarted")
    await follow(log)
    lines = log.read_text().splitlines()
    assert lines[1].endswith("INFO: restarted") and lines[2:] == ["step one", "step two"]


def test_the_size_limit_holds_for_concurrent_appends(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(joblog, "LIMIT", 4000)
    log = tmp_path / "job.log"

    def chatter() -> None:
        for _ in range(40):
            asyncio.run(joblog.message(log, "INFO", "x" * 60))

    threads = [threading.Thread(target=chatter) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    text = log.read_text()
    assert len(text.encode()) <= 4000
    assert text.count(joblog.TRUNCATED) == 1 and text.endswith(joblog.TRUNCATED)
