"""Scheduler plug-ins: status parsing on captured output, and the observation rules."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from cerise.remote import schedulers
from cerise.remote.jobscript import JobFiles
from cerise.remote.schedulers import JobRef, QueueState, RemoteState
from cerise.remote.schedulers.direct import DirectScheduler

JOBS = [
    JobRef("uid-1", JobFiles("/home/u/.cerise/jobs/uid-1"), "4101"),
    JobRef("uid-2", JobFiles("/home/u/.cerise/jobs/uid-2"), "4102"),
    JobRef("uid-3", JobFiles("/home/u/.cerise/jobs/uid-3"), "4103"),
]


@pytest.mark.parametrize(
    ("queue", "code", "expected"),
    [
        (QueueState.WAITING, None, RemoteState.WAITING),
        (QueueState.RUNNING, None, RemoteState.RUNNING),
        (QueueState.ABSENT, None, RemoteState.VANISHED),
        (QueueState.RUNNING, 0, RemoteState.DONE),
        (QueueState.ABSENT, 143, RemoteState.DONE),
    ],
)
def test_observe(queue: QueueState, code: int | None, expected: RemoteState) -> None:
    observation = schedulers.observe(queue, code)
    assert observation.state is expected
    assert observation.exit_code == code


def test_direct_status_from_captured_output() -> None:
    output = (
        " 4101 bash /home/u/.cerise/jobs/uid-1/job.sh\n"
        " 4102 /usr/bin/python3 something-else-reusing-the-pid\n"
        "--cerise-markers--\n"
        "uid-1 -\n"
        "uid-2 -\n"
        "uid-3 1\n"
    )
    observed = schedulers.parse_status(DirectScheduler(), output, JOBS)
    assert observed == {
        "uid-1": schedulers.Observation(RemoteState.RUNNING),
        "uid-2": schedulers.Observation(RemoteState.VANISHED),
        "uid-3": schedulers.Observation(RemoteState.DONE, 1),
    }


def test_direct_status_is_one_command_for_all_jobs() -> None:
    script = schedulers.status_script(DirectScheduler(), JOBS)
    assert script.count("ps ") == 1
    assert "-p 4101,4102,4103" in script


def test_direct_ignores_ids_that_are_not_pids() -> None:
    hostile = [JobRef("k", JobFiles("/j"), "1; rm -rf ~")]
    scheduler = DirectScheduler()
    assert scheduler.queue_script(hostile) == "true"
    assert scheduler.cancel_script(hostile) == "true"


def test_markers_script_quotes_paths() -> None:
    job = JobRef("k", JobFiles("/odd dir/$(x)"), "1")
    script = schedulers.markers_script([job])
    assert "'/odd dir/$(x)/exit_code'" in script


def test_garbled_marker_is_not_an_exit_code() -> None:
    output = "--cerise-markers--\nuid-1 garbage\n"
    observed = schedulers.parse_status(DirectScheduler(), output, JOBS[:1])
    assert observed["uid-1"].state is RemoteState.VANISHED


def test_markers_report_the_size_of_each_runner_log() -> None:
    output = (
        "--cerise-markers--\n"
        "uid-1 - 1234\n"
        "uid-2 0 0\n"
        "uid-3 -\n"
    )
    observed = schedulers.parse_status(DirectScheduler(), output, JOBS)
    assert [observed[j.key].log_size for j in JOBS] == [1234, 0, 0]
    assert observed["uid-2"] == schedulers.Observation(RemoteState.DONE, 0, 0)


def test_markers_script_measures_logs_with_a_real_shell(tmp_path: Path) -> None:
    done = JobFiles(str(tmp_path / "done"))
    Path(done.job_dir).mkdir()
    Path(done.stderr).write_text("INFO Final process status is success\n")
    Path(done.exit_code).write_text("0\n")
    jobs = [JobRef("done", done, "1"), JobRef("missing", JobFiles(str(tmp_path / "no")), "2")]
    output = subprocess.run(["bash", "-c", schedulers.markers_script(jobs)],
                            capture_output=True, text=True, check=True).stdout
    observed = schedulers.parse_status(DirectScheduler(), output, jobs)
    assert observed["done"] == schedulers.Observation(RemoteState.DONE, 0, 37)
    assert observed["missing"] == schedulers.Observation(RemoteState.VANISHED, None, 0)
