"""Requeueing a run whose allocation ended, run by a real bash on local files."""

from __future__ import annotations

import fcntl
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from cerise.devenv.process import wait_until
from cerise.remote.pilot import agent, layout, requeue
from cerise.remote.pilot.agent import AgentSettings
from cerise.remote.pilot.queue import Location
from cerise.remote.pilot.requeue import RequeueOutcome, RequeueResult
from cerise.remote.schedulers import JobRef
from tests.unit.test_pilot_queue import LocalPilot, bash, local_pilot

FAST = AgentSettings(cores=1, idle=30, poll=0.01, slow_poll=0.05)
RUNNER = 'echo "run $(cat ../starts 2>/dev/null | wc -l)"; echo log >&2; echo x >> ../starts; '


@pytest.fixture
def pilot(tmp_path: Path) -> Iterator[LocalPilot]:
    yield from local_pilot(tmp_path)


def requeue_run(pilot: LocalPilot, run: JobRef, allocation: str) -> RequeueResult:
    done = bash(requeue.requeue_script(pilot.layout, run.files, allocation))
    return requeue.parse_requeue(done.returncode, done.stdout, done.stderr)


def orphan(pilot: LocalPilot, body: str) -> JobRef:
    """A run left claimed by allocation `a`, whose agent was terminated while it ran."""
    run = pilot.run(RUNNER + body)
    process = pilot.start_agent("a", FAST)
    wait_until(lambda: Path(run.files.job_dir, "starts").exists(), timeout=30, what="a start")
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=30) == 143
    assert pilot.location(run) is Location.CLAIMED
    return run


def test_a_requeued_run_runs_again_elsewhere_with_its_old_logs_kept(pilot: LocalPilot) -> None:
    gate = pilot.base / "jobs" / "second"
    run = orphan(pilot, "[ -e ../../second ] || sleep 300")
    remove = agent.removal_script(pilot.layout, "a")
    assert bash(remove).stdout == "", "an allocation holding a ticket was removed"
    assert requeue_run(pilot, run, "a") == RequeueResult(RequeueOutcome.REQUEUED, attempt=2)
    assert bash(remove).stdout == f"{agent.REMOVED_MARK}\n"
    assert not Path(pilot.layout.allocation("a").job_dir).exists()
    assert "a" not in pilot.status([]).allocations
    seen = pilot.status([run]).runs[run.key]
    assert seen.ticket.location is Location.QUEUED
    assert (seen.ticket.attempt, seen.ticket.died_in) == (2, ("a",))
    job = Path(run.files.job_dir)
    assert not any((job / marker).exists() for marker in ("started", "terminated", "exit_code"))
    assert (job / "stdout.1.txt").read_text() == "run 0\n"
    assert (job / "stderr.1.txt").read_text() == "log\n"
    gate.touch()
    pilot.start_agent("b", FAST)
    wait_until(lambda: pilot.location(run) is Location.DONE, timeout=30, what="the rerun")
    seen = pilot.status([run]).runs[run.key]
    assert (seen.exit_code, seen.ticket.allocation, seen.ticket.attempt) == (0, "b", 2)
    assert (job / "stdout.txt").read_text() == "run 1\n"


def test_requeue_waits_while_the_run_still_holds_its_lock(pilot: LocalPilot) -> None:
    run = orphan(pilot, "sleep 300")
    with open(layout.run_lock(run.files), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        assert requeue_run(pilot, run, "a").outcome is RequeueOutcome.BUSY
        assert pilot.location(run) is Location.CLAIMED
    assert requeue_run(pilot, run, "a").outcome is RequeueOutcome.REQUEUED


def test_requeue_is_done_once_whatever_is_repeated(pilot: LocalPilot) -> None:
    run = orphan(pilot, "sleep 300")
    name = layout.run_name(run.files)
    ticket = Path(pilot.layout.claimed("a"), name)
    # as a requeue cut short after rewriting the ticket leaves it
    ticket.write_text(ticket.read_text().replace("attempt=1", "attempt=2")
                      .replace("died_in=\n", "died_in=a\n"))
    assert requeue_run(pilot, run, "a") == RequeueResult(RequeueOutcome.REQUEUED, attempt=2)
    assert requeue_run(pilot, run, "a").outcome is RequeueOutcome.NOT_CLAIMED
    assert pilot.status([run]).runs[run.key].ticket.died_in == ("a",)


def test_requeue_reports_failures() -> None:
    assert requeue.parse_requeue(1, "", "cannot take x/run.lock") == RequeueResult(
        RequeueOutcome.FAILED, detail="cannot take x/run.lock")
    assert requeue.parse_requeue(0, "something else", "").outcome is RequeueOutcome.FAILED
