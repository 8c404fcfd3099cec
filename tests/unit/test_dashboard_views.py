"""What the dashboard shows of jobs and compute resources, from their bodies."""

from __future__ import annotations

from typing import Any

import pytest

from cerise.apiserver.routers import dashboard
from cerise.model.states import Phase

EXCHANGE = "http://localhost:29593/files/output/uid"


def job(phase: str | None, **status: Any) -> dict[str, Any]:
    return {"metadata": {"name": "count-1", "creationTimestamp": "2025-01-31T10:00:00Z"},
            "spec": {"name": "count", "computeResource": "hpc", "workflow": "w"},
            "status": {"phase": phase, **status} if phase else {}}


@pytest.mark.parametrize(("phase", "label", "tone", "cancellable"), [
    (None, "Waiting", "waiting", True),
    ("Waiting", "Running", "running", True),
    ("RunningCR", "Cancelling", "cancelled", False),
    ("Success", "Success", "success", False),
    ("SystemError", "System error", "failed", False),
])
def test_states(phase: str | None, label: str, tone: str, cancellable: bool) -> None:
    view = dashboard.job_view(job(phase))
    assert (view.label, view.tone, view.cancellable) == (label, tone, cancellable)


def test_details_name_the_running_steps() -> None:
    steps = [{"name": "a", "state": "Success", "startTime": "2025-01-31T10:00:01Z",
              "endTime": "2025-01-31T10:01:06Z"},
             {"name": "b", "state": "Running", "startTime": "2025-01-31T10:01:06Z"}]
    running = dashboard.job_view(job("Running", steps=steps))
    assert running.detail == "step b"
    assert running.steps_ended == 1
    assert running.steps[0].duration == "1 min 5 s"
    assert dashboard.job_view(job("Running")).detail == "starting"
    assert dashboard.job_view(job("StagingIn")).detail == "staging inputs in"
    # a killed runner leaves its steps Running in an ended job
    ended = dashboard.job_view(job("Cancelled", steps=steps, finishedAt="2025-01-31T12:00:00Z"))
    assert [step.tone for step in ended.steps] == ["success", "stopped"]
    assert (ended.detail, ended.duration) == ("", "2 h 0 min")


def test_outputs_link_files_in_arrays_and_directories() -> None:
    output = {
        "counts": {"class": "File", "location": f"{EXCHANGE}/counts.txt", "size": 2048},
        "parts": [{"class": "File", "location": f"{EXCHANGE}/a.txt", "basename": "a.txt"}],
        "dir": {"class": "Directory", "location": f"{EXCHANGE}/out", "basename": "out",
                "listing": [{"class": "File", "location": f"{EXCHANGE}/out/x", "size": 5}]},
        "total": 3,
        "odd": {"class": "File", "location": "javascript:alert(1)"},
    }
    assert dashboard.outputs(output) == [
        dashboard.OutputView("counts", "counts.txt", f"{EXCHANGE}/counts.txt", "2.0 kB"),
        dashboard.OutputView("parts", "a.txt", f"{EXCHANGE}/a.txt"),
        dashboard.OutputView("dir", "out/", f"{EXCHANGE}/out"),
        dashboard.OutputView("dir", "out/x", f"{EXCHANGE}/out/x", "5 B"),
        dashboard.OutputView("total", "3"),
        dashboard.OutputView("odd", "javascript:alert(1)"),  # shown, never a link
    ]


@pytest.mark.parametrize(("size", "shown"), [
    (0, "0 B"), (999, "999 B"), (1500, "1.5 kB"), (3_000_000, "3.0 MB"),
    (5 * 10**12, "5.0 TB"), (None, ""), (-1, ""), (True, ""),
])
def test_file_sizes(size: object, shown: str) -> None:
    assert dashboard.file_size(size) == shown


def test_resources() -> None:
    ssh = dashboard.resource_view({
        "metadata": {"name": "hpc"},
        "spec": {"jobs": {"protocol": "ssh", "host": "login.hpc", "port": 2222,
                          "scheduler": "slurm"}},
        "status": {"connected": False, "lastError": "connection refused",
                   "installedProjects": [{"name": "example", "version": "1.2.0"}]}})
    assert (ssh.host, ssh.scheduler, ssh.connection, ssh.tone) == (
        "login.hpc:2222", "slurm", "Not connected", "failed")
    assert (ssh.last_error, ssh.projects) == ("connection refused", [("example", "1.2.0")])
    local = dashboard.resource_view({"metadata": {"name": "local"},
                                     "spec": {"jobs": {"protocol": "local"}}})
    assert (local.host, local.scheduler, local.connection) == (
        "this machine", "none", "Not contacted yet")


def test_summary_counts_jobs_by_colour() -> None:
    counts = {Phase.SUCCESS: 2, Phase.RUNNING_CR: 1, Phase.SUBMITTED: 1, Phase.WAITING: 1}
    assert dashboard.summary(counts) == [
        ("running", "active", 2), ("success", "succeeded", 2), ("cancelled", "cancelled", 1)]


def test_a_name_stored_before_the_rules_is_shown_escaped() -> None:
    body = job("Success")
    body["spec"]["name"] = "invoice\u202etxt.exe\u2028next"
    assert dashboard.job_view(body).name == "invoice\\u202etxt.exe\\u2028next"
