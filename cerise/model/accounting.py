"""What a run cost: the figures of the job script's own measurement, of Slurm's `sacct`
and of pilot mode's agent, read and combined into the job's `status.accounting`.

Pure: parsers of what the remote side prints, and the rule that combines them. Where the
figures come from and what each means is in docs/accounting.md.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any


class Source(StrEnum):
    """Who measured a run."""

    SACCT = "sacct"
    JOBSCRIPT = "jobscript"
    PILOT = "pilot"


@dataclass(frozen=True)
class Figures:
    """One run's figures; None where its source does not say."""

    elapsed: float | None = None
    """Wall-clock seconds."""
    cpu: float | None = None
    """User plus system CPU seconds of the runner and everything it started."""
    max_rss: int | None = None
    """Bytes: the peak resident memory of its largest process (Slurm's MaxRSS likewise)."""
    cores: int | None = None
    """Cores allocated to it."""


SACCT_FIELDS = ("JobID", "Elapsed", "TotalCPU", "MaxRSS", "AllocCPUS", "State")
"""The columns `sacct -P -n -o` is asked for, in order."""
UNFINISHED_STATES = frozenset({
    "PENDING", "RUNNING", "COMPLETING", "CONFIGURING", "REQUEUED", "REQUEUE_HOLD",
    "REQUEUE_FED", "RESIZING", "SUSPENDED", "STOPPED", "SIGNALING", "STAGE_OUT",
})
"""sacct states of a job whose record is not yet closed: its figures are not final."""
ACCOUNTING_DISABLED = "accounting storage is disabled"
"""What sacct says (after "Slurm") where the cluster keeps no accounting."""
CORE_VARIABLES = ("CERISE_RUN_CORES", "SLURM_JOB_CPUS_PER_NODE", "SLURM_CPUS_ON_NODE",
                  "NSLOTS", "PBS_NP", "PBS_NUM_NODES", "PBS_NUM_PPN")
"""The environment variables that say how many cores a job script was given, in the
order they are trusted: pilot mode's run first (the allocation's are not the run's)."""

_DURATION = re.compile(
    r"(?:(?P<days>\d+)-)?(?:(?P<hours>\d+):)?(?P<minutes>\d+):(?P<seconds>\d+(?:\.\d+)?)")
_SIZE = re.compile(r"(\d+(?:\.\d+)?)([KMGTP]?)")
_CPUS_PER_NODE = re.compile(r"(\d+)(?:\(x(\d+)\))?")
_UNITS = {"": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40, "P": 2**50}


def duration(text: str) -> float | None:
    """Seconds of a Slurm duration: `[D-][HH:]MM:SS[.mmm]` (TotalCPU, Elapsed); None for
    what is not one (an empty field, `INVALID`)."""
    match = _DURATION.fullmatch(text.strip())
    if match is None:
        return None
    days, hours, minutes, seconds = (match.group(name) for name in
                                     ("days", "hours", "minutes", "seconds"))
    if days is not None and hours is None:  # `D-HH:MM` is not printed for durations
        return None
    return (int(days or 0) * 86400 + int(hours or 0) * 3600 + int(minutes) * 60
            + float(seconds))


def size(text: str) -> int | None:
    """Bytes of a sacct size (`1234K`, `1.50M`, `2G`; a bare number is bytes); None for
    an empty field."""
    match = _SIZE.fullmatch(text.strip())
    if match is None:
        return None
    return round(float(match.group(1)) * _UNITS[match.group(2)])


def cores_per_node(text: str) -> int | None:
    """The total of Slurm's `SLURM_JOB_CPUS_PER_NODE` (`4(x2),2` is 10)."""
    total = 0
    for part in text.strip().split(","):
        match = _CPUS_PER_NODE.fullmatch(part)
        if match is None:
            return None
        total += int(match.group(1)) * int(match.group(2) or 1)
    return total or None


def cores_from_environment(environment: Mapping[str, str]) -> int | None:
    """The cores a job script was given, from its scheduler's variables (`CORE_VARIABLES`)."""
    def number(name: str) -> int | None:
        value = environment.get(name, "").strip()
        return int(value) if value.isdigit() and int(value) > 0 else None

    if number("CERISE_RUN_CORES"):
        return number("CERISE_RUN_CORES")
    if environment.get("SLURM_JOB_CPUS_PER_NODE"):
        found = cores_per_node(environment["SLURM_JOB_CPUS_PER_NODE"])
        if found:
            return found
    for name in ("SLURM_CPUS_ON_NODE", "NSLOTS", "PBS_NP"):
        if number(name):
            return number(name)
    nodes, per_node = number("PBS_NUM_NODES"), number("PBS_NUM_PPN")
    return nodes * per_node if nodes and per_node else None


def parse_measurement(text: str) -> Figures | None:
    """The job script's measurement (one JSON line, `cerise.remote.measurement`); None if
    there is none or it cannot be read (a run killed before it wrote it)."""
    try:
        record = json.loads(text)
    except ValueError:
        return None
    if not isinstance(record, dict):
        return None

    def number(name: str) -> float | None:
        value = record.get(name)
        if isinstance(value, bool) or not isinstance(value, int | float):
            return None
        return float(value) if math.isfinite(value) and value >= 0 else None

    environment = record.get("env")
    environment = {str(key): str(value) for key, value in environment.items()} if (
        isinstance(environment, dict)) else {}
    usable = number("usable")
    cores = cores_from_environment(environment) or (int(usable) if usable else None)
    max_rss = number("maxRss")
    return Figures(elapsed=number("elapsed"), cpu=number("cpu"),
                   max_rss=int(max_rss) if max_rss is not None else None, cores=cores)


@dataclass(frozen=True)
class SacctJob:
    """One job's record in sacct: its allocation's row and its steps' rows combined."""

    figures: Figures
    final: bool
    """Whether the job and all its steps have ended (their figures are then complete)."""


def parse_sacct(output: str) -> dict[str, SacctJob]:
    """Each job's record (by its id) from `sacct -P -n -o` `SACCT_FIELDS` lines.

    A job's elapsed time and cores are its allocation's row; its CPU time the
    allocation's (which is the sum of its steps), or the steps' sum where that is empty;
    its max RSS the largest of its steps' (`batch`, `extern`, numbered steps; none where
    none was sampled). Lines that are not rows are skipped."""
    rows: dict[str, list[list[str]]] = {}
    for line in output.splitlines():
        fields = line.strip().split("|")
        if len(fields) != len(SACCT_FIELDS) or not fields[0]:
            continue
        rows.setdefault(fields[0].split(".")[0], []).append(fields)
    jobs: dict[str, SacctJob] = {}
    for job_id, job_rows in rows.items():
        own = next((row for row in job_rows if row[0] == job_id), None)
        if own is None:
            continue
        steps = [row for row in job_rows if row is not own]
        step_cpu = [value for row in steps if (value := duration(row[2])) is not None]
        cpu = duration(own[2])
        if not cpu and step_cpu:
            cpu = sum(step_cpu)
        # 0 is what a step too short for the sampler shows: nothing was measured.
        rss = [value for row in (own, *steps) if (value := size(row[3]))]
        cores = int(own[4]) if own[4].isdigit() and int(own[4]) > 0 else None
        final = all(_state(row[5]) not in UNFINISHED_STATES for row in job_rows)
        jobs[job_id] = SacctJob(
            Figures(elapsed=duration(own[1]), cpu=cpu, max_rss=max(rss) if rss else None,
                    cores=cores), final=final)
    return jobs


def _state(text: str) -> str:
    """sacct's state without what follows it (`CANCELLED by 1000`)."""
    return text.strip().split(" ")[0].rstrip("+")


def sacct_disabled(words: str) -> bool:
    """Whether sacct's words say the cluster keeps no accounting."""
    return ACCOUNTING_DISABLED in words.lower()


def combine(script: Figures | None, scheduler: Figures | None) -> Figures | None:
    """One run's figures: the scheduler's where it has them, the script's elsewhere."""
    if scheduler is None:
        return script
    if script is None:
        return scheduler
    return Figures(
        elapsed=scheduler.elapsed if scheduler.elapsed is not None else script.elapsed,
        cpu=scheduler.cpu if scheduler.cpu is not None else script.cpu,
        max_rss=scheduler.max_rss if scheduler.max_rss is not None else script.max_rss,
        cores=scheduler.cores if scheduler.cores is not None else script.cores)


def total(runs: Sequence[Figures]) -> Figures | None:
    """A job's figures over its attempts (a retry with more time or memory): times added,
    the largest memory peak, the last attempt's cores."""
    if not runs:
        return None

    def added(values: Iterable[float | None]) -> float | None:
        known = [value for value in values if value is not None]
        return sum(known) if known else None

    peaks = [run.max_rss for run in runs if run.max_rss is not None]
    return Figures(elapsed=added(run.elapsed for run in runs),
                   cpu=added(run.cpu for run in runs),
                   max_rss=max(peaks) if peaks else None,
                   cores=next((run.cores for run in reversed(runs) if run.cores), None))


def core_hours(runs: Sequence[Figures]) -> float | None:
    """Cores times elapsed hours, added over the runs that say both."""
    known = [run.cores * run.elapsed / 3600 for run in runs
             if run.cores is not None and run.elapsed is not None]
    return sum(known) if known else None


def to_status(runs: Sequence[Figures], source: Source) -> dict[str, Any] | None:
    """The job's `status.accounting` from its attempts' figures (None: nothing measured)."""
    figures = total(runs)
    if figures is None or figures == Figures():
        return None
    status: dict[str, Any] = {"source": source.value}
    hours = core_hours(runs)
    for name, value in (("elapsedSeconds", figures.elapsed), ("cpuSeconds", figures.cpu),
                        ("maxRssBytes", figures.max_rss), ("cores", figures.cores),
                        ("coreHours", hours)):
        if value is not None:
            status[name] = float(f"{value:.9g}") if isinstance(value, float) else value
    return status


@dataclass(frozen=True)
class Settled:
    """A job's accounting is decided: `status` (None: nothing was measured)."""

    status: dict[str, Any] | None


def settle(measured: Sequence[Figures | None], scheduler: Sequence[SacctJob | None] | None,
           *, pilot: bool, give_up: bool) -> Settled | None:
    """A job's `status.accounting` from its attempts' own figures (`measured`) and the
    scheduler's records of them (`scheduler`, by attempt: None where it has none; the
    whole None when it was not asked or could not answer); None to ask the scheduler
    again later, while a record is missing or still open — unless `give_up`, when the
    job's own figures stand for the records that are not final."""
    if scheduler is not None and not give_up and any(
            record is None or not record.final for record in scheduler):
        return None
    runs: list[Figures] = []
    used = False
    for number, own in enumerate(measured):
        record = scheduler[number] if scheduler is not None and number < len(scheduler) else None
        theirs = record.figures if record is not None and record.final else None
        if theirs == Figures():
            theirs = None
        used = used or theirs is not None
        figures = combine(own, theirs)
        if figures is not None:
            runs.append(figures)
    source = Source.SACCT if used else Source.PILOT if pilot else Source.JOBSCRIPT
    return Settled(to_status(runs, source))


def describe(status: Mapping[str, Any]) -> str:
    """A job's `status.accounting` in a line for people: `elapsed 7.0 s, CPU 2.3 s, max
    RSS 20.0 MiB, 2 cores, 0.0039 core-hours (sacct)`."""
    parts: list[str] = []

    def number(name: str) -> float | None:
        value = status.get(name)
        return float(value) if isinstance(value, int | float) else None

    if (elapsed := number("elapsedSeconds")) is not None:
        parts.append(f"elapsed {_seconds(elapsed)}")
    if (cpu := number("cpuSeconds")) is not None:
        parts.append(f"CPU {_seconds(cpu)}")
    if (rss := number("maxRssBytes")) is not None:
        parts.append(f"max RSS {rss / 2**20:.1f} MiB")
    if (cores := number("cores")) is not None:
        parts.append(f"{int(cores)} core{'' if cores == 1 else 's'}")
    if (hours := number("coreHours")) is not None:
        parts.append(f"{hours:.4g} core-hours")
    text = ", ".join(parts) or "nothing measured"
    return f"{text} ({status['source']})" if status.get("source") else text


def _seconds(value: float) -> str:
    """`7.0 s` below a minute, else `1:02:03` (and `2d 1:02:03`)."""
    if value < 60:
        return f"{value:.1f} s"
    days, rest = divmod(round(value), 86400)
    hours, rest = divmod(rest, 3600)
    clock = f"{hours}:{rest // 60:02d}:{rest % 60:02d}"
    return f"{days}d {clock}" if days else clock
