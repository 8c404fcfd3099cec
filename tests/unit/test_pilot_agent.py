"""The pilot agent, run by a real bash on this machine over local job directories.

What an allocation's batch job adds (the scheduler's signals) is covered by the
integration tests against Slurm and Grid Engine; here the agent's own loop: claiming,
cores, time left, cancel, time limits, idling, termination and the run lock.
"""

from __future__ import annotations

import fcntl
import os
import signal
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from cerise.devenv.process import wait_until
from cerise.remote.pilot import layout
from cerise.remote.pilot.agent import AgentSettings, allocation_request
from cerise.remote.pilot.queue import Location
from cerise.remote.pilot.status import EndReason, RunVerdict
from cerise.remote.schedulers import JobRef
from tests.unit.test_pilot_queue import LocalPilot, bash, local_pilot

FAST = AgentSettings(cores=1, time_limit=3600, idle=30, poll=0.01, slow_poll=0.05)
COUNT = 'echo "$(date +%s.%N) $$" >> ../starts'
"""Runner text recording each start of the run (its work directory is per run)."""


@pytest.fixture
def pilot(tmp_path: Path) -> Iterator[LocalPilot]:
    yield from local_pilot(tmp_path)


def starts(run: JobRef) -> list[str]:
    path = Path(run.files.job_dir, "starts")
    return path.read_text().splitlines() if path.exists() else []


def wait_for_exit_code(run: JobRef, timeout: float = 30) -> int:
    path = Path(run.files.exit_code)
    wait_until(path.exists, timeout=timeout, what=f"the exit code of {run.files.job_dir}")
    return int(path.read_text())


def wait_for_location(pilot: LocalPilot, run: JobRef, where: Location,
                      timeout: float = 30) -> None:
    wait_until(lambda: pilot.location(run) is where, timeout=timeout,
               what=f"{run.files.job_dir} to be {where}")


def test_runs_run_once_each_as_their_job_script_says(pilot: LocalPilot) -> None:
    runs = [pilot.run(f"{COUNT}; echo out-{index}; exit {index % 3}") for index in range(12)]
    pilot.start_agent("a", FAST)
    for run in runs:
        wait_for_location(pilot, run, Location.DONE)
    seen = pilot.status(runs)
    for index, run in enumerate(runs):
        assert seen.runs[run.key].verdict is RunVerdict.DONE
        assert seen.runs[run.key].exit_code == index % 3
        assert seen.runs[run.key].ticket.allocation == "a"
        assert Path(run.files.stdout).read_text() == f"out-{index}\n"
        assert len(starts(run)) == 1


def test_the_oldest_run_starts_first(pilot: LocalPilot) -> None:
    runs = [pilot.run('echo "$(date +%s.%N)" > ../began') for _ in range(8)]
    pilot.start_agent("a", FAST)
    for run in runs:
        wait_for_location(pilot, run, Location.DONE)
    began = [float(Path(run.files.job_dir, "began").read_text()) for run in runs]
    assert began == sorted(began)


def test_two_agents_never_start_the_same_run(pilot: LocalPilot) -> None:
    runs = [pilot.run(COUNT) for _ in range(30)]
    for name in ("a", "b"):
        pilot.start_agent(name, AgentSettings(cores=2, idle=30, poll=0.005, slow_poll=0.01))
    for run in runs:
        wait_for_location(pilot, run, Location.DONE)
    assert [len(starts(run)) for run in runs] == [1] * len(runs)
    holders = {pilot.status([run]).runs[run.key].ticket.allocation for run in runs}
    assert holders == {"a", "b"}


def test_runs_share_the_cores_side_by_side(pilot: LocalPilot) -> None:
    body = 'echo "$(date +%s.%N) 1" >> ../span; sleep 0.5; echo "$(date +%s.%N) -1" >> ../span'
    wide = pilot.run(body, cores=2)
    narrow = [pilot.run(body) for _ in range(4)]
    pilot.start_agent("a", AgentSettings(cores=2, idle=30, poll=0.01))
    for run in [wide, *narrow]:
        wait_for_location(pilot, run, Location.DONE)
    lines = [line for run in [wide, *narrow]
             for line in Path(run.files.job_dir, "span").read_text().splitlines()]
    events = sorted((float(at), int(step)) for at, step in (line.split() for line in lines))
    running = peak = 0
    for _, step in events:
        running += step
        peak = max(peak, running)
    assert peak == 2, "two one-core runs should have run at once, and never more"


def test_a_run_longer_than_the_time_left_stays_queued(pilot: LocalPilot) -> None:
    settings = AgentSettings(cores=1, time_limit=120, margin=10, idle=30, poll=0.01)
    too_long = pilot.run(COUNT, time_limit=115)
    fits = pilot.run(COUNT, time_limit=100)
    allocation = pilot.start_agent("a", settings)
    wait_for_location(pilot, fits, Location.DONE)
    assert pilot.location(too_long) is Location.QUEUED
    assert starts(too_long) == []
    assert allocation.poll() is None


def test_an_idle_agent_ends_itself_saying_so(pilot: LocalPilot) -> None:
    run = pilot.run(COUNT)
    allocation = pilot.start_agent("a", AgentSettings(idle=1, poll=0.01, slow_poll=0.05))
    assert allocation.wait(timeout=30) == 0
    assert pilot.location(run) is Location.DONE
    sighting = pilot.status([]).allocations["a"]
    assert sighting.ended is EndReason.IDLE
    assert sighting.ended_at is not None and sighting.heartbeat is not None
    assert sighting.ended_at - sighting.heartbeat <= 1
    assert "no runs for 1 s: ending" in Path(pilot.layout.allocation("a").stderr).read_text()


def test_cancel_stops_that_run_only(pilot: LocalPilot) -> None:
    gate = pilot.base / "jobs" / "release"
    wait = f"{COUNT}; while [ ! -e ../../release ]; do sleep 0.05; done"
    doomed = pilot.run(f"{wait} & wait")
    other = pilot.run(wait)
    pilot.start_agent("a", AgentSettings(cores=2, idle=30, poll=0.01))
    wait_until(lambda: all(starts(run) for run in (doomed, other)), timeout=30,
               what="the runs to start")
    assert pilot.status([doomed]).runs[doomed.key].verdict is RunVerdict.RUNNING
    assert bash(pilot.queue.cancel_script([doomed])).returncode == 0
    assert wait_for_exit_code(doomed) == 143
    assert Path(doomed.files.terminated).read_text().startswith("TERM ")
    wait_for_location(pilot, doomed, Location.DONE)
    runner = starts(doomed)[0].split()[1]
    assert not Path(f"/proc/{runner}").exists(), "the cancelled runner lives on"
    assert pilot.location(other) is Location.CLAIMED
    gate.touch()
    assert wait_for_exit_code(other) == 0


def test_a_cancelled_ticket_is_never_started(pilot: LocalPilot) -> None:
    run = pilot.run(COUNT)
    name = layout.run_name(run.files)
    Path(pilot.layout.cancel).mkdir(parents=True, exist_ok=True)
    Path(pilot.layout.cancel, name).touch()  # as a cancel racing the claim leaves it
    pilot.start_agent("a", FAST)
    wait_for_location(pilot, run, Location.DONE)
    assert starts(run) == []
    assert pilot.status([run]).runs[run.key].verdict is RunVerdict.VANISHED
    assert bash(pilot.queue.forget_script([run])).returncode == 0


def test_a_run_past_its_time_limit_is_stopped(pilot: LocalPilot) -> None:
    run = pilot.run(f"{COUNT}; sleep 300", time_limit=1)
    pilot.start_agent("a", FAST)
    assert wait_for_exit_code(run) == 143
    started = int(Path(run.files.started).read_text())
    signal_name, at = Path(run.files.terminated).read_text().split()
    assert signal_name == "TERM" and int(at) - started >= 1
    wait_for_location(pilot, run, Location.DONE)


def test_terminated_agent_stops_its_runs_and_leaves_them_claimed(pilot: LocalPilot) -> None:
    run = pilot.run(f"{COUNT}; sleep 300")
    agent = pilot.start_agent("a", FAST)
    wait_until(lambda: bool(starts(run)), timeout=30, what="the run to start")
    agent.send_signal(signal.SIGTERM)
    assert agent.wait(timeout=30) == 143
    assert wait_for_exit_code(run) == 143
    seen = pilot.status([run])
    assert seen.runs[run.key].ticket.location is Location.CLAIMED
    assert seen.allocations["a"].ended is EndReason.TERMINATED
    assert seen.allocations["a"].runs == (layout.run_name(run.files),)


def test_runs_of_a_killed_agent_are_stopped_too(pilot: LocalPilot) -> None:
    run = pilot.run(f"{COUNT}; sleep 300")
    agent = pilot.start_agent("a", FAST)
    wait_until(lambda: bool(starts(run)), timeout=30, what="the run to start")
    agent.kill()
    agent.wait()
    assert wait_for_exit_code(run) == 143, "setpriv --pdeathsig should have stopped the run"
    assert pilot.location(run) is Location.CLAIMED


def test_a_run_whose_lock_is_held_is_given_back_and_run_later(pilot: LocalPilot) -> None:
    run = pilot.run(COUNT)
    with open(layout.run_lock(run.files), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        pilot.start_agent("a", FAST)
        log = Path(pilot.layout.allocation("a").stderr)
        wait_until(lambda: "given back" in log.read_text(), timeout=30, what="the give-back")
        assert pilot.location(run) in (Location.QUEUED, Location.CLAIMED)
        assert starts(run) == []
    began = time.monotonic()
    wait_for_location(pilot, run, Location.DONE)
    assert len(starts(run)) == 1
    assert time.monotonic() - began < 20


def test_the_heartbeat_says_what_the_agent_runs(pilot: LocalPilot) -> None:
    runs = [pilot.run(f"{COUNT}; sleep 300", cores=2), pilot.run(f"{COUNT}; sleep 300")]
    pilot.start_agent("a", AgentSettings(cores=3, idle=30, poll=0.01))
    wait_until(lambda: all(starts(run) for run in runs), timeout=30, what="the runs to start")
    wait_until(lambda: pilot.status([]).allocations["a"].cores_in_use == 3, timeout=10,
               what="the heartbeat")
    sighting = pilot.status([]).allocations["a"]
    assert sighting.cores == 3 and sighting.started is not None
    assert sighting.deadline == sighting.started + 3600
    assert set(sighting.runs) == {layout.run_name(run.files) for run in runs}
    assert sighting.heartbeat is not None and abs(sighting.heartbeat - time.time()) < 5


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_a_long_queue_of_runs_that_cannot_start_costs_the_agent_little(
    pilot: LocalPilot,
) -> None:
    template = pilot.run(COUNT, time_limit=1000)
    ticket = pilot.waiting_ticket(template)
    order = int(ticket.name.split(".")[0])
    for index in range(1000):  # copies of a ticket too long for the allocation
        ticket.with_name(f"{order - 1 - index}.long{index}").write_text(ticket.read_text())
    agent = pilot.start_agent("a", AgentSettings(cores=1, time_limit=600, idle=60, poll=0.01))
    wait_until(lambda: pilot.status([]).allocations["a"].heartbeat is not None, timeout=30,
               what="the agent")
    first = pilot.status([]).allocations["a"].heartbeat or 0
    before, began = cpu_seconds(agent.pid), time.monotonic()
    wait_until(lambda: (pilot.status([]).allocations["a"].heartbeat or 0) >= first + 3,
               timeout=30, what="three seconds of the agent's heartbeat")
    share = (cpu_seconds(agent.pid) - before) / (time.monotonic() - began)
    assert share < 0.15, f"the agent used {share:.0%} of a core"
    fits = pilot.run(COUNT)
    began = time.monotonic()
    wait_for_location(pilot, fits, Location.DONE)
    assert time.monotonic() - began < 5
    assert starts(template) == []


def processes_named(marker: str) -> list[int]:
    """The processes whose command line holds `marker`."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and marker.encode() in (entry / "cmdline").read_bytes():
                found.append(int(entry.name))
        except OSError:
            continue
    return found


@pytest.mark.parametrize("ignores_term", [False, True])
def test_a_cancelled_run_leaves_no_process_behind(pilot: LocalPilot, ignores_term: bool) -> None:
    """What a run's runner forked and left (an orphan, outside the run's process tree, as
    a tool started while the runner was being stopped) dies with the run."""
    marker = f"cerise-orphan-{uuid.uuid4().hex}"
    trap = "trap '' TERM; " if ignores_term else ""
    orphan = f"( ( {trap}exec -a {marker} sleep 300 ) & )"
    run = pilot.run(f"{COUNT}; {orphan}; while [ ! -e ../../release ]; do sleep 0.05; done")
    pilot.start_agent("a", AgentSettings(cores=1, idle=30, poll=0.01, kill_wait=1))
    try:
        wait_until(lambda: bool(processes_named(marker)), timeout=30, what="the orphan")
        assert bash(pilot.queue.cancel_script([run])).returncode == 0
        assert wait_for_exit_code(run) == 143
        wait_until(lambda: not processes_named(marker), timeout=15,
                   what="the run's orphan to be stopped")
        wait_for_location(pilot, run, Location.DONE)
    finally:
        for pid in processes_named(marker):
            os.kill(pid, signal.SIGKILL)


def test_a_run_that_ends_leaves_no_process_behind(pilot: LocalPilot) -> None:
    marker = f"cerise-orphan-{uuid.uuid4().hex}"
    run = pilot.run(f"{COUNT}; ( exec -a {marker} sleep 300 & ); exit 3")
    pilot.start_agent("a", FAST)
    try:
        assert wait_for_exit_code(run) == 3
        wait_for_location(pilot, run, Location.DONE)
        assert not processes_named(marker), "the run's orphan outlived it"
        assert pilot.status([run]).runs[run.key].exit_code == 3
    finally:
        for pid in processes_named(marker):
            os.kill(pid, signal.SIGKILL)


@pytest.mark.parametrize("suffix", ["$(touch pwned)", "`touch pwned`", "x]=$(touch pwned)",
                                    "a b", "x;touch pwned", ".."])
def test_a_ticket_name_the_operator_never_writes_is_left_alone(
        pilot: LocalPilot, suffix: str) -> None:
    hostile = pilot.run(COUNT)
    ticket = pilot.waiting_ticket(hostile)
    os.rename(ticket, ticket.with_name(f"{ticket.name}{suffix}"))
    fine = pilot.run(COUNT)
    pilot.start_agent("a", FAST)
    wait_for_location(pilot, fine, Location.DONE)
    assert pilot.status([fine]).runs[fine.key].exit_code == 0
    assert starts(hostile) == [], "a ticket with a name the operator never writes ran"
    assert not list(pilot.base.parent.rglob("pwned")), "bash ran code from a ticket's name"
    assert Path(pilot.layout.queue, f"{ticket.name}{suffix}").exists()


def test_an_allocation_is_never_rerun_by_its_scheduler() -> None:
    # A preempted allocation's runs go back into the pilot queue (`requeue`); a rerun of the
    # allocation by Slurm would find them claimed by its first run.
    assert allocation_request("a", FAST).rerun is False
