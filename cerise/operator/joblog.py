"""The job log a user reads: Cerise's own messages and the runner's log, in the exchange.

One file per job, `<exchange>/logs/<job key>.log`: lines `<UTC time> <LEVEL>: <message>`
for Cerise's messages and the runner's lines as they are. Beside it, a record of how much
of the runner's log it holds, so that a restarted operator neither repeats nor skips lines.
It is bounded: past `LIMIT` bytes one last line says so and nothing more is appended,
so a chatty runner cannot fill the disk (etcd never holds logs; the status keeps only a
short message).

Crash-safe: every append holds an exclusive `flock` on the log, so the size check and the
append are one step. Runner lines are appended write-ahead: the record first says where
the append starts and ends and which runner offset it brings, then the lines are
appended, then the record says the new offset. The record is replaced by a rename, never
written in place. Whoever takes the lock next finishes an append that a crash cut short:
a complete one counts, a torn one is cut off, so the runner's lines land exactly once.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import fcntl
import json
import os
from collections.abc import Iterator
from pathlib import Path

from cerise.model import joblines
from cerise.model.results import strip_terminal_codes

LIMIT = 4 << 20
TRUNCATED = "log truncated: it reached its size limit\n"


def offset_path(path: Path) -> Path:
    """Where the job log records how much of the runner's log it holds."""
    return path.with_name(f"{path.name}.offset")


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[int]:
    """The log open for appending, locked, with an interrupted runner append finished."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        _recover(path, fd)
        yield fd
    finally:
        os.close(fd)  # releases the lock


def _read_record(path: Path) -> dict[str, int]:
    try:
        record = json.loads(offset_path(path).read_text())
    except (FileNotFoundError, ValueError):
        return {"offset": 0}
    if isinstance(record, int):  # a plain number, as older operators wrote it
        return {"offset": record}
    return record if isinstance(record, dict) else {"offset": 0}


def _write_record(path: Path, record: dict[str, int]) -> None:
    final = offset_path(path)
    temporary = final.with_name(f"{final.name}.tmp")
    temporary.write_text(json.dumps(record))
    os.replace(temporary, final)


def _recover(path: Path, fd: int) -> None:
    """Finish a runner append that a crash interrupted (the lock is held)."""
    record = _read_record(path)
    if "next" not in record:
        return
    size = os.fstat(fd).st_size
    if size >= record["to"]:
        _write_record(path, {"offset": record["next"]})
        return
    if size > record["from"]:
        os.ftruncate(fd, record["from"])
    _write_record(path, {"offset": record["offset"]})


def _bounded(fd: int, text: str) -> bytes:
    """What of `text` fits below `LIMIT` (with the truncation line when it is reached)."""
    size = os.fstat(fd).st_size
    if size >= LIMIT:
        return b""
    data = text.encode(errors="replace")
    if size + len(data) > LIMIT:
        data = data[: max(0, LIMIT - size - len(TRUNCATED))] + TRUNCATED.encode()
    return data


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _append_message(path: Path, text: str) -> None:
    with _locked(path) as fd:
        _write_all(fd, _bounded(fd, text))


def _append_runner(path: Path, text: str, offset: int) -> None:
    with _locked(path) as fd:
        data = _bounded(fd, text)
        start = os.fstat(fd).st_size
        done = _read_record(path)["offset"]
        _write_record(path, {"offset": done, "next": offset, "from": start,
                             "to": start + len(data)})
        _write_all(fd, data)
        _write_record(path, {"offset": offset})


def _runner_offset(path: Path) -> int:
    if not path.exists():  # nothing to finish; and a deleted job's log is not made again
        return _read_record(path)["offset"]
    with _locked(path):
        return _read_record(path)["offset"]


async def message(path: Path, level: str, text: str) -> None:
    """Append one of Cerise's messages."""
    await asyncio.to_thread(_append_message, path,
                            joblines.line(datetime.datetime.now(datetime.UTC), level, text))


async def runner_offset(path: Path) -> int:
    """How many bytes of the runner's log the job log already holds."""
    return await asyncio.to_thread(_runner_offset, path)


async def runner_output(path: Path, text: str, offset: int) -> None:
    """Append new lines of the runner's log, which now ends at byte `offset` of it."""
    await asyncio.to_thread(_append_runner, path, strip_terminal_codes(text), offset)
