"""The pilot status: one script for allocations and runs, its parsing, and the verdicts."""

from __future__ import annotations

import signal
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from cerise.devenv.process import wait_until
from cerise.remote.failures import StatusUnavailable
from cerise.remote.jobscript import JobFiles
from cerise.remote.pilot import executor, layout, status
from cerise.remote.pilot.agent import AgentSettings
from cerise.remote.pilot.queue import Location, TicketSighting
from cerise.remote.pilot.status import (
    AllocationSighting,
    EndReason,
    PilotStatus,
    RunSighting,
    RunVerdict,
)
from cerise.remote.schedulers import JobRef, Observation, QueueState, RemoteState, Request
from tests.unit.test_pilot_queue import LocalPilot, bash, local_pilot

ALIVE = Observation(RemoteState.RUNNING)
GONE = Observation(RemoteState.DONE, 143)


@dataclass(frozen=True)
class ListedQueue:
    """A batch queue for the allocations that lists the ids it is given (a stand-in around
    the pure parsing; the real schedulers are the integration tests' business)."""

    running: tuple[str, ...] = ()
    fails: bool = False
    name = "listed"

    def submit_command(self, files: JobFiles, request: Request) -> str:
        raise NotImplementedError

    def queue_script(self, jobs: Sequence[JobRef]) -> str:
        if self.fails:
            return "echo 'the controller is down' >&2; exit 1"
        return "".join(f"echo {job_id}\n" for job_id in self.running) + "true"

    def parse_queue(self, output: str, jobs: Sequence[JobRef]) -> Mapping[str, QueueState]:
        listed = set(output.split())
        return {job.key: QueueState.RUNNING if job.remote_id in listed else QueueState.ABSENT
                for job in jobs}

    def cancel_script(self, jobs: Sequence[JobRef]) -> str:
        raise NotImplementedError


@pytest.fixture
def pilot(tmp_path: Path) -> Iterator[LocalPilot]:
    yield from local_pilot(tmp_path)


def poll(pilot: LocalPilot, queue: ListedQueue, allocations: Sequence[JobRef],
         runs: Sequence[JobRef]) -> PilotStatus:
    done = bash(status.status_script(queue, pilot.queue, allocations, runs))
    assert done.returncode == 0, done.stderr
    return status.parse_status(queue, pilot.queue, done.stdout, allocations, runs)


def sighting(location: Location, holder: str = "") -> TicketSighting:
    return TicketSighting(location, allocation=holder, attempt=1)


@pytest.mark.parametrize(("ticket", "exit_code", "verdict"), [
    (sighting(Location.QUEUED), None, RunVerdict.WAITING),
    (sighting(Location.INCOMING), None, RunVerdict.WAITING),
    (sighting(Location.CLAIMED, "alive"), None, RunVerdict.RUNNING),
    (sighting(Location.CLAIMED, "alive"), 0, RunVerdict.RUNNING),
    (sighting(Location.CLAIMED, "unknown"), None, RunVerdict.RUNNING),
    (sighting(Location.CLAIMED, "gone"), None, RunVerdict.REQUEUE),
    (sighting(Location.CLAIMED, "gone"), 143, RunVerdict.REQUEUE),
    (sighting(Location.CLAIMED, "gone"), 0, RunVerdict.DONE),
    (sighting(Location.CLAIMED, "gone"), 2, RunVerdict.DONE),
    (sighting(Location.DONE, "gone"), 143, RunVerdict.DONE),
    (sighting(Location.DONE, "alive"), None, RunVerdict.VANISHED),
    (sighting(Location.CANCELLED), None, RunVerdict.VANISHED),
    (sighting(Location.NOWHERE), None, RunVerdict.VANISHED),
    (sighting(Location.NOWHERE), 0, RunVerdict.DONE),
])
def test_verdicts(ticket: TicketSighting, exit_code: int | None, verdict: RunVerdict) -> None:
    allocations = {"alive": AllocationSighting("1", ALIVE), "gone": AllocationSighting("2", GONE)}
    assert status.judge(ticket, exit_code, allocations) is verdict


@pytest.mark.parametrize(("verdict", "markers", "seen"), [
    (RunVerdict.WAITING, Observation(RemoteState.WAITING), Observation(RemoteState.WAITING)),
    (RunVerdict.RUNNING, Observation(RemoteState.DONE, 0, 5, started=9, ended=10),
     Observation(RemoteState.RUNNING, None, 5, started=9)),
    (RunVerdict.DONE, Observation(RemoteState.DONE, 3, 5, started=9, ended=10),
     Observation(RemoteState.DONE, 3, 5, started=9, ended=10)),
    (RunVerdict.REQUEUE, Observation(RemoteState.RUNNING, started=9, signal="TERM",
                                     signalled_at=12),
     Observation(RemoteState.DONE, 143, started=9, signal="TERM", signalled_at=12)),
    (RunVerdict.REQUEUE, Observation(RemoteState.RUNNING, started=9),
     Observation(RemoteState.VANISHED, started=9)),
    (RunVerdict.VANISHED, Observation(RemoteState.VANISHED), Observation(RemoteState.VANISHED)),
])
def test_a_run_shows_to_the_operator_as_the_batch_job_it_stands_for(
    verdict: RunVerdict, markers: Observation, seen: Observation
) -> None:
    assert RunSighting(verdict, sighting(Location.CLAIMED), markers).observation == seen


def test_a_run_of_a_gone_allocation_is_to_be_requeued(pilot: LocalPilot) -> None:
    runs = [pilot.run("sleep 300"), pilot.run("sleep 300")]
    Path(pilot.layout.allocation("b").job_dir).mkdir(parents=True)
    agent = pilot.start_agent("a", AgentSettings(cores=1, idle=30, poll=0.01))
    wait_until(lambda: any(Path(run.files.started).exists() for run in runs), timeout=30,
               what="a run to start")
    running, waiting = runs if Path(runs[0].files.started).exists() else runs[::-1]
    agent.send_signal(signal.SIGTERM)
    assert agent.wait(timeout=30) == 143
    Path(pilot.layout.allocation("a").remote_id).write_text("7\n")
    allocations = [executor.allocation_ref(pilot.layout, "a", "7")]

    still = poll(pilot, ListedQueue(running=("7",)), allocations, runs)
    assert still.runs[running.key].verdict is RunVerdict.RUNNING
    assert still.runs[waiting.key].verdict is RunVerdict.WAITING
    assert not still.allocations["a"].gone

    after = poll(pilot, ListedQueue(), allocations, runs)
    seen = after.allocations["a"]
    assert seen.gone and seen.ended is EndReason.TERMINATED
    assert seen.runs == (layout.run_name(running.files),)
    assert after.runs[running.key].verdict is RunVerdict.REQUEUE
    assert after.runs[running.key].ticket.allocation == "a"
    assert after.runs[running.key].observation.exit_code == 143
    assert after.runs[waiting.key].verdict is RunVerdict.WAITING
    assert after.allocations["b"].observation is None and not after.allocations["b"].gone


def test_a_status_that_cannot_be_read_says_nothing(pilot: LocalPilot) -> None:
    run = pilot.run("exit 0")
    allocations = [executor.allocation_ref(pilot.layout, "a", "7")]
    script = status.status_script(ListedQueue(fails=True), pilot.queue, allocations, [run])
    with pytest.raises(StatusUnavailable, match="the controller is down"):
        status.parse_status(ListedQueue(), pilot.queue, bash(script).stdout, allocations, [run])
    whole = bash(status.status_script(ListedQueue(), pilot.queue, allocations, [run])).stdout
    for cut in (whole[: len(whole) // 2], whole.removesuffix(f"{status.END}\n")):
        with pytest.raises(StatusUnavailable, match="cut short"):
            status.parse_status(ListedQueue(), pilot.queue, cut, allocations, [run])
