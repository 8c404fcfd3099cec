"""Retrying a run that its time limit or its memory ended, with more of what it ran out of.

A ComputeResource's `spec.retry` says how (`RetryPolicy`: attempts, factors, ceilings); a
WorkflowJob's `spec.retry` may ask for fewer attempts, other factors or lower ceilings,
never more than the resource allows (`for_job`). The resource's own limits (`jobs.maxTime`,
`jobs.memoryPerNode`) are ceilings too. After a run ends by its time limit or memory,
`next_attempt` answers with the next attempt's time limit and memory, or with why it gives
up; `tried` says what was tried, for the job's final message.

Time limits are in seconds (0: the scheduler's default, which cannot be multiplied), memory
in MiB (0: none asked for, so none to multiply).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from cerise.model.limits import duration

FIELDS = ("attempts", "timeFactor", "memoryFactor", "maxTimeSeconds", "maxMemoryMiB")
"""The keys of a `retry` section, on a ComputeResource and on a WorkflowJob."""


class EndedBy(StrEnum):
    """What ended a run that may be retried with more."""

    TIME = "time limit"
    MEMORY = "memory"


@dataclass(frozen=True)
class RetryPolicy:
    """How often, and with how much more, a run ended by its time limit or memory is run."""

    attempts: int = 1
    """Runs in all, the first included (1: no retry)."""
    time_factor: float = 2.0
    memory_factor: float = 2.0
    max_time: int | None = None
    """The longest time limit a retry may ask for, in seconds; None: no ceiling."""
    max_memory: int | None = None
    """The most memory a retry may ask for, in MiB; None: no ceiling."""


def parse_policy(settings: Mapping[str, Any] | None, where: str) -> RetryPolicy:
    """A `retry` section as a policy; ValueError naming `where` if a value is out of range."""
    settings = settings or {}
    unknown = sorted(set(settings) - set(FIELDS))
    if unknown:
        raise ValueError(f"{where}: unknown field {unknown[0]!r} (known: {', '.join(FIELDS)})")
    whole = ("attempts", "maxTimeSeconds", "maxMemoryMiB")
    for key, value in settings.items():  # as the CRD's schema types them: no text, no bool
        if isinstance(value, bool) or not isinstance(value, int | float) or (
                key in whole and not isinstance(value, int)):
            raise ValueError(f"{where}: every field must be a number, and attempts and the "
                             f"ceilings whole numbers; {key} is {value!r}")
    attempts = int(settings.get("attempts", 1))
    time_factor = float(settings.get("timeFactor", 2.0))
    memory_factor = float(settings.get("memoryFactor", 2.0))
    max_time = _ceiling(settings.get("maxTimeSeconds"))
    max_memory = _ceiling(settings.get("maxMemoryMiB"))
    if not 1 <= attempts <= 10:
        raise ValueError(f"{where}.attempts must be from 1 to 10")
    if not (1.0 <= time_factor <= 100.0 and 1.0 <= memory_factor <= 100.0):
        raise ValueError(f"{where}: timeFactor and memoryFactor must be from 1 to 100")
    if (max_time is not None and max_time < 1) or (max_memory is not None and max_memory < 1):
        raise ValueError(f"{where}: maxTimeSeconds and maxMemoryMiB must be at least 1")
    return RetryPolicy(attempts, time_factor, memory_factor, max_time, max_memory)


def _ceiling(value: Any) -> int | None:
    return None if value is None else int(value)


def _lower(first: int | None, second: int | None) -> int | None:
    present = [value for value in (first, second) if value is not None]
    return min(present) if present else None


def for_job(resource: RetryPolicy, job: Mapping[str, Any] | None, *,
            max_time: int | None = None, memory_per_node: int | None = None) -> RetryPolicy:
    """The policy for one job: the resource's, with the job's `spec.retry` (already parsed
    for range) asking for fewer attempts, other factors or lower ceilings; the resource's
    attempts, ceilings and limits (`max_time`, `memory_per_node`) always hold."""
    own = parse_policy(job, "spec.retry") if job else None
    attempts = min(own.attempts, resource.attempts) if own and "attempts" in (job or {}) \
        else resource.attempts
    return RetryPolicy(
        attempts=attempts,
        time_factor=own.time_factor if own and "timeFactor" in (job or {})
        else resource.time_factor,
        memory_factor=own.memory_factor if own and "memoryFactor" in (job or {})
        else resource.memory_factor,
        max_time=_lower(_lower(resource.max_time, own.max_time if own else None), max_time),
        max_memory=_lower(_lower(resource.max_memory, own.max_memory if own else None),
                          memory_per_node),
    )


@dataclass(frozen=True)
class Attempt:
    """One run of a job that its time limit or memory ended (`status.attempts[]`)."""

    number: int
    time_limit: int
    memory: int
    ended_by: EndedBy
    remote_id: str

    def to_status(self) -> dict[str, Any]:
        return {"number": self.number, "timeLimitSeconds": self.time_limit,
                "memoryMiB": self.memory, "endedBy": self.ended_by.value,
                "remoteJobId": self.remote_id}

    @classmethod
    def from_status(cls, entry: Mapping[str, Any]) -> Attempt:
        return cls(int(entry.get("number") or 0), int(entry.get("timeLimitSeconds") or 0),
                   int(entry.get("memoryMiB") or 0), EndedBy(entry.get("endedBy", "time limit")),
                   str(entry.get("remoteJobId") or ""))


def run_name(key: str, attempt: int) -> str:
    """The scheduler's name for a job's `attempt`: `cerise-<key>`, and `cerise<N>-<key>` for
    a later attempt, so that a search by name after a failed submit never finds an earlier
    attempt's job (still listed for a while after it ended). The attempt comes first, as
    Torque keeps only a name's first 15 characters."""
    return f"cerise-{key}" if attempt <= 1 else f"cerise{attempt}-{key}"


@dataclass(frozen=True)
class Run:
    """A job's current attempt, as its status tells it, and the policy it runs under."""

    policy: RetryPolicy
    number: int = 1
    memory: int = 0
    """MiB this attempt asked for (0: none)."""
    remote_id: str = ""
    history: tuple[Attempt, ...] = ()
    """The attempts before this one that their time limit or memory ended."""


def current_run(policy: RetryPolicy, status: Mapping[str, Any]) -> Run:
    """The job's current attempt from its status (`attempt`, `memory`, `attempts`)."""
    return Run(policy, number=int(status.get("attempt") or 1),
               memory=int(status.get("memory") or 0),
               remote_id=str(status.get("remoteJobId") or ""),
               history=tuple(Attempt.from_status(entry) for entry in status.get("attempts") or ()))


@dataclass(frozen=True)
class NextRequest:
    """What the next attempt asks for."""

    time_limit: int
    memory: int


def next_attempt(policy: RetryPolicy, ended: Attempt) -> NextRequest | str:
    """The next attempt's request after `ended`, or why there is none."""
    if ended.number >= policy.attempts:
        return ("no attempts are left" if policy.attempts > 1
                else "retrying is off (retry.attempts is 1)")
    if ended.ended_by is EndedBy.TIME:
        grown = _grown(ended.time_limit, policy.time_factor, policy.max_time)
        if grown is None:
            return ("it asked for no time limit of its own, so there is none to raise"
                    if ended.time_limit <= 0 else
                    f"its time limit is at the ceiling of {duration(ended.time_limit)}")
        return NextRequest(grown, ended.memory)
    grown = _grown(ended.memory, policy.memory_factor, policy.max_memory)
    if grown is None:
        return ("it asked for no memory (ramMin), so there is none to raise"
                if ended.memory <= 0 else f"its memory is at the ceiling of {ended.memory} MiB")
    return NextRequest(ended.time_limit, grown)


def _grown(value: int, factor: float, ceiling: int | None) -> int | None:
    """`value` times `factor`, at most `ceiling`; None if that is no more than `value`."""
    if value <= 0:
        return None
    grown = math.ceil(value * factor)
    if ceiling is not None:
        grown = min(grown, ceiling)
    return grown if grown > value else None


def at_ceiling(policy: RetryPolicy, attempt: Attempt) -> bool:
    """Whether `attempt` asked for the ceiling of what ended it."""
    if attempt.ended_by is EndedBy.TIME:
        return policy.max_time is not None and attempt.time_limit >= policy.max_time
    return policy.max_memory is not None and attempt.memory >= policy.max_memory


def _request_text(attempt: Attempt) -> str:
    if attempt.ended_by is EndedBy.TIME:
        return duration(attempt.time_limit) if attempt.time_limit else "the default time"
    return f"{attempt.memory} MiB" if attempt.memory else "no memory request"


def tried(policy: RetryPolicy, attempts: Sequence[Attempt]) -> str:
    """What was tried, e.g. `ran out of time 3 times: 10 min, 20 min, 40 min (ceiling)`."""
    kinds = {attempt.ended_by for attempt in attempts}
    texts = []
    for attempt in attempts:
        text = _request_text(attempt)
        if len(kinds) > 1:
            text += " (time)" if attempt.ended_by is EndedBy.TIME else " (memory)"
        if at_ceiling(policy, attempt):
            text += " (ceiling)"
        texts.append(text)
    what = {frozenset({EndedBy.TIME}): "time", frozenset({EndedBy.MEMORY}): "memory"}.get(
        frozenset(kinds), "time or memory")
    times = "once" if len(attempts) == 1 else f"{len(attempts)} times"
    return f"ran out of {what} {times}: {', '.join(texts)}"


def retry_message(ended: Attempt, request: NextRequest, attempts: int) -> str:
    """The message of a retry: what ended the attempt, and what the next one asks for."""
    more = (f"a time limit of {duration(request.time_limit)}" if ended.ended_by is EndedBy.TIME
            else f"{request.memory} MiB of memory")
    return f"attempt {ended.number + 1} of {attempts} with {more}"
