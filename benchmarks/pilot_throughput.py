"""Pilot mode through the operator on real Slurm, against one batch job per run.

Each scenario starts its own control plane, sshd, one-node Slurm cluster and operator
(`slurm_cerise`) with cwltool as the resource's runner; every run is the example
project's `cerise/test/sleep.cwl` workflow:

    batch   N runs of `sleep 0`, one batch job each (pilot mode off)
    pilot   the same N runs in pilot mode: one allocation of all the node's cores
            (maxAllocations 1) with a time limit long enough for all of them
    killed  M runs of `sleep 2` in pilot mode with 2 allocations of one core each; the one
            with a run in it is cancelled with scancel once a third of the runs ended

Printed: each scenario's wall time (first WorkflowJob created -> last one final) and the
ratio; the batch jobs the operator submitted (its metric
`cerise_operator_scheduler_commands_total{kind="submit"}`; goal for pilot: <= 0.01 per run);
inside the allocation, each run's time from its ticket entering the queue to its job
script's `started` marker, and its dispatch overhead — from the moment it could start (its
ticket queued, the agent up and a core free: the run before it on that core wrote its exit
code) to `started` (goal: p95 <= 100 ms); the share of the allocation's core-seconds spent
running runs (goal: >= 90 %); the same dispatch overhead of Slurm's for (a) (could start:
submitted, a core free); for killed, the runs lost and run twice (goals 0 and 0),
with each run's starts (1 + the logs of its dead attempts, `stderr.<n>.txt`) and the job
scripts of a run seen running at once (this machine's /proc, sampled).

The runner is cwltool, which needs about a second of CPU per run even for `sleep 0`
(printed as measured): on a 2-core machine that also runs the operator, the control plane
and Slurm, the runner, not the dispatch, bounds pilot mode's throughput (batch mode adds
Slurm's own second or so per job on top). Other work on the machine is printed with each
scenario (load average, pytest processes, CPU busy and the CPU time of the processes of
this benchmark and of everyone else's).

    CERISE_BIN_DIR=... .venv/bin/python benchmarks/pilot_throughput.py [--runs 1000]
        [--killed 50] [--scenarios batch,pilot,killed]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shlex
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

from slurm_cerise import (
    FINAL,
    NAMESPACE,
    SlurmCerise,
    resource_value,
    slurm_cerise,
)

from cerise.kube.jobs import WorkflowJob
from cerise.remote.failures import RemoteUnavailable
from cerise.remote.jobscript import JobFiles
from cerise.remote.pilot.layout import PilotLayout

SUBMITS = "cerise_operator_scheduler_commands_total"
STEP_ENDED = "[job sleep] completed success"
"""The line cwltool writes to a run's log when the workflow's one step ran to its end."""
RUN_ENDED = "Final process status is success"
"""cwltool's last line in a run's log when the whole workflow ended well."""


# --- the machine ------------------------------------------------------------------------------

def cpu_jiffies() -> tuple[int, int]:
    """The machine's busy and total CPU time so far (/proc/stat, clock ticks)."""
    fields = [int(n) for n in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle, iowait
    return sum(fields) - idle, sum(fields)


def pytest_processes() -> int:
    """Processes running pytest now (other engineers' test runs on this machine)."""
    count = 0
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                count += b"pytest" in Path(entry.path, "cmdline").read_bytes()
            except OSError:
                continue
    return count


def load_average() -> str:
    return " ".join(f"{n:.2f}" for n in os.getloadavg())


Processes = dict[int, tuple[str, int, float]]


def processes() -> Processes:
    """Every process now: its name, its parent and the CPU seconds it used (user + system)."""
    found: Processes = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                head, _, rest = Path(entry.path, "stat").read_text().rpartition(")")
            except OSError:  # gone meanwhile
                continue
            fields = rest.split()
            found[int(entry.name)] = (head.partition("(")[2], int(fields[1]),
                                      (int(fields[11]) + int(fields[12])) / 100)
    return found


def cpu_used(before: Processes, after: Processes,
             names: Mapping[int, str]) -> tuple[dict[str, float], float]:
    """CPU seconds used between two snapshots by the processes alive at the second: this
    benchmark's descendants by name (or `names`), and all other processes together."""
    me = os.getpid()

    def ours(pid: int) -> bool:
        while pid in after and pid > 1:
            if pid == me:
                return True
            pid = after[pid][1]
        return False

    mine: dict[str, float] = {}
    others = 0.0
    for pid, (name, _, cpu) in after.items():
        old = before.get(pid)
        used = cpu - (old[2] if old is not None and old[0] == name else 0.0)
        if ours(pid):
            key = names.get(pid, name)
            mine[key] = mine.get(key, 0.0) + used
        else:
            others += used
    return mine, others


@dataclass
class Load:
    """What the machine did while a scenario ran."""

    average: str = field(default_factory=load_average)
    pytest: int = field(default_factory=pytest_processes)
    jiffies: tuple[int, int] = field(default_factory=cpu_jiffies)
    processes: Processes = field(default_factory=processes)

    def summary(self, names: Mapping[int, str]) -> str:
        busy, total = cpu_jiffies()
        share = (busy - self.jiffies[0]) / max(1, total - self.jiffies[1])
        spent = (busy - self.jiffies[0]) / 100
        mine, others = cpu_used(self.processes, processes(), names)
        ended = spent - sum(mine.values()) - others
        top = ", ".join(f"{name} {cpu:.0f}" for name, cpu in
                        sorted(mine.items(), key=lambda item: -item[1])[:6])
        return (f"machine ({os.cpu_count()} cores): load average {self.average} at the start, "
                f"{load_average()} at the end; {self.pytest} pytest processes at the start; "
                f"CPU busy {share:.0%} meanwhile, {spent:.0f} CPU-s: {top}; other users' "
                f"processes {others:.0f}; processes that ended meanwhile (the runs' cwltool "
                f"and shells among them) {ended:.0f}")


# --- what the resource's file system says -----------------------------------------------------

T = TypeVar("T")


async def retried(call: Callable[[], Awaitable[T]]) -> T:
    """`call()`, again after a lost connection: other test runs on this machine kill every
    sshd session of the test user (`pkill -u <user> -f sshd` in tests/integration)."""
    for _ in range(3):
        try:
            return await call()
        except RemoteUnavailable:
            await asyncio.sleep(1)
    return await call()


@dataclass(frozen=True)
class AllocationRecord:
    """One allocation, from its directory (and Slurm once that is gone)."""

    name: str
    remote_id: str = ""
    cores: int = 0
    submitted: float | None = None
    """Its `remote_id` marker (sbatch answered)."""
    started: float | None = None
    """Its job script's `started` marker (the batch job began)."""
    agent: float | None = None
    """Its agent's `agent` record (the agent takes runs from here on)."""
    ended: float | None = None
    """Its job script's `exit_code` marker, else its agent's `ended` record, else Slurm's
    EndTime."""
    end_reason: str = ""
    """idle or terminated (its agent's `ended` record), else Slurm's job state."""
    end_source: str = ""
    """Which of the three `ended` came from."""
    claims: int = 0
    """Tickets in its claim directory at the last look."""

    def merged(self, newer: AllocationRecord) -> AllocationRecord:
        """This record updated by a later look (a field once known stays known)."""
        return replace(newer, remote_id=newer.remote_id or self.remote_id,
                       cores=newer.cores or self.cores,
                       submitted=newer.submitted or self.submitted,
                       started=newer.started or self.started,
                       agent=newer.agent or self.agent, ended=newer.ended or self.ended,
                       end_reason=newer.end_reason or self.end_reason,
                       end_source=newer.end_source or self.end_source)


# One line per allocation directory: name|remote id|agent record|ended record|claims|mtimes.
_ALLOCATIONS = r"""for d in "$P"/allocations/*/; do
    [ -d "$d" ] || continue
    d=${d%/} n=${d##*/} id= agent= ended= claims=0
    [ -s "$d/remote_id" ] && read -r id < "$d/remote_id"
    [ -s "$d/agent" ] && read -r agent < "$d/agent"
    [ -s "$d/ended" ] && read -r ended < "$d/ended"
    for t in "$P/claimed/$n"/*; do [ -e "$t" ] && claims=$((claims + 1)); done
    times=$(cd "$d" 2>/dev/null && stat -c '%n=%.9Y' remote_id started agent ended \
        exit_code 2>/dev/null)
    printf '%s|%s|%s|%s|%s|%s\n' "$n" "$id" "$agent" "$ended" "$claims" "${times//$'\n'/ }"
done"""


def parse_allocations(output: str) -> dict[str, AllocationRecord]:
    found: dict[str, AllocationRecord] = {}
    for line in output.splitlines():
        fields = line.split("|")
        if len(fields) != 6:
            continue
        name, remote_id, agent, ended, claims, stamps = fields
        times = {key: float(value) for key, _, value in
                 (stamp.partition("=") for stamp in stamps.split())}
        agent_fields = agent.split()
        found[name] = AllocationRecord(
            name=name, remote_id=remote_id,
            cores=int(agent_fields[2]) if len(agent_fields) > 2 else 0,
            submitted=times.get("remote_id"), started=times.get("started"),
            agent=times.get("agent"),
            ended=times.get("exit_code") or times.get("ended"),
            end_reason=ended.split(" ", 1)[0], claims=int(claims or 0),
            end_source=next((f"its {key} marker" for key in ("exit_code", "ended")
                             if key in times), ""))
    return found


class AllocationWatch:
    """The allocations on the resource, looked at again and again: the operator removes an
    allocation's directory soon after it ended, so what it said is kept here."""

    def __init__(self, cerise: SlurmCerise) -> None:
        self.cerise = cerise
        self.script = f"P={shlex.quote(PilotLayout.under(cerise.base).root)}\n{_ALLOCATIONS}"
        self.seen: dict[str, AllocationRecord] = {}
        self.present: set[str] = set()
        """The allocations whose directories the last look found."""

    async def look(self) -> dict[str, AllocationRecord]:
        """Look now; the allocations present."""
        result = await retried(lambda: self.cerise.remote.run(self.script))
        found = parse_allocations(result.stdout)
        for name, record in found.items():
            old = self.seen.get(name)
            self.seen[name] = old.merged(record) if old else record
        self.present = set(found)
        return {name: self.seen[name] for name in found}

    async def follow(self, interval: float) -> None:
        """Look every `interval` seconds until cancelled."""
        while True:
            await self.look()
            await asyncio.sleep(interval)

    async def until_all_ended(self, timeout: float) -> None:
        """Wait until every allocation seen has ended; for one whose directory went before
        a look saw its end, ask Slurm (which keeps an ended job for MinJobAge, 30 s)."""
        deadline = time.monotonic() + timeout
        while True:
            await self.look()
            for name, record in list(self.seen.items()):
                if record.ended is None and name not in self.present:
                    state, ended = await slurm_end(self.cerise, record.remote_id)
                    self.seen[name] = replace(record, ended=ended,
                                              end_reason=record.end_reason or state,
                                              end_source="Slurm's EndTime")
            if all(record.ended is not None for record in self.seen.values()):
                return
            if time.monotonic() > deadline:
                raise SystemExit(f"allocations not ended after {timeout:g} s: {self.seen}")
            await asyncio.sleep(0.02)  # the operator removes an ended one within a refresh


async def slurm_end(cerise: SlurmCerise, remote_id: str) -> tuple[str, float | None]:
    """A job's state as Slurm has it, and when it ended (whole seconds; None if not yet)."""
    shown = await retried(lambda: cerise.slurm_command(
        f"scontrol -o show job {shlex.quote(remote_id)} || true"))
    fields = dict(word.partition("=")[::2] for word in shown.split())
    state = fields.get("JobState", "")
    if state in ("", "PENDING", "RUNNING", "CONFIGURING", "COMPLETING"):
        return state, None
    return state, datetime.fromisoformat(fields["EndTime"]).timestamp()


@dataclass(frozen=True)
class RunRecord:
    """One run's markers, logs and ticket on the resource."""

    name: str
    """Its job directory's name (the WorkflowJob's uid)."""
    submitted: float | None = None
    """Its `remote_id` marker: handed to the batch scheduler or the pilot queue."""
    started: float | None = None
    """Its job script's (last) `started` marker."""
    exited: float | None = None
    """Its `exit_code` marker."""
    dead_attempts: tuple[float, ...] = ()
    """The last writes of the logs of its attempts that died with their allocation."""
    step_ends: int = 0
    """`STEP_ENDED` lines in all its logs."""
    step_ends_dead: int = 0
    """`STEP_ENDED` lines in the logs of its attempts that died."""
    run_ends: int = 0
    """`RUN_ENDED` lines in all its logs: complete executions."""
    queued: float | None = None
    """When its ticket (last) entered the queue."""
    cores: int = 1
    allocation: str = ""
    """The allocation it (last) ended in."""

    @property
    def starts(self) -> int:
        """1 + the attempts that died (each left a rotated log)."""
        return len(self.dead_attempts) + (self.started is not None or not self.dead_attempts)


MARKERS = {"remote_id": "submitted", "started": "started", "exit_code": "exited"}
"""A job directory's markers → the `RunRecord` field of their modification time."""

_RUNS = r"""cd "$B" || exit 1
echo --markers--
find jobs -mindepth 2 -maxdepth 2 \( -name remote_id -o -name started -o -name exit_code \
    -o -name 'stderr.*.txt' \) -printf '%h %f %T@\n'
for mark in steps runs; do
    echo "--$mark--"
    [ $mark = steps ] && line=$STEP || line=$RUN
    find jobs -mindepth 2 -maxdepth 2 -name 'stderr*.txt' \
        -exec grep -c -H -F -e "$line" {} + || true
done
echo --tickets--
find pilot/done pilot/claimed -type f ! -name '.*' \
    -exec grep -H -e '^queued=' -e '^cores=' -e '^ended=' {} + 2>/dev/null || true
echo --end--"""


async def run_records(cerise: SlurmCerise) -> dict[str, RunRecord]:
    """Every run's record, by name, from one command."""
    result = await retried(lambda: cerise.remote.run(
        f"B={shlex.quote(cerise.base)} STEP={shlex.quote(STEP_ENDED)} "
        f"RUN={shlex.quote(RUN_ENDED)}\n{_RUNS}", timeout=600))
    if "--end--" not in result.stdout:
        raise SystemExit(f"the runs' records were not read: {result.stderr[-2000:]}")
    records: dict[str, dict[str, Any]] = {}
    section = ""
    for line in result.stdout.splitlines():
        if line.startswith("--"):
            section = line
        elif section == "--markers--":
            directory, name, mtime = line.rsplit(" ", 2)
            record = records.setdefault(directory.rsplit("/", 1)[-1], {"dead_attempts": []})
            if name.startswith("stderr."):
                record["dead_attempts"].append(float(mtime))
            else:
                record[MARKERS[name]] = float(mtime)
        elif section in ("--steps--", "--runs--"):
            path, _, count = line.rpartition(":")
            record = records.setdefault(path.split("/")[1], {"dead_attempts": []})
            key = "step_ends" if section == "--steps--" else "run_ends"
            record[key] = record.get(key, 0) + int(count)
            if section == "--steps--" and not path.endswith("/stderr.txt"):
                record["step_ends_dead"] = record.get("step_ends_dead", 0) + int(count)
        elif section == "--tickets--":
            path, _, entry = line.partition(":")
            key, _, text = entry.partition("=")
            record = records.setdefault(path.rsplit("/", 1)[-1], {"dead_attempts": []})
            if key == "queued":
                record["queued"] = float(text)
            elif key == "cores":
                record["cores"] = int(text)
            else:  # ended=<allocation> <time> <status>
                record["allocation"] = text.split(" ", 1)[0]
    return {name: RunRecord(name=name, **{**fields,
                                          "dead_attempts": tuple(sorted(fields["dead_attempts"]))})
            for name, fields in records.items()}


async def phases(cerise: SlurmCerise) -> dict[str, str]:
    """Each WorkflowJob's phase, by uid (the name of its job directory)."""
    found: dict[str, str] = {}
    async for job in cerise.client.list(WorkflowJob, namespace=NAMESPACE):
        assert job.metadata is not None and job.metadata.uid is not None
        found[job.metadata.uid] = (job.get("status") or {}).get("phase", "")
    return found


# --- the numbers ------------------------------------------------------------------------------

def quantiles(values: Sequence[float]) -> tuple[float, float, float]:
    """p50, p95 and max."""
    if len(values) == 1:
        return values[0], values[0], values[0]
    q = statistics.quantiles(values, n=20, method="inclusive")
    return statistics.median(values), q[18], max(values)


def milliseconds(values: Sequence[float]) -> str:
    p50, p95, top = quantiles(values)
    return f"p50 {p50 * 1000:.0f} ms, p95 {p95 * 1000:.0f} ms, max {top * 1000:.0f} ms"


def seconds(values: Sequence[float]) -> str:
    p50, p95, top = quantiles(values)
    return f"p50 {p50:.2f} s, p95 {p95:.2f} s, max {top:.2f} s"


def dispatch_delays(runs: Iterable[RunRecord],
                    allocations: dict[str, AllocationRecord]) -> list[float]:
    """Per run: from when it could start — its ticket queued, its allocation's agent up, a
    core free (the last moment before its start at which a run ending freed a core of a
    full allocation) — to its `started` marker. Runs here take one core each."""
    delays: list[float] = []
    by_allocation: dict[str, list[RunRecord]] = {}
    for run in runs:
        if run.started is not None and run.exited is not None and run.queued is not None:
            by_allocation.setdefault(run.allocation, []).append(run)
    for name, mine in by_allocation.items():
        allocation = allocations[name]
        events = sorted([(run.exited, 0, run) for run in mine if run.exited is not None]
                        + [(run.started, 1, run) for run in mine if run.started is not None],
                        key=lambda event: (event[0], event[1]))
        used, free_since = 0, allocation.agent or 0.0
        for when, starting, run in events:
            if not starting:
                if used - run.cores < allocation.cores <= used:
                    free_since = when
                used -= run.cores
                continue
            assert run.queued is not None
            delays.append(max(0.0, when - max(run.queued, allocation.agent or 0.0, free_since)))
            used += run.cores
    return delays


def run_times(runs: Iterable[RunRecord]) -> list[float]:
    """Each run's time from its `started` marker to its `exit_code`."""
    return [run.exited - run.started for run in runs
            if run.started is not None and run.exited is not None]


def busy_core_seconds(runs: Iterable[RunRecord], allocation: str = "") -> float:
    return sum((run.exited - run.started) * run.cores for run in runs
               if run.started is not None and run.exited is not None
               and (not allocation or run.allocation == allocation))


# --- the scenarios ----------------------------------------------------------------------------

@dataclass(frozen=True)
class Outcome:
    wall: float
    submits: float
    began: float
    """When the first WorkflowJob was created (epoch seconds: the resource's clock is ours)."""
    dispatch: Sequence[float] = ()
    """Each run's dispatch overhead (`dispatch_delays`)."""


class Finals:
    """When each WorkflowJob was first seen in a final phase, from a watch (which costs the
    machine less than scraping the operator's metrics every fraction of a second)."""

    def __init__(self, cerise: SlurmCerise) -> None:
        self.cerise = cerise
        self.seen: dict[str, float] = {}
        """Job name → time.monotonic() when first seen final."""

    async def follow(self) -> None:
        async for _, job in self.cerise.client.watch(WorkflowJob, namespace=NAMESPACE):
            assert job.metadata is not None and job.metadata.name is not None
            if (job.get("status") or {}).get("phase") in FINAL:
                self.seen.setdefault(job.metadata.name, time.monotonic())

    async def until(self, count: int, timeout: float) -> float:
        """Wait until `count` jobs are final; when the last of them was seen final."""
        deadline = time.monotonic() + timeout
        while len(self.seen) < count:
            if time.monotonic() > deadline:
                raise SystemExit(f"only {len(self.seen)} of {count} runs final after "
                                 f"{timeout:g} s")
            await asyncio.sleep(0.05)
        return max(self.seen.values())


async def create_and_wait(cerise: SlurmCerise, count: int, delay: int) -> Outcome:
    """Create `count` runs and wait until all are final: the seconds from the first one
    created to the last one final, and the batch jobs submitted meanwhile."""
    before = await submitted(cerise)
    created: dict[str, float] = {}
    finals = Finals(cerise)
    following = asyncio.create_task(finals.follow())
    try:
        creating = asyncio.create_task(cerise.create_jobs(
            (f"run-{i}" for i in range(count)), delay=delay, created=created))
        ended = await finals.until(count, timeout=300 + 30 * count)
        await creating
    finally:
        following.cancel()
    submits = await submitted(cerise) - before
    first = min(created.values())
    return Outcome(ended - first, submits, first + time.time() - time.monotonic())


async def submitted(cerise: SlurmCerise) -> float:
    """Batch jobs the operator submitted for the resource so far."""
    return resource_value(await asyncio.to_thread(cerise.scrape), SUBMITS, kind="submit")


async def final_phases(cerise: SlurmCerise) -> str:
    found = await asyncio.to_thread(cerise.phases)
    return str({phase: int(n) for phase, n in sorted(found.items()) if n})


async def batch(args: argparse.Namespace, work: Path) -> Outcome:
    async with slurm_cerise(work, refresh=args.refresh, cwltool=True) as cerise:
        load = Load()
        outcome = await create_and_wait(cerise, args.runs, 0)
        print(f"(a) one batch job per run: {args.runs} runs, wall {outcome.wall:.1f} s "
              f"({args.runs / outcome.wall:.2f} runs/s); final phases {await final_phases(cerise)}")
        print(f"    batch jobs submitted: {outcome.submits:.0f} "
              f"({outcome.submits / args.runs:.3f} per run)")
        print(f"    {load.summary(named(cerise))}", flush=True)
        # The node as one allocation whose runs are queued when their submit recorded an id.
        node = AllocationRecord(name="node", cores=cerise.slurm.cpus)
        runs = [replace(run, queued=run.submitted, allocation=node.name)
                for run in (await run_records(cerise)).values()]
        dispatch = dispatch_delays(runs, {node.name: node})
        print(f"    Slurm's dispatch overhead, could start (submitted, a core free) -> started: "
              f"{milliseconds(dispatch)}")
        print(f"    a run, started -> exit code (cwltool and `sleep 0`): "
              f"{seconds(run_times(runs))}", flush=True)
        return replace(outcome, dispatch=dispatch)


def named(cerise: SlurmCerise) -> dict[int, str]:
    """Names for the processes of the benchmark and its operator (both python3)."""
    daemon = cerise.operator.daemon
    found = {os.getpid(): "benchmark"}
    if daemon is not None and daemon.pid:
        found[daemon.pid] = "operator"
    return found


async def pilot(args: argparse.Namespace, work: Path) -> Outcome:
    limit = args.allocation_seconds or 1800 + 10 * args.runs
    # No `cores`: an allocation then has coresPerNode, which the harness sets to the node's.
    async with slurm_cerise(work, refresh=args.refresh, cwltool=True, jobs_spec={"pilot": {
            "maxAllocations": 1, "timeLimitSeconds": limit, "idleSeconds": args.idle}},
            ) as cerise:
        cores = cerise.slurm.cpus
        load = Load()
        watch = AllocationWatch(cerise)
        watching = asyncio.create_task(watch.follow(1.0))
        try:
            outcome = await create_and_wait(cerise, args.runs, 0)
        finally:
            watching.cancel()
        print(f"(b) pilot mode, 1 allocation of {cores} cores: {args.runs} runs, wall "
              f"{outcome.wall:.1f} s ({args.runs / outcome.wall:.2f} runs/s); final phases "
              f"{await final_phases(cerise)}")
        print(f"    batch jobs submitted: {outcome.submits:.0f} "
              f"({outcome.submits / args.runs:.4f} per run, goal <= 0.01)")
        print(f"    {load.summary(named(cerise))}", flush=True)
        await watch.until_all_ended(timeout=args.idle + 120)
        runs = list((await run_records(cerise)).values())
        dispatch = report_allocation(runs, watch.seen, outcome.began)
        await report_runner(cerise, runs, args.runs, outcome.wall)
        return replace(outcome, dispatch=dispatch)


def report_allocation(runs: Sequence[RunRecord], allocations: dict[str, AllocationRecord],
                      began: float) -> list[float]:
    """The runs' dispatch and the allocations' use, as measured on the resource (`began`:
    when the first WorkflowJob was created); the runs' dispatch overheads."""
    if not allocations:
        raise SystemExit("no allocation was seen")
    first = min((run.queued for run in runs if run.queued is not None), default=began)
    allocation = min(allocations.values(), key=lambda a: a.submitted or float("inf"))
    print(f"    after the first WorkflowJob was created: the first ticket queued at "
          f"+{first - began:.1f} s, the first allocation submitted at "
          f"+{(allocation.submitted or began) - began:.1f} s and started at "
          f"+{(allocation.started or began) - began:.1f} s")
    waits = [run.started - run.queued for run in runs
             if run.started is not None and run.queued is not None]
    print(f"    ticket queued -> started, waiting for a free core included: {seconds(waits)}")
    dispatch = dispatch_delays(runs, allocations)
    print(f"    dispatch overhead, could start -> started: {milliseconds(dispatch)} "
          f"(goal: p95 <= 100 ms)")
    print(f"    a run, started -> exit code (cwltool and `sleep 0`): "
          f"{seconds(run_times(runs))}")
    held = busy = 0.0
    for name, allocation in sorted(allocations.items()):
        if allocation.started is None or allocation.ended is None:
            print(f"    allocation {name} ({allocation.remote_id}): never ran")
            continue
        life = allocation.ended - allocation.started
        used = busy_core_seconds(runs, name)
        held, busy = held + allocation.cores * life, busy + used
        last = max((run.exited for run in runs if run.allocation == name and run.exited),
                   default=allocation.ended)
        share = used / max(allocation.cores * life, 1e-9)
        working = used / max(allocation.cores * (last - allocation.started), 1e-9)
        print(f"    allocation {name} (Slurm job {allocation.remote_id}, {allocation.cores} "
              f"cores): lived {life:.1f} s, ended {allocation.end_reason or '?'} "
              f"{allocation.ended - last:.1f} s after its last run's end (end time from "
              f"{allocation.end_source}); runs used {share:.1%} of its core-seconds, "
              f"{working:.1%} up to its last run's end")
    if len(allocations) > 1 and held:
        print(f"    all allocations: runs used {busy / held:.1%} of their core-seconds")
    print(f"    share of allocated core-seconds running runs: "
          f"{busy / held if held else 0.0:.1%} (goal: >= 90 %)", flush=True)
    return dispatch


_RUNNER_COST = r"""TIMEFORMAT='%R %U %S'
for _ in 1 2 3; do
    d=$(mktemp -d) || exit 1
    { time (cd "$d" && cwltool "$W" "$I" > /dev/null 2>&1); } 2>&1
    rm -rf -- "$d"
done"""


async def report_runner(cerise: SlurmCerise, runs: Sequence[RunRecord], count: int,
                        wall: float) -> None:
    """What cwltool alone costs for one of the runs (three times, one after another)."""
    files = JobFiles(f"{cerise.base}/jobs/{runs[0].name}")
    result = await retried(lambda: cerise.remote.run(
        f"W={shlex.quote(files.workflow)} I={shlex.quote(files.input)}\n{_RUNNER_COST}"))
    times = [[float(n) for n in line.split()] for line in result.stdout.splitlines()
             if len(line.split()) == 3]
    if not times:
        print(f"    cwltool alone: not measured ({result.stderr[-500:]})")
        return
    real = statistics.median(t[0] for t in times)
    cpu = statistics.median(t[1] + t[2] for t in times)
    cores = cerise.slurm.cpus
    print(f"    cwltool alone on one run's files, 3 times in a row: wall p50 {real:.2f} s, CPU "
          f"(user + sys) p50 {cpu:.2f} s; {count} runs need {count * cpu:.0f} CPU-s, at least "
          f"{count * cpu / cores:.0f} s on {cores} cores = {count * cpu / cores / wall:.0%} "
          f"of (b)'s wall time", flush=True)


# --- an allocation killed ---------------------------------------------------------------------

class JobScripts:
    """The runs' job scripts running on this machine (the resource's sshd is local), sampled
    from /proc: each run's outermost `bash <job dir>/job.sh` processes (a job script's own
    forks are its children and do not count)."""

    def __init__(self, jobs_dir: str) -> None:
        self.prefix = jobs_dir.rstrip("/").encode() + b"/"
        self.pids: dict[str, set[int]] = {}
        """Each run's job script processes ever seen: its starts."""
        self.most: Counter[str] = Counter()
        """Each run's most job scripts seen at once."""

    def sample(self) -> None:
        found: dict[int, tuple[str, int]] = {}
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit():
                continue
            try:
                argv = Path(entry.path, "cmdline").read_bytes().split(b"\0")
                if len(argv) < 2 or not argv[1].startswith(self.prefix) \
                        or not argv[1].endswith(b"/job.sh"):
                    continue
                parent = int(Path(entry.path, "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):  # gone meanwhile
                continue
            run = argv[1][len(self.prefix):].split(b"/", 1)[0].decode()
            found[int(entry.name)] = (run, parent)
        now: Counter[str] = Counter()
        for pid, (run, parent) in found.items():
            if found.get(parent, ("", 0))[0] != run:
                self.pids.setdefault(run, set()).add(pid)
                now[run] += 1
        for run, running in now.items():
            self.most[run] = max(self.most[run], running)

    async def follow(self, interval: float) -> None:
        while True:
            await asyncio.to_thread(self.sample)
            await asyncio.sleep(interval)


async def mid_batch(finals: Finals, watch: AllocationWatch,
                    count: int) -> tuple[AllocationRecord, int]:
    """Wait until a third of the runs ended and an allocation holds a run, preferably with
    both allocations running; that allocation, and the runs ended by then."""
    while True:
        present = await watch.look()
        ended = len(finals.seen)
        running = [a for a in present.values() if a.agent is not None and a.ended is None]
        holding = sorted((a for a in running if a.claims), key=lambda a: -a.claims)
        if holding and ended >= count // 3 and (len(running) > 1 or ended >= 2 * count // 3):
            return holding[0], ended
        if ended >= count:
            raise SystemExit("every run ended before an allocation could be killed under one")
        await asyncio.sleep(0.5)


async def killed(args: argparse.Namespace, work: Path) -> None:
    count = args.killed
    async with slurm_cerise(work, refresh=args.refresh, cwltool=True, jobs_spec={"pilot": {
            "cores": 1, "maxAllocations": 2, "timeLimitSeconds": 3600,
            "idleSeconds": args.idle}}) as cerise:
        load = Load()
        before = await submitted(cerise)
        watch, scripts = AllocationWatch(cerise), JobScripts(f"{cerise.base}/jobs")
        finals = Finals(cerise)
        sampling = asyncio.create_task(scripts.follow(0.2))
        following = asyncio.create_task(finals.follow())
        try:
            created: dict[str, float] = {}
            creating = asyncio.create_task(cerise.create_jobs(
                (f"run-{i}" for i in range(count)), delay=args.kill_delay, created=created))
            target, ended = await mid_batch(finals, watch, count)
            await retried(lambda: cerise.slurm_command(
                f"scancel {shlex.quote(target.remote_id)}"))
            wall = await finals.until(count, timeout=600 + 30 * count) - min(created.values())
            await creating
        finally:
            sampling.cancel()
            following.cancel()
        submits = await submitted(cerise) - before
        runs, phase = await run_records(cerise), await phases(cerise)
        lost = sorted(name for name, p in phase.items() if p != "Success")
        starts = Counter(runs[name].starts if name in runs else 0 for name in phase)
        seen = Counter(len(scripts.pids.get(name, ())) for name in phase)
        complete = Counter(runs[name].run_ends if name in runs else 0 for name in phase)
        twice = [name for name in phase if name in runs and runs[name].run_ends > 1]
        steps_again = [run for run in runs.values() if run.step_ends_dead]
        together = [name for name in phase if scripts.most[name] > 1]
        gaps = [run.started - run.dead_attempts[-1] for run in runs.values()
                if run.dead_attempts and run.started is not None]
        print(f"killed: {count} runs of `sleep {args.kill_delay}` in pilot mode, 2 allocations "
              f"of 1 core; scancel of allocation {target.name} (Slurm job {target.remote_id}) "
              f"holding {target.claims} run(s) after {ended} runs had ended")
        print(f"    wall {wall:.1f} s; final phases {await final_phases(cerise)}; batch jobs "
              f"submitted: {submits:.0f} (allocations)")
        print(f"    runs lost (not Success): {len(lost)} (goal 0) {lost or ''}")
        print(f"    starts per run (1 + logs of attempts that died, stderr.<n>.txt): "
              f"{dict(sorted(starts.items()))}")
        print(f"    starts per run seen in /proc (its job script, sampled every 0.2 s): "
              f"{dict(sorted(seen.items()))}")
        print(f"    complete executions per run ('{RUN_ENDED}' in all its logs): "
              f"{dict(sorted(complete.items()))}")
        print(f"    runs run twice: {len(twice)} completed twice, {len(together)} with two job "
              f"scripts at once (goal 0 and 0) {twice + together or ''}")
        if steps_again:
            dead_log = f"{cerise.base}/jobs/{steps_again[0].name}/stderr.1.txt"
            tail = await retried(lambda: cerise.remote.run(f"tail -n 3 {shlex.quote(dead_log)}"))
            print(f"    runs whose step had ended in an attempt that died, so that the step ran "
                  f"to its end again: {len(steps_again)}; the end of one's dead attempt's log:")
            print("      " + tail.stdout.strip().replace("\n", "\n      "))
        if gaps:
            print(f"    a requeued run started again {min(gaps):.1f} s (at the least) after its "
                  f"dead attempt's log last changed")
        print(f"    {load.summary(named(cerise))}", flush=True)


# --- main -------------------------------------------------------------------------------------

async def main(args: argparse.Namespace) -> None:
    chosen = args.scenarios.split(",")
    print(f"{' '.join(sys.argv)}: --runs {args.runs} --killed {args.killed} --refresh "
          f"{args.refresh:g} --idle {args.idle}; {datetime.now():%Y-%m-%d %H:%M}", flush=True)
    with tempfile.TemporaryDirectory(prefix="cerise-pilot-") as temporary:
        work = Path(temporary)
        outcomes: dict[str, Outcome] = {}
        for name, scenario in (("batch", batch), ("pilot", pilot)):
            if name in chosen:
                (work / name).mkdir()
                outcomes[name] = await scenario(args, work / name)
        if len(outcomes) == 2:
            pilot_run, batch_run = outcomes["pilot"], outcomes["batch"]
            ratio = pilot_run.wall / batch_run.wall
            print(f"wall time, pilot / batch: {ratio:.2f} (batch takes {1 / ratio:.2f}x as long)")
            (p50, p95, _), (b50, b95, _) = (quantiles(pilot_run.dispatch),
                                           quantiles(batch_run.dispatch))
            print(f"dispatch overhead, pilot / Slurm: p50 {p50 / b50:.3f}, p95 {p95 / b95:.3f}")
        if "killed" in chosen:
            (work / "killed").mkdir()
            await killed(args, work / "killed")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1000, help="runs of (a) and (b)")
    parser.add_argument("--killed", type=int, default=50, help="runs of the killed scenario")
    parser.add_argument("--kill-delay", type=int, default=2,
                        help="seconds each run of the killed scenario sleeps")
    parser.add_argument("--scenarios", default="batch,pilot,killed")
    parser.add_argument("--refresh", type=float, default=0.5)
    parser.add_argument("--idle", type=int, default=10,
                        help="idleSeconds: an allocation without runs this long ends itself")
    parser.add_argument("--allocation-seconds", type=int, default=0,
                        help="timeLimitSeconds of (b)'s allocation (default 1800 + 10 per run)")
    asyncio.run(main(parser.parse_args()))
