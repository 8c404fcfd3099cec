"""The job script and the exactly-once submit script, run by a real bash on local files."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from cerise.devenv.process import wait_until
from cerise.remote import jobscript
from cerise.remote.jobscript import JobFiles, SubmitOutcome

HOSTILE = "job dir with 'quotes' $(touch pwned) ; `x` \"y\""


@pytest.fixture
def files(tmp_path: Path) -> JobFiles:
    job = tmp_path / HOSTILE
    (job / "work").mkdir(parents=True)
    (job / "workflow.json").write_text("{}")
    (job / "input.json").write_text("{}")
    return JobFiles(str(job))


def run_job(files: JobFiles, runner: list[str]) -> subprocess.CompletedProcess[str]:
    script = Path(files.script)
    script.write_text(jobscript.job_script(files, runner))
    return subprocess.run(["bash", str(script)], capture_output=True, text=True, timeout=30)


def test_job_script_runs_the_runner_in_work_and_records_markers(files: JobFiles) -> None:
    runner = ["bash", "-c", 'pwd; echo "args: $1 $2" >&2; exit 0', "runner"]
    result = run_job(files, runner)
    assert result.returncode == 0
    assert Path(files.stdout).read_text().strip() == files.work
    assert Path(files.stderr).read_text().strip() == f"args: {files.workflow} {files.input}"
    assert Path(files.exit_code).read_text() == "0\n"
    assert abs(int(Path(files.started).read_text()) - time.time()) < 60
    assert not list(Path(files.job_dir).parent.rglob("pwned"))


def test_job_script_records_the_runners_exit_code(files: JobFiles) -> None:
    result = run_job(files, ["bash", "-c", "exit 7"])
    assert result.returncode == 7
    assert Path(files.exit_code).read_text() == "7\n"


@pytest.mark.parametrize(("restart", "written"), [
    (None, ""), ("0", ""), ("1", " 1"), ("12", " 12"), ("1; touch pwned", ""), ("-1", ""),
])
def test_a_rerun_says_which_in_its_markers_and_clears_the_earlier_runs_end(
        files: JobFiles, restart: str | None, written: str) -> None:
    Path(files.exit_code).write_text("143\n")  # the preempted run's
    Path(files.terminated).write_text("TERM 1795659050\n")
    script = Path(files.script)
    script.write_text(jobscript.job_script(files, [
        "bash", "-c", 'test -e ../exit_code && echo "saw an end" >&2; exit 0'],
        restart_variable="SLURM_RESTART_COUNT"))
    env = {k: v for k, v in os.environ.items() if k != "SLURM_RESTART_COUNT"}
    if restart is not None:
        env["SLURM_RESTART_COUNT"] = restart
    result = subprocess.run(["bash", str(script)], capture_output=True, text=True, timeout=30,
                            env=env, cwd=files.work)
    assert result.returncode == 0
    assert Path(files.exit_code).read_text() == f"0{written}\n"
    started, *run = Path(files.started).read_text().split()
    assert abs(int(started) - time.time()) < 60 and " ".join(["", *run]) == written
    if written:  # a rerun: the earlier run's end is gone before it starts
        assert not Path(files.terminated).exists()
        assert Path(files.stderr).read_text() == ""
    assert not list(Path(files.job_dir).parent.rglob("pwned"))


def test_the_restart_variable_must_be_a_name(files: JobFiles) -> None:
    with pytest.raises(ValueError, match="not a variable name"):
        jobscript.job_script(files, ["true"], restart_variable="X; touch pwned")


def start_job(files: JobFiles, runner: list[str], prologue: str = "",
              env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    Path(files.script).write_text(jobscript.job_script(files, runner, prologue))
    job = subprocess.Popen(["bash", files.script], start_new_session=True,
                           env={**os.environ, **(env or {})})
    wait_until(lambda: Path(files.started).exists(), timeout=10, what="job script")
    return job


def left_in_session(job: subprocess.Popen[bytes]) -> str:
    """The live processes of the job's session (killed orphans may wait to be reaped)."""
    listing = subprocess.run(["ps", "-o", "stat=,pid=,args=", "-s", str(job.pid)],
                             capture_output=True, text=True).stdout
    return "".join(line for line in listing.splitlines(keepends=True)
                   if not line.startswith("Z"))


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGUSR2])
def test_terminated_job_records_the_signal_and_143_and_stops_the_runner(
    files: JobFiles, signum: signal.Signals
) -> None:
    job = start_job(files, ["bash", "-c", "sleep 300", "runner"])
    before = int(time.time())
    os.kill(job.pid, signum)
    assert job.wait(timeout=10) == 143
    assert Path(files.exit_code).read_text() == "143\n"
    name, at = Path(files.terminated).read_text().split()
    assert name == signum.name.removeprefix("SIG")
    # bash's %(%s)T reads time(), which Linux serves from a coarse clock that may still
    # be in the previous second when time.time() is past it
    assert before - 1 <= int(at) <= time.time()
    assert left_in_session(job) == "", "the runner outlived its job script"


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGUSR2])
def test_a_runner_signalled_before_its_script_counts_as_terminated(
    files: JobFiles, tmp_path: Path, signum: signal.Signals
) -> None:
    """A scheduler signals every process of the job; the runner may die before the script's
    trap runs, and the script's own signal may come after it stopped listening."""
    pid_file = tmp_path / "runner.pid"
    job = start_job(files, ["bash", "-c", f"echo $$ > {pid_file}; sleep 300", "runner"])
    wait_until(lambda: pid_file.exists() and pid_file.read_text().strip() != "", timeout=10,
               what="the runner")
    os.kill(int(pid_file.read_text()), signum)
    assert job.wait(timeout=10) == 143
    assert Path(files.terminated).read_text().split()[0] == signum.name.removeprefix("SIG")
    assert Path(files.exit_code).read_text() == "143\n"


def test_a_second_signal_to_the_group_cannot_stop_the_exit_code_being_written(
    files: JobFiles, tmp_path: Path
) -> None:
    """What `timeout` does (TERM to the child, then to its whole process group) and Slurm
    too (every process of the job): a signal reaching the `mv` that writes `exit_code`."""
    shims = tmp_path / "shims"
    shims.mkdir()
    slow_mv = shims / "mv"
    slow_mv.write_text(f"#!/bin/bash\ntouch {tmp_path}/moving\nsleep 1\nexec /bin/mv \"$@\"\n")
    slow_mv.chmod(0o755)
    job = start_job(files, ["bash", "-c", "sleep 300", "runner"],
                    prologue=f"export PATH={shims}:$PATH")
    os.kill(job.pid, signal.SIGTERM)
    wait_until(lambda: (tmp_path / "moving").exists(), timeout=10, what="the marker's mv")
    os.killpg(job.pid, signal.SIGTERM)
    assert job.wait(timeout=10) == 143
    assert Path(files.exit_code).read_text() == "143\n"


def test_a_signal_before_the_runner_starts_still_stops_it(files: JobFiles,
                                                          tmp_path: Path) -> None:
    Path(files.script).write_text(jobscript.job_script(
        files, ["bash", "-c", f"touch {tmp_path}/ran; sleep 300"],
        prologue=f"touch {tmp_path}/prologue; sleep 1"))
    job = subprocess.Popen(["bash", files.script], start_new_session=True)
    wait_until(lambda: (tmp_path / "prologue").exists(), timeout=10, what="the prologue")
    os.kill(job.pid, signal.SIGTERM)
    assert job.wait(timeout=10) == 143
    assert Path(files.terminated).read_text().startswith("TERM ")
    assert left_in_session(job) == ""


def test_its_own_time_limit_stops_the_runner_and_all_it_started(files: JobFiles) -> None:
    runner = ["bash", "-c", "sleep 300 & sleep 300; wait", "runner"]
    job = start_job(files, runner, env={jobscript.TIME_LIMIT_VARIABLE: "1"})
    assert job.wait(timeout=20) == 143
    started = int(Path(files.started).read_text())
    name, at = Path(files.terminated).read_text().split()
    assert name == "LIMIT"
    assert 1 <= int(at) - started <= 5
    assert Path(files.exit_code).read_text() == "143\n"
    assert left_in_session(job) == "", "the runner or its children outlived the limit"


def test_a_runner_within_its_time_limit_ends_as_usual(files: JobFiles) -> None:
    job = start_job(files, ["bash", "-c", "exit 5"], env={jobscript.TIME_LIMIT_VARIABLE: "60"})
    assert job.wait(timeout=20) == 5
    assert Path(files.exit_code).read_text() == "5\n"
    assert not Path(files.terminated).exists()


def test_time_limit_is_not_passed_on_to_the_runner(files: JobFiles) -> None:
    runner = ["bash", "-c", f'echo "[${jobscript.TIME_LIMIT_VARIABLE}]"']
    job = start_job(files, runner, env={jobscript.TIME_LIMIT_VARIABLE: "60"})
    assert job.wait(timeout=20) == 0
    assert Path(files.stdout).read_text() == "[]\n"


def test_directives_come_right_after_the_interpreter_line(files: JobFiles) -> None:
    script = jobscript.job_script(files, ["cwltool"], directives=["#PBS -l mem=4gb -A x"])
    assert script.startswith("#!/bin/bash\n#PBS -l mem=4gb -A x\n__cerise")
    for bad in ("#PBS -A x\ntouch pwned", "-A x", "#PBS \r"):
        with pytest.raises(ValueError, match="not a one-line directive"):
            jobscript.job_script(files, ["cwltool"], directives=[bad])


def submit_once(files: JobFiles, counter: Path, wait_seconds: int = 2) -> jobscript.SubmitResult:
    submit = f"echo submitted >> {counter}; echo 4242"
    script = jobscript.submit_script(files, submit, wait_seconds=wait_seconds)
    result = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=30)
    return jobscript.parse_submit(result.returncode, result.stdout, result.stderr)


def test_submit_records_the_id(files: JobFiles, tmp_path: Path) -> None:
    result = submit_once(files, tmp_path / "count")
    assert result == jobscript.SubmitResult(SubmitOutcome.SUBMITTED, remote_id="4242")
    assert Path(files.remote_id).read_text() == "4242\n"


def test_repeated_submit_returns_the_same_id_without_submitting(
    files: JobFiles, tmp_path: Path
) -> None:
    counter = tmp_path / "count"
    results = [submit_once(files, counter) for _ in range(3)]
    assert {r.remote_id for r in results} == {"4242"}
    assert counter.read_text() == "submitted\n"


def test_concurrent_submits_submit_exactly_once(files: JobFiles, tmp_path: Path) -> None:
    counter = tmp_path / "count"
    with ThreadPoolExecutor(max_workers=16) as pool:
        results = list(pool.map(lambda _: submit_once(files, counter, 20), range(16)))
    assert all(r.outcome is SubmitOutcome.SUBMITTED and r.remote_id == "4242" for r in results)
    assert counter.read_text() == "submitted\n"


def test_failed_submit_releases_the_lock_for_a_retry_that_looks_first(
        files: JobFiles, tmp_path: Path) -> None:
    script = jobscript.submit_script(files, "echo 'sbatch: error: invalid partition' >&2; false")
    failed = subprocess.run(["bash", "-c", script], capture_output=True, text=True)
    result = jobscript.parse_submit(failed.returncode, failed.stdout, failed.stderr)
    assert result.outcome is SubmitOutcome.FAILED
    assert result.detail == "sbatch: error: invalid partition"
    assert not Path(files.lock).exists()
    # The failure may have created the job: the retry says to look for it first, and
    # holds the lock meanwhile.
    counter = tmp_path / "count"
    assert submit_once(files, counter).outcome is SubmitOutcome.LOOK_UP
    assert Path(files.lock).is_dir() and not counter.exists()
    assert lookup(files).outcome is SubmitOutcome.LOOK_UP
    # Nothing found: the caller submits with the lock it holds.
    script = jobscript.submit_script(files, f"echo submitted >> {counter}; echo 4242",
                                     looked_up=True)
    done = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=30)
    assert jobscript.parse_submit(done.returncode, done.stdout, done.stderr).remote_id == "4242"
    assert submit_once(files, counter).remote_id == "4242"
    assert counter.read_text() == "submitted\n"
    assert not Path(files.submit_failed).exists()


def test_a_job_found_after_a_failed_submit_is_recorded_as_submitted(files: JobFiles) -> None:
    subprocess.run(["bash", "-c", jobscript.submit_script(files, "false")], check=False)
    assert lookup(files).outcome is SubmitOutcome.LOOK_UP
    script = jobscript.record_script(files, "77 $(touch pwned)")
    done = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=30)
    recorded = jobscript.parse_submit(done.returncode, done.stdout, done.stderr)
    assert recorded.remote_id == "77 $(touch pwned)"
    assert lookup(files).remote_id == "77 $(touch pwned)"


def test_a_search_says_whether_the_job_script_started(files: JobFiles) -> None:
    script = jobscript.search_script(files, "printf '5|cerise-x\\n'")
    before = subprocess.run(["bash", "-c", script], capture_output=True, text=True).stdout
    assert jobscript.parse_search(before) == ("5|cerise-x\n", False)
    Path(files.started).write_text("1\n")
    after = subprocess.run(["bash", "-c", script], capture_output=True, text=True).stdout
    assert jobscript.parse_search(after) == ("5|cerise-x\n", True)


def test_submit_that_prints_no_id_fails(files: JobFiles) -> None:
    script = jobscript.submit_script(files, "true")
    done = subprocess.run(["bash", "-c", script], capture_output=True, text=True)
    result = jobscript.parse_submit(done.returncode, done.stdout, done.stderr)
    assert result.outcome is SubmitOutcome.FAILED
    assert "printed no job id" in result.detail


def test_lock_without_id_is_reported_unknown_not_resubmitted(
    files: JobFiles, tmp_path: Path
) -> None:
    Path(files.lock).mkdir()  # a predecessor died between taking the lock and recording the id
    counter = tmp_path / "count"
    result = submit_once(files, counter, wait_seconds=1)
    assert result.outcome is SubmitOutcome.UNKNOWN
    assert not counter.exists()


def test_submit_survives_hangup_between_submit_and_record(
    files: JobFiles, tmp_path: Path
) -> None:
    """A dropped SSH channel (SIGHUP) right after the scheduler accepted the job."""
    counter = tmp_path / "count"
    slow_submit = f"echo submitted >> {counter}; sleep 1; echo 99"
    script = Path(files.job_dir) / "submit.sh"
    script.write_text(jobscript.submit_script(files, slow_submit))
    proc = subprocess.Popen(["bash", str(script)], stdout=subprocess.DEVNULL,
                            start_new_session=True)
    wait_until(counter.exists, timeout=10, what="submit")
    os.killpg(proc.pid, signal.SIGHUP)
    proc.wait(timeout=10)
    assert Path(files.remote_id).read_text() == "99\n"
    assert submit_once(files, counter).remote_id == "99"
    assert counter.read_text() == "submitted\n"


@pytest.mark.parametrize(
    ("status", "stdout", "stderr", "expected"),
    [
        (0, "noise\ncerise-remote-id: 17.server\n", "", SubmitOutcome.SUBMITTED),
        (0, "cerise-remote-id: \n", "", SubmitOutcome.FAILED),
        (0, "cerise-submit-unknown\n", "", SubmitOutcome.UNKNOWN),
        (1, "", "qsub: Unknown queue", SubmitOutcome.FAILED),
        (255, "", "", SubmitOutcome.FAILED),
    ],
)
def test_parse_submit(status: int, stdout: str, stderr: str, expected: SubmitOutcome) -> None:
    assert jobscript.parse_submit(status, stdout, stderr).outcome is expected


def lookup(files: JobFiles) -> jobscript.SubmitResult:
    script = jobscript.lookup_script(files, wait_seconds=1)
    done = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=30)
    return jobscript.parse_submit(done.returncode, done.stdout, done.stderr)


def test_lookup_never_submits(files: JobFiles, tmp_path: Path) -> None:
    assert lookup(files).outcome is SubmitOutcome.NOT_SUBMITTED
    assert not Path(files.lock).exists()
    submit_once(files, tmp_path / "count")
    assert lookup(files) == jobscript.SubmitResult(SubmitOutcome.SUBMITTED, remote_id="4242")


def test_lookup_without_waiting_still_reports_a_recorded_id(
        files: JobFiles, tmp_path: Path) -> None:
    submit_once(files, tmp_path / "count")
    script = jobscript.lookup_script(files, wait_seconds=0)
    done = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=30)
    assert jobscript.parse_submit(done.returncode, done.stdout, done.stderr) == (
        jobscript.SubmitResult(SubmitOutcome.SUBMITTED, remote_id="4242"))


def test_lookup_of_a_lock_without_id_is_unknown(files: JobFiles) -> None:
    Path(files.lock).mkdir()
    assert lookup(files).outcome is SubmitOutcome.UNKNOWN


def test_a_later_attempt_has_markers_lock_and_script_of_its_own() -> None:
    first, second = JobFiles("/j"), JobFiles("/j", attempt=2)
    own = ("script", "started", "terminated", "exit_code", "lock", "remote_id", "submit_failed")
    for name in own:
        assert getattr(second, name) == f"{getattr(first, name)}.2"
    for name in ("work", "workflow", "input", "stdout", "stderr"):
        assert getattr(second, name) == getattr(first, name)
