"""The pilot queue's hand-over, ticket lookup and cancel, run by a real bash on local files.

`LocalPilot` (used by the other `test_pilot_*` modules too) keeps a pilot layout under a
directory whose name a shell would trip over, makes job directories with real job
scripts, and runs the pilot's scripts and agents as bash processes on this machine.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from cerise.remote import jobscript, schedulers
from cerise.remote.jobscript import JobFiles, SubmitOutcome, SubmitResult
from cerise.remote.pilot import agent, layout, status
from cerise.remote.pilot.agent import AgentSettings
from cerise.remote.pilot.layout import InvalidName, PilotLayout
from cerise.remote.pilot.queue import Location, PilotQueue
from cerise.remote.pilot.status import PilotStatus
from cerise.remote.pilot.tickets import InvalidTicket
from cerise.remote.schedulers import JobRef, QueueState, Request

HOSTILE = "base with 'quotes' $(touch pwned) ; `x` \"y\""


def bash(script: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", "-c", script], capture_output=True, text=True,
                          timeout=timeout)


class LocalPilot:
    """A pilot layout on local files, its runs and its agents (killed at the end)."""

    def __init__(self, root: Path) -> None:
        self.base = root / HOSTILE
        self.layout = PilotLayout.under(str(self.base))
        self.queue = PilotQueue(self.layout)
        self.agents: list[subprocess.Popen[bytes]] = []

    def new_run(self, body: str) -> JobFiles:
        """A job directory whose job script runs `bash -c body` in its work directory."""
        files = JobFiles(str(self.base / "jobs" / uuid.uuid4().hex))
        Path(files.work).mkdir(parents=True)
        Path(files.script).write_text(jobscript.job_script(files, ["bash", "-c", body, "r"]))
        return files

    def hand_over(self, files: JobFiles, request: Request) -> SubmitResult:
        command = self.queue.submit_command(files, request)
        done = bash(jobscript.submit_script(files, command, wait_seconds=20))
        return jobscript.parse_submit(done.returncode, done.stdout, done.stderr)

    def run(self, body: str, *, cores: int = 1, time_limit: int = 60) -> JobRef:
        """A new run handed over into the queue."""
        files = self.new_run(body)
        result = self.hand_over(files, Request("cerise-test", cores, time_limit))
        assert result.outcome is SubmitOutcome.SUBMITTED, result
        return JobRef(uuid.uuid4().hex, files, result.remote_id)

    def start_agent(self, name: str, settings: AgentSettings) -> subprocess.Popen[bytes]:
        """The agent of allocation `name`, as its batch job would run it (in its own
        session here, so that the test can end it and all it started)."""
        files = self.layout.allocation(name)
        Path(files.work).mkdir(parents=True, exist_ok=True)
        script = Path(layout.agent_path(files))
        script.write_text(agent.agent_script(self.layout, name, settings))
        with open(files.stderr, "ab") as log:
            process = subprocess.Popen(["bash", str(script)], cwd=files.work, stderr=log,
                                       stdin=subprocess.DEVNULL, start_new_session=True)
        self.agents.append(process)
        return process

    def status(self, runs: Sequence[JobRef]) -> PilotStatus:
        script = status.status_script(self.queue, self.queue, [], runs)
        done = bash(script)
        assert done.returncode == 0, done.stderr
        return status.parse_status(self.queue, self.queue, done.stdout, [], runs)

    def waiting_ticket(self, run: JobRef) -> Path:
        """The run's ticket in the queue (`<order>.<run>`)."""
        found = list(Path(self.layout.queue).glob(f"*.{layout.run_name(run.files)}"))
        assert len(found) == 1, found
        return found[0]

    def take(self, run: JobRef, to: str) -> None:
        """Move a waiting ticket as an agent or a cancel would (`claimed/<alloc>`, `done`)."""
        target = Path(self.layout.root, to)
        target.mkdir(parents=True, exist_ok=True)
        os.rename(self.waiting_ticket(run), target / layout.run_name(run.files))

    def location(self, run: JobRef) -> Location:
        return self.status([run]).runs[run.key].ticket.location

    def stop(self) -> None:
        for process in self.agents:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


def local_pilot(root: Path) -> Iterator[LocalPilot]:
    """A `LocalPilot` under `root` for a fixture; its agents are stopped afterwards, and no
    path may have reached a shell unquoted."""
    local = LocalPilot(root)
    yield local
    local.stop()
    assert not list(root.rglob("pwned")), "a path reached a shell unquoted"


@pytest.fixture
def pilot(tmp_path: Path) -> Iterator[LocalPilot]:
    yield from local_pilot(tmp_path)


def test_hand_over_queues_a_ticket_and_records_its_id(pilot: LocalPilot) -> None:
    run = pilot.run("exit 0", cores=2, time_limit=90)
    name = layout.run_name(run.files)
    assert run.remote_id == f"pilot:{name}"
    assert Path(run.files.remote_id).read_text() == f"pilot:{name}\n"
    path = pilot.waiting_ticket(run)
    ticket = path.read_text().splitlines()
    assert ticket[:-2] == [f"job_script={run.files.script}",
                           f"output={run.files.job_dir}/scheduler.txt",
                           f"lock={run.files.job_dir}/run.lock",
                           "cores=2", "time_limit=90", "attempt=1", "died_in=",
                           "name=cerise-test"]
    order, queued = ticket[-2].removeprefix("order="), ticket[-1].removeprefix("queued=")
    assert path.name == f"{order}.{name}"
    assert order == queued.replace(".", "") and abs(float(queued) - time.time()) < 60
    seen = pilot.status([run]).runs[run.key]
    assert seen.ticket.location is Location.QUEUED
    assert seen.ticket.attempt == 1
    assert seen.verdict is status.RunVerdict.WAITING


def test_repeated_and_concurrent_hand_overs_queue_a_run_once(pilot: LocalPilot) -> None:
    files = pilot.new_run("exit 0")
    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(lambda _: pilot.hand_over(files, Request("x")), range(8)))
    assert {result.remote_id for result in results} == {layout.remote_id(files)}
    assert [name.split(".")[1] for name in os.listdir(pilot.layout.queue)] == [
        layout.run_name(files)]


def test_the_queue_lists_the_oldest_ticket_first(pilot: LocalPilot) -> None:
    runs = [pilot.run("exit 0") for _ in range(5)]
    names = [layout.run_name(run.files) for run in runs]
    assert [name.split(".")[1] for name in sorted(os.listdir(pilot.layout.queue))] == names


def test_the_queue_says_where_each_ticket_is(pilot: LocalPilot) -> None:
    queued, claimed, done, gone = (pilot.run("exit 0") for _ in range(4))
    pilot.take(claimed, "claimed/a-1")
    pilot.take(done, "done")
    pilot.waiting_ticket(gone).unlink()
    runs = [queued, claimed, done, gone]
    output = bash(pilot.queue.queue_script([])).stdout
    assert pilot.queue.parse_queue(output, runs) == {
        queued.key: QueueState.WAITING, claimed.key: QueueState.RUNNING,
        done.key: QueueState.ABSENT, gone.key: QueueState.ABSENT}
    tickets = {key: seen.ticket for key, seen in pilot.status(runs).runs.items()}
    assert tickets[queued.key].location is Location.QUEUED
    assert tickets[claimed.key].location is Location.CLAIMED
    assert tickets[claimed.key].allocation == "a-1"
    assert tickets[done.key].location is Location.DONE
    assert tickets[gone.key].location is Location.NOWHERE


def test_cancel_takes_a_queued_ticket_out_and_asks_for_a_claimed_one(
    pilot: LocalPilot,
) -> None:
    queued, claimed = pilot.run("exit 0"), pilot.run("exit 0")
    root, name = Path(pilot.layout.root), layout.run_name(claimed.files)
    pilot.take(claimed, "claimed/a")
    done = bash(pilot.queue.cancel_script([queued, claimed]))
    assert done.returncode == 0, done.stderr
    assert pilot.location(queued) is Location.CANCELLED
    assert pilot.status([queued]).runs[queued.key].verdict is status.RunVerdict.VANISHED
    assert (root / "cancel" / name).exists()
    assert not (root / "cancel" / layout.run_name(queued.files)).exists()


def test_forget_removes_tickets_out_of_play_but_not_claimed_ones(pilot: LocalPilot) -> None:
    cancelled, claimed = pilot.run("exit 0"), pilot.run("exit 0")
    bash(pilot.queue.cancel_script([cancelled]))
    pilot.take(claimed, "claimed/a")
    assert bash(pilot.queue.forget_script([cancelled, claimed])).returncode == 0
    assert pilot.location(cancelled) is Location.NOWHERE
    assert pilot.location(claimed) is Location.CLAIMED


def test_names_that_cannot_be_file_names_are_refused(pilot: LocalPilot) -> None:
    with pytest.raises(InvalidName, match="run name"):
        pilot.queue.submit_command(JobFiles(str(pilot.base / "jobs" / "a.b")), Request("x"))
    with pytest.raises(InvalidName, match="allocation name"):
        pilot.layout.allocation("a b")
    with pytest.raises(InvalidTicket, match="line break"):
        pilot.queue.submit_command(JobFiles(str(pilot.base / "jobs" / "ok")), Request("x\ny"))


def test_runs_poll_like_batch_jobs_through_the_queue(pilot: LocalPilot) -> None:
    """The queue is a scheduler plug-in: `schedulers.status_script`/`parse_status` read it."""
    run = pilot.run("exit 0")
    done = bash(schedulers.status_script(pilot.queue, [run]))
    observed = schedulers.parse_status(pilot.queue, done.stdout, [run])
    assert observed[run.key].state is schedulers.RemoteState.WAITING
