"""A run's per-step progress, from the runner's log (cwltool's `[step NAME]` lines).

cwltool logs `[workflow W] starting step NAME`, `[step NAME] start` (again for every job
of a scattered step), `[step NAME] will be skipped` and `[step NAME] completed STATUS`;
a step's jobs log as `[job NAME]`, `[job NAME_2]`, …, and the steps of a nested workflow
like any other. NAME is unique within a run (cwltool numbers repeats: `host_2`).

A job's `status.steps` lists the steps in the order they started, at most `LIMIT` of
them (later ones are left out), each with its state and the times the operator saw it
start and end. Updating is idempotent: lines seen twice change nothing.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import NotRequired, TypedDict

from cerise.model.results import MESSAGE_LIMIT, strip_terminal_codes

LIMIT = 256
"""Most steps a job's status lists."""
NAME_LIMIT = 256
"""Longest step name kept (longer ones are cut)."""
RUNNING = "Running"
ENDED = {"success": "Success", "permanentFail": "PermanentFailure",
         "temporaryFail": "TemporaryFailure", "skipped": "Skipped"}
"""cwltool's process status → a step's state (any other status is a PermanentFailure)."""

# `[time] ` only with cwltool --timestamps; `[workflow ]` is the top-level workflow.
_RECORD = re.compile(r"(?:\[[^\]]*\] )?(DEBUG|INFO|WARNING|ERROR|CRITICAL) "
                     r"(?:\[(step|job|workflow) ?([^\]]*)\] )?(.*)")
_STARTED = re.compile(r"start|will be skipped")
_STARTING = re.compile(r"starting step (.+)")
_COMPLETED = re.compile(r"completed (\w+)")
_NUMBERED = re.compile(r"(.+)_\d+")


class Step(TypedDict):
    """One entry of a job's `status.steps`."""

    name: str
    state: str
    startTime: str
    endTime: NotRequired[str]


def _event(line: str) -> tuple[str, str] | None:
    """(step name, new state) if the log line starts or ends a step."""
    record = _RECORD.fullmatch(strip_terminal_codes(line).rstrip())
    if record is None:
        return None
    _, kind, subject, text = record.groups()
    if kind == "workflow" and (starting := _STARTING.fullmatch(text)):
        return starting.group(1)[:NAME_LIMIT], RUNNING
    if kind != "step":
        return None
    if _STARTED.fullmatch(text):
        return subject[:NAME_LIMIT], RUNNING
    if completed := _COMPLETED.fullmatch(text):
        return subject[:NAME_LIMIT], ENDED.get(completed.group(1), "PermanentFailure")
    return None


def update(steps: Sequence[Step], lines: Iterable[str], now: str) -> list[Step]:
    """`steps` after the runner's new complete log `lines`, seen at `now` (a Kubernetes
    timestamp). `steps` itself is left unchanged."""
    result = list(steps)
    index = {step["name"]: position for position, step in enumerate(result)}
    for line in lines:
        event = _event(line)
        if event is None:
            continue
        name, state = event
        position = index.get(name)
        if position is None:
            if len(result) >= LIMIT:
                continue
            index[name] = len(result)
            entry = Step(name=name, state=state, startTime=now)
            if state != RUNNING:  # its start was not seen (e.g. cut off): it took no time
                entry["endTime"] = now
            result.append(entry)
        elif state != RUNNING and result[position]["state"] == RUNNING:
            result[position] = Step(name=name, state=state,
                                    startTime=result[position]["startTime"], endTime=now)
    return result


def _step_of(job: str, running: Sequence[str]) -> str:
    """The step a `[job NAME]` record is about: the latest running step of its name (`wc`
    for `wc_2`), else the latest started (cwltool starts a step's jobs right after it),
    else its name without cwltool's number (the step's start is not in the log)."""
    numbered = _NUMBERED.fullmatch(job)
    base = numbered.group(1) if numbered else job
    named = [step for step in running if step in (job, base)]
    return (named or running or [base])[-1]


def failure(log: str) -> str | None:
    """"step NAME failed: REASON" for the first step the runner's `log` says failed, with
    the runner's warnings and errors about that step and its jobs; None if none failed."""
    running: list[str] = []
    owners: dict[str, str] = {}  # job name → step name
    reasons: dict[str, list[list[str]]] = {}  # step name → its warnings' and errors' lines
    current: list[str] | None = None  # the record that lines without a level continue
    for line in strip_terminal_codes(log).splitlines():
        record = _RECORD.fullmatch(line.rstrip())
        if record is None:
            if current is not None and line.strip():
                current.append(line.strip())
            continue
        current = None
        event = _event(line)
        if event is not None:
            name, state = event
            if state not in (RUNNING, "Success", "Skipped"):
                found = dict.fromkeys(" ".join(lines) for lines in reasons.get(name, []))
                reason = "; ".join(found) or "no reason given"
                return f"step {name} failed: {reason}"[:MESSAGE_LIMIT]
            running = [step for step in running if step != name]
            running += [name] if state == RUNNING else []
            continue
        level, kind, subject, text = record.groups()
        if kind == "job":
            step = owners.setdefault(subject, _step_of(subject, running))
        elif kind in ("step", "workflow"):
            step = subject
        else:
            continue
        if level in ("WARNING", "ERROR", "CRITICAL") and not text.startswith("completed "):
            current = [text]
            reasons.setdefault(step, []).append(current)
    return None
