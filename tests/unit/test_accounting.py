"""What a run cost: sacct's lines, the job script's measurement and how they combine."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from cerise.devenv.process import wait_until
from cerise.model import accounting
from cerise.model.accounting import Figures, SacctJob, Source
from cerise.remote import accounting as remote_accounting
from cerise.remote import jobscript
from cerise.remote.accounting import Measured
from cerise.remote.jobscript import JobFiles
from tests.unit.command_stubs import run_with_stub


@pytest.mark.parametrize(("text", "seconds"), [
    ("00:01.234", 1.234),
    ("12:34.500", 754.5),
    ("01:02:03", 3723),
    ("1-02:03:04", 93784),
    ("2-00:00:00", 172800),
    ("00:00:00", 0),
    ("", None),
    ("INVALID", None),
    ("1-02:03", None),
])
def test_slurm_durations(text: str, seconds: float | None) -> None:
    assert accounting.duration(text) == (pytest.approx(seconds) if seconds is not None
                                         else None)


@pytest.mark.parametrize(("text", "size"), [
    ("1234K", 1234 * 1024),
    ("1.50M", 3 * 2**19),
    ("2G", 2 * 2**30),
    ("0", 0),
    ("512", 512),
    ("", None),
])
def test_sacct_sizes(text: str, size: int | None) -> None:
    assert accounting.size(text) == size


SACCT = """\
41|00:00:07|00:02.345||2|COMPLETED
41.batch|00:00:07|00:02.300|20480K|2|COMPLETED
41.extern|00:00:07|00:00.045|1024K|2|COMPLETED
42|1-00:00:01|1-02:00:00||4|CANCELLED by 1000
42.batch|1-00:00:01|10:00:00|1.5G|4|CANCELLED
42.0|23:00:00|16:00:00|2G|4|CANCELLED
43|00:00:03|00:00:00||1|RUNNING
43.batch|00:00:03|00:00:00||1|RUNNING
44|00:00:01|00:00:00||1|COMPLETED
44.batch|00:00:01|00:00.700|3000K|1|COMPLETED
44.extern|00:00:01|00:00:00|0|1|RUNNING
"""


def test_sacct_rows_combine_into_one_record_per_job() -> None:
    jobs = accounting.parse_sacct(SACCT)
    assert jobs["41"] == SacctJob(Figures(elapsed=7, cpu=2.345, max_rss=20480 * 1024, cores=2),
                                  final=True)
    assert jobs["42"] == SacctJob(Figures(elapsed=86401, cpu=93600, max_rss=2 * 2**30,
                                          cores=4), final=True)
    assert not jobs["43"].final, "a running job's figures are not final"
    assert jobs["44"].figures.cpu == pytest.approx(0.7), "an empty job CPU: its steps' sum"
    assert not jobs["44"].final, "a step still open: not final"


def test_lines_that_are_not_rows_are_skipped() -> None:
    output = "sacct: warning: something\n45|00:00:02|00:01.000||1|FAILED\n46.batch|x|y|z|1|R\n"
    assert set(accounting.parse_sacct(output)) == {"45"}


def test_sacct_says_when_accounting_is_off() -> None:
    assert accounting.sacct_disabled("Slurm accounting storage is disabled")
    assert not accounting.sacct_disabled("sacct: error: Problem talking to the database")


@pytest.mark.parametrize(("environment", "cores"), [
    ({"SLURM_JOB_CPUS_PER_NODE": "4(x2),2", "SLURM_CPUS_ON_NODE": "4"}, 10),
    ({"SLURM_CPUS_ON_NODE": "3"}, 3),
    ({"NSLOTS": "8"}, 8),
    ({"PBS_NP": "6"}, 6),
    ({"PBS_NUM_NODES": "2", "PBS_NUM_PPN": "3"}, 6),
    ({"CERISE_RUN_CORES": "2", "SLURM_CPUS_ON_NODE": "16"}, 2),
    ({"SLURM_CPUS_ON_NODE": "x"}, None),
    ({}, None),
])
def test_cores_from_the_schedulers_environment(environment: dict[str, str],
                                               cores: int | None) -> None:
    assert accounting.cores_from_environment(environment) == cores


def test_the_measurement_falls_back_to_the_cpus_it_could_use() -> None:
    line = json.dumps({"elapsed": 3.5, "cpu": 1.25, "maxRss": 4096, "env": {}, "usable": 2})
    assert accounting.parse_measurement(line) == Figures(3.5, 1.25, 4096, 2)
    assert accounting.parse_measurement("") is None
    assert accounting.parse_measurement("[1]") is None


def test_the_scheduler_wins_where_it_says_something() -> None:
    script = Figures(elapsed=10, cpu=5, max_rss=100, cores=1)
    assert accounting.combine(script, Figures(elapsed=11, cpu=None, max_rss=200, cores=2)) == (
        Figures(elapsed=11, cpu=5, max_rss=200, cores=2))
    assert accounting.combine(script, None) == script
    assert accounting.combine(None, None) is None


def test_a_retried_job_costs_all_its_attempts() -> None:
    runs = [Figures(elapsed=3600, cpu=100, max_rss=10, cores=2),
            Figures(elapsed=1800, cpu=50, max_rss=30, cores=4)]
    assert accounting.to_status(runs, Source.SACCT) == {
        "source": "sacct", "elapsedSeconds": 5400, "cpuSeconds": 150, "maxRssBytes": 30,
        "cores": 4, "coreHours": 4.0}
    assert accounting.to_status([Figures()], Source.JOBSCRIPT) is None
    assert accounting.to_status([], Source.JOBSCRIPT) is None


@pytest.fixture
def files(tmp_path: Path) -> JobFiles:
    job = tmp_path / "job 'x'"
    (job / "work").mkdir(parents=True)
    return JobFiles(str(job))


BURN = ("import time\nb = bytearray(64 << 20)\nfor i in range(0, len(b), 4096): b[i] = 1\n"
        "t = time.process_time()\nwhile time.process_time() - t < 0.3: pass\n")


def test_the_job_script_measures_its_runner_and_keeps_its_exit_status(
        files: JobFiles) -> None:
    Path(files.script).write_text(jobscript.job_script(
        files, ["bash", "-c", f"{sys.executable} -c \"$0\"; exit 3", BURN]))
    result = subprocess.run(["bash", files.script], env={**os.environ, "SLURM_CPUS_ON_NODE": "3"},
                            capture_output=True, timeout=60)
    assert result.returncode == 3
    figures = accounting.parse_measurement(Path(files.accounting).read_text())
    assert figures is not None and figures.cores == 3
    assert figures.cpu is not None and figures.cpu >= 0.3
    assert figures.max_rss is not None and figures.max_rss >= 64 << 20
    assert figures.elapsed is not None and figures.elapsed >= 0.3


def test_a_stopped_runner_still_ends_as_stopped(files: JobFiles) -> None:
    Path(files.script).write_text(
        jobscript.job_script(files, ["bash", "-c", "sleep 300", "runner"]))
    job = subprocess.Popen(["bash", files.script], start_new_session=True)
    wait_until(lambda: Path(files.started).exists(), timeout=10, what="job script")
    wait_until(lambda: subprocess.run(["pgrep", "-s", str(job.pid), "-x", "sleep"],
                                      capture_output=True).returncode == 0,
               timeout=10, what="the runner")
    os.kill(job.pid, signal.SIGTERM)
    assert job.wait(timeout=10) == 143
    assert Path(files.exit_code).read_text() == "143\n"
    assert accounting.parse_measurement(Path(files.accounting).read_text()) is not None
    assert subprocess.run(["pgrep", "-s", str(job.pid)], capture_output=True).stdout == b""


def test_without_python_the_runner_runs_unmeasured(files: JobFiles, tmp_path: Path) -> None:
    shims = tmp_path / "shims"
    shims.mkdir()
    (shims / "python3").write_text("#!/bin/sh\nexit 1\n")
    (shims / "python3").chmod(0o755)
    Path(files.script).write_text(jobscript.job_script(
        files, ["bash", "-c", "exit 4"], prologue=f"export PATH={shims}:$PATH"))
    assert subprocess.run(["bash", files.script], timeout=30).returncode == 4
    assert not Path(files.accounting).exists()


def test_only_the_first_job_of_a_resource_looks_for_python(tmp_path: Path) -> None:
    """`python3` may be a slow shim (pyenv's takes a tenth of a second): the jobs after the
    first start the interpreter it found at once, and look again when that one is gone."""
    shims = tmp_path / "shims"
    shims.mkdir()
    looks = tmp_path / "looks"
    (shims / "python3").write_text(f"#!/bin/sh\necho >> '{looks}'\nexec {sys.executable} \"$@\"\n")
    (shims / "python3").chmod(0o755)
    jobs = [JobFiles(str(tmp_path / "jobs" / f"job {n}")) for n in range(3)]
    for files in jobs:
        (Path(files.job_dir) / "work").mkdir(parents=True)
        Path(files.script).write_text(jobscript.job_script(
            files, ["bash", "-c", "exit 0"], prologue=f"export PATH={shims}:$PATH"))
    for files in jobs[:2]:
        assert subprocess.run(["bash", files.script], timeout=30).returncode == 0
        assert accounting.parse_measurement(Path(files.accounting).read_text()) is not None
    assert looks.read_text().count("\n") == 1, "the second job did not look for python3"
    Path(jobs[0].python).write_text(f"{tmp_path}/gone/python3\n")
    assert subprocess.run(["bash", jobs[2].script], timeout=30).returncode == 0
    assert accounting.parse_measurement(Path(jobs[2].accounting).read_text()) is not None
    assert looks.read_text().count("\n") == 2


def test_accounting_in_a_line_for_people() -> None:
    assert accounting.describe({
        "elapsedSeconds": 3723, "cpuSeconds": 2.345, "maxRssBytes": 20 * 2**20, "cores": 2,
        "coreHours": 2.0683, "source": "sacct"}) == (
        "elapsed 1:02:03, CPU 2.3 s, max RSS 20.0 MiB, 2 cores, 2.068 core-hours (sacct)")
    assert accounting.describe({"elapsedSeconds": 90061, "cores": 1, "source": "jobscript"}) == (
        "elapsed 1d 1:01:01, 1 core (jobscript)")


def test_settling_waits_for_sacct_to_close_the_record_then_gives_up() -> None:
    own = [Figures(elapsed=5, cpu=1, max_rss=10, cores=1)]
    open_record = [SacctJob(Figures(elapsed=2, cores=2), final=False)]
    closed = [SacctJob(Figures(elapsed=6, cpu=2, max_rss=None, cores=2), final=True)]
    assert accounting.settle(own, open_record, pilot=False, give_up=False) is None
    assert accounting.settle(own, [None], pilot=False, give_up=False) is None
    given_up = accounting.settle(own, open_record, pilot=False, give_up=True)
    assert given_up is not None and given_up.status == accounting.to_status(
        own, Source.JOBSCRIPT)
    settled = accounting.settle(own, closed, pilot=False, give_up=False)
    assert settled is not None and settled.status == {
        "source": "sacct", "elapsedSeconds": 6, "cpuSeconds": 2, "maxRssBytes": 10, "cores": 2,
        "coreHours": pytest.approx(12 / 3600)}
    pilot = accounting.settle(own, None, pilot=True, give_up=False)
    assert pilot is not None and pilot.status is not None and pilot.status["source"] == "pilot"


def measured_jobs(tmp_path: Path) -> list[Measured]:
    first = tmp_path / "job 'a'"
    first.mkdir()
    (first / "accounting.json").write_text(json.dumps(
        {"elapsed": 4.0, "cpu": 1.5, "maxRss": 2048, "env": {"SLURM_CPUS_ON_NODE": "2"}}) + "\n")
    return [Measured("a", [str(first / "accounting.json"), str(first / "accounting.json.2")],
                     ["41", "44"]),
            Measured("b", [str(tmp_path / "missing" / "accounting.json")])]


def test_one_read_gives_every_attempts_figures_and_one_sacct_for_all(tmp_path: Path) -> None:
    jobs = measured_jobs(tmp_path)
    run = run_with_stub(tmp_path, "sacct", remote_accounting.read_script(jobs), stdout=SACCT)
    assert run.calls == [["-j", "41,44", "-P", "-n", "-o",
                          "JobID,Elapsed,TotalCPU,MaxRSS,AllocCPUS,State"]]
    result = remote_accounting.parse_read(run.result.stdout, jobs)
    assert result.measured == {"a": [Figures(4.0, 1.5, 2048, 2), None], "b": [None]}
    assert result.sacct_answered and set(result.sacct) == {"41", "42", "43", "44"}


def test_sacct_off_or_failing_leaves_the_jobs_own_figures(tmp_path: Path) -> None:
    jobs = measured_jobs(tmp_path)
    run = run_with_stub(tmp_path, "sacct", remote_accounting.read_script(jobs),
                        stderr="Slurm accounting storage is disabled\n", status=1)
    result = remote_accounting.parse_read(run.result.stdout, jobs)
    assert result.sacct_disabled and not result.sacct_answered and result.sacct == {}
    assert result.measured["a"][0] == Figures(4.0, 1.5, 2048, 2)


def test_without_slurm_jobs_sacct_is_not_run(tmp_path: Path) -> None:
    jobs = [Measured("b", ["/nonexistent/accounting.json"])]
    run = run_with_stub(tmp_path, "sacct", remote_accounting.read_script(jobs))
    assert run.calls == []
    assert remote_accounting.parse_read(run.result.stdout, jobs).measured == {"b": [None]}


def test_a_read_without_sacct_still_gives_the_measurements(tmp_path: Path) -> None:
    jobs = measured_jobs(tmp_path)[:1]
    jobs = [Measured(jobs[0].key, jobs[0].measurements)]  # not a Slurm job
    run = run_with_stub(tmp_path, "sacct", remote_accounting.read_script(jobs))
    result = remote_accounting.parse_read(run.result.stdout, jobs)
    assert result.measured == {"a": [Figures(4.0, 1.5, 2048, 2), None]}
    assert not result.sacct_answered


def test_a_measurement_with_values_no_run_could_have_is_not_taken() -> None:
    odd = accounting.parse_measurement(
        '{"elapsed": Infinity, "cpu": NaN, "maxRss": 1e400, "usable": true}')
    assert odd == accounting.Figures()
