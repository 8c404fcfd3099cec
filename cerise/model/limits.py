"""Time limits: how long a run may take, and whether its time limit ended it.

`time_limit_message` is asked after a run ended: was it stopped at its time limit? The
evidence comes from the job script's markers (`cerise.remote.jobscript`: when it started,
which signal it got and when) and, where the scheduler says so, its own word (Slurm's
`TIMEOUT`), never from accounting, which may be off. A request that can never run is
refused before it is staged (`cerise.model.admission`).
"""

from __future__ import annotations

from typing import Protocol

LIMIT_SIGNAL = "LIMIT"
"""The signal name the job script records when its own time limit (scheduler `none`)
stopped the runner."""
SCHEDULER_SIGNALS = frozenset({"TERM", "USR2"})
"""Signals a batch scheduler ends a job with at its time limit (Grid Engine warns with USR2
before it kills a job submitted with -notify); a cancel sends them too."""
SLACK = 10
"""Seconds a stop may come before the limit and still count as the limit's: the job
script's clock starts after the scheduler's."""


class RunEnd(Protocol):
    """How a run ended, as its markers and the scheduler tell it (epoch seconds)."""

    @property
    def started(self) -> int | None: ...

    @property
    def ended(self) -> int | None: ...

    @property
    def signal(self) -> str | None:
        """The first signal the job script got (TERM, USR2…) or `LIMIT_SIGNAL`."""
        ...

    @property
    def signalled_at(self) -> int | None: ...

    @property
    def timed_out(self) -> bool:
        """The scheduler itself says the job hit its time limit."""
        ...


def duration(seconds: float) -> str:
    """`seconds` for people: `45 s`, `1 min 30 s`, `2 h 5 min`, `3 d 4 h`."""
    rest = max(0, int(seconds))
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60), ("s", 1)):
        count, rest = divmod(rest, size)
        if count:
            parts.append(f"{count} {unit}")
    return " ".join(parts[:2]) or "0 s"


def time_limit_message(run: RunEnd, time_limit: int, *, now: float | None = None) -> str | None:
    """Why the run ended if its time limit ended it, else None (a cancel, a crash, success).

    `time_limit` is what the job asked for, in seconds (0: none, the scheduler's default).
    `now` lets a run that vanished without any marker of its end (killed outright) be
    judged by how long it has been since it started.
    """
    limit = f"its time limit of {duration(time_limit)}" if time_limit > 0 else (
        "the scheduler's default time limit")
    if run.signal == LIMIT_SIGNAL:
        ran = _elapsed(run.started, run.signalled_at)
        return f"the job reached {limit}{ran} and was stopped"
    if run.timed_out:
        ran = _elapsed(run.started, run.signalled_at or run.ended)
        return f"the job reached {limit}{ran} and was stopped; the scheduler reports a time-out"
    if time_limit <= 0 or run.started is None:
        return None
    if run.signal in SCHEDULER_SIGNALS and run.signalled_at is not None:
        if run.signalled_at - run.started >= time_limit - SLACK:
            return (f"the job reached {limit}{_elapsed(run.started, run.signalled_at)} and "
                    f"the scheduler stopped it with SIG{run.signal}")
        return None
    end = run.ended if run.ended is not None else now
    if run.signal is None and run.ended is None and end is not None and (
            end - run.started >= time_limit - SLACK):
        return (f"the job disappeared without recording how it ended, "
                f"{duration(end - run.started)} after it started and so past {limit}: most "
                "likely the scheduler killed it at that limit")
    return None


def _elapsed(started: int | None, stopped: int | None) -> str:
    if started is None or stopped is None:
        return ""
    return f" after running {duration(stopped - started)}"
