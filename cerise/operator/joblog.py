"""The job log a user reads: Cerise's own messages and the runner's log, in the exchange.

One file per job, `<exchange>/logs/<job key>.log`: lines `<UTC time> <LEVEL>: <message>`
for Cerise's messages and the runner's lines as they are. Beside it, how much of the
runner's log it holds, so that a restarted operator neither repeats nor skips lines.
It is bounded: past `LIMIT` bytes one last line says so and nothing more is appended,
so a chatty runner cannot fill the disk (etcd never holds logs; the status keeps only a
short message).
"""

from __future__ import annotations

import asyncio
import datetime
from pathlib import Path

from cerise.model.results import strip_terminal_codes

LIMIT = 4 << 20
TRUNCATED = "log truncated: it reached its size limit\n"


def _append(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    size = path.stat().st_size if path.exists() else 0
    if size >= LIMIT:
        return
    data = text.encode(errors="replace")
    if size + len(data) > LIMIT:
        data = data[: max(0, LIMIT - size - len(TRUNCATED))] + TRUNCATED.encode()
    with path.open("ab") as handle:
        handle.write(data)


async def message(path: Path, level: str, text: str) -> None:
    """Append one of Cerise's messages."""
    stamp = datetime.datetime.now(datetime.UTC).isoformat(sep=" ", timespec="milliseconds")[:23]
    await asyncio.to_thread(_append, path, f"{stamp} {level}: {text}\n")


def offset_path(path: Path) -> Path:
    """Where the job log records how much of the runner's log it holds."""
    return path.with_name(f"{path.name}.offset")


async def runner_offset(path: Path) -> int:
    """How many bytes of the runner's log the job log already holds."""
    def read() -> int:
        try:
            return int(offset_path(path).read_text())
        except (FileNotFoundError, ValueError):
            return 0

    return await asyncio.to_thread(read)


async def runner_output(path: Path, text: str, offset: int) -> None:
    """Append new lines of the runner's log, which now ends at byte `offset` of it."""
    def append() -> None:
        _append(path, strip_terminal_codes(text))
        offset_path(path).write_text(str(offset))

    await asyncio.to_thread(append)
