"""Retention of finished jobs: how long they are kept, and which have outlived it.

A finished job (one in a final phase) is kept for its ComputeResource's `jobRetention`, or
else the operator's global retention (CERISE_JOB_RETENTION); with neither, forever. Its
age counts from the end of the job: `status.finishedAt`, written by the final transition
(jobs from before that field fall back to the `Succeeded` condition's time). Retentions
are written as a whole number of seconds ("3600") or as numbers with units
("30d", "12h", "1d12h", "90m", "45s", "2w").
"""

from __future__ import annotations

import datetime
import heapq
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from cerise.model import states
from cerise.model.states import Phase

_UNITS = {"w": 7 * 86400, "d": 86400, "h": 3600, "m": 60, "s": 1}
_RETENTION = re.compile(r"[0-9]+|(?:[0-9]+[wdhms])+")
_PART = re.compile(r"([0-9]+)([wdhms])")

Body = Mapping[str, Any]
Retention = Callable[[str, str], float | None]
"""The retention in seconds of the jobs of ComputeResource (namespace, name); None: keep."""


def parse_retention(text: str) -> float:
    """Seconds of a retention such as "30d", "1d12h" or "3600"; ValueError says why not."""
    text = text.strip()
    if not _RETENTION.fullmatch(text):
        raise ValueError(f"retention {text!r} is not a number of seconds or a duration "
                         f"such as 30d, 12h, 1d12h, 90m or 45s")
    if text.isdigit():
        return float(text)
    return float(sum(int(number) * _UNITS[unit] for number, unit in _PART.findall(text)))


def finished_at(job: Body) -> datetime.datetime | None:
    """When a finished job ended; None if it has not ended (or says nothing usable)."""
    status = job.get("status") or {}
    phase = status.get("phase")
    if phase is None or Phase(phase) not in states.FINAL:
        return None
    stamp = status.get("finishedAt")
    if not stamp:
        succeeded = [c for c in status.get("conditions") or [] if c.get("type") == "Succeeded"]
        stamp = succeeded[0].get("lastTransitionTime") if succeeded else None
    if not stamp:
        return None
    try:
        return datetime.datetime.fromisoformat(stamp)
    except ValueError:
        return None


def expired(
    jobs: Iterable[Body], now: datetime.datetime, retention: Retention, limit: int
) -> list[Body]:
    """At most `limit` finished jobs that have outlived their retention, oldest first.

    Jobs already being deleted are left out (their deletion is under way).
    """
    found: list[tuple[datetime.datetime, str, Body]] = []
    for job in jobs:
        metadata = job["metadata"]
        if metadata.get("deletionTimestamp"):
            continue
        ended = finished_at(job)
        if ended is None:
            continue
        keep = retention(metadata["namespace"], job["spec"]["computeResource"])
        if keep is not None and (now - ended).total_seconds() >= keep:
            found.append((ended, metadata["uid"], job))
    return [job for _, _, job in heapq.nsmallest(limit, found, key=lambda item: item[:2])]
