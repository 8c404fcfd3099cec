"""Lines of Cerise's own in a job's log, and the log as a user reads it once the job ended.

A transition is written to Kubernetes first and then appended to the log, so for a moment
(or for good, if the operator stops in between) a job shows its final phase while its log
does not yet say why it ended. A user who waits for the end and then reads the log must
see that line: `as_read` adds it from the job's status when the log does not hold the
status message yet.
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping
from typing import Any

from cerise.model.states import FINAL, Phase

_FAILED = frozenset({Phase.SYSTEM_ERROR, Phase.PERMANENT_FAILURE})


def level(phase: Phase) -> str:
    """The level of the log line of a transition to `phase`."""
    return "ERROR" if phase in _FAILED else "INFO"


def line(when: datetime.datetime, level_name: str, text: str) -> str:
    """One log line: `<UTC time to the millisecond> <LEVEL>: <text>`."""
    stamp = when.astimezone(datetime.UTC).isoformat(sep=" ", timespec="milliseconds")[:23]
    return f"{stamp} {level_name}: {text}\n"


def as_read(log: str, status: Mapping[str, Any] | None) -> str:
    """`log` with the line of the job's final transition at its end if it is not in it."""
    status = status or {}
    try:
        phase = Phase(str(status.get("phase")))
    except ValueError:
        return log
    message = status.get("message")
    if phase not in FINAL or not isinstance(message, str) or message in log:
        return log
    return log + line(_finished(status), level(phase), f"{phase.value}: {message}")


def _finished(status: Mapping[str, Any]) -> datetime.datetime:
    try:
        return datetime.datetime.fromisoformat(str(status["finishedAt"]))
    except (KeyError, ValueError):
        return datetime.datetime.now(datetime.UTC)
