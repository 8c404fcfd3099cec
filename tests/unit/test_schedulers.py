"""Scheduler plug-ins: the status script run by bash on real marker files, outages that must
never look like ended jobs, the observation rules, and refused versus passing submits."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from cerise.remote import schedulers
from cerise.remote.jobscript import JobFiles, SubmitOutcome, SubmitResult
from cerise.remote.schedulers import (
    JobRef,
    Markers,
    Observation,
    QueueEntry,
    QueueState,
    RemoteState,
    StatusUnavailable,
)
from cerise.remote.schedulers.direct import DirectScheduler
from cerise.remote.schedulers.slurm import SlurmScheduler
from tests.unit.command_stubs import run_with_stub

SLURM = SlurmScheduler()


def job_dirs(tmp_path: Path, *keys: str) -> list[JobRef]:
    jobs = []
    for number, key in enumerate(keys):
        files = JobFiles(str(tmp_path / "jobs" / key))
        Path(files.job_dir).mkdir(parents=True)
        jobs.append(JobRef(key, files, str(4101 + number)))
    return jobs


def write(path: str, text: str, mtime: int | None = None) -> None:
    Path(path).write_text(text)
    if mtime is not None:
        os.utime(path, (mtime, mtime))


def status(tmp_path: Path, jobs: list[JobRef], squeue: str = "", *, stderr: str = "",
           code: int = 0, timeout: int = 60) -> str:
    """The real status script's output, with a stand-in squeue."""
    script = schedulers.status_script(SLURM, jobs, timeout)
    run = run_with_stub(tmp_path, "squeue", script, stdout=squeue, stderr=stderr, status=code)
    assert run.result.returncode == 0, run.result.stderr
    return run.result.stdout


def test_markers_and_queue_make_each_observation(tmp_path: Path) -> None:
    done, killed, waiting, running, vanished = jobs = job_dirs(
        tmp_path, "done", "killed", "waiting", "running", "vanished")
    write(done.files.started, "1795659000\n")
    write(done.files.stderr, "INFO Final process status is success\n")
    write(done.files.exit_code, "0\n", mtime=1795659100)
    write(killed.files.started, "1795659000\n")
    write(killed.files.terminated, "TERM 1795659083\n")  # then a KILL before its exit code
    squeue = "4103|PENDING|Priority|0|\n4104|RUNNING|None|0|\n4102|TIMEOUT|TimeLimit|0|\n"
    observed = schedulers.parse_status(SLURM, status(tmp_path, jobs, squeue), jobs)
    assert observed == {
        "done": Observation(RemoteState.DONE, 0, 37, started=1795659000, ended=1795659100),
        "killed": Observation(RemoteState.DONE, 143, started=1795659000, signal="TERM",
                              signalled_at=1795659083, timed_out=True),
        "waiting": Observation(RemoteState.WAITING),
        "running": Observation(RemoteState.RUNNING),
        "vanished": Observation(RemoteState.VANISHED),
    }
    assert [observed[j.key].log_size for j in (waiting, running, vanished)] == [0, 0, 0]


def test_an_exit_code_of_a_run_slurm_requeued_is_not_the_end(tmp_path: Path) -> None:
    jobs = job_dirs(tmp_path, "requeued", "dispatched", "rerun-ended", "cancelled-pending",
                    "ended", "killed-then-requeued", "being-requeued")
    for job in jobs:
        write(job.files.started, "1795659000\n")
    for job in jobs[:2] + jobs[3:4]:  # a preempted run's markers
        write(job.files.terminated, "TERM 1795659050\n")
        write(job.files.exit_code, "143\n", mtime=1795659051)
    write(jobs[2].files.started, "1795659200 1\n")
    write(jobs[2].files.exit_code, "0 1\n", mtime=1795659300)
    write(jobs[4].files.exit_code, "0\n", mtime=1795659300)
    write(jobs[5].files.terminated, "TERM 1795659050\n")
    write(jobs[6].files.terminated, "TERM 1795659050\n")
    write(jobs[6].files.exit_code, "143\n", mtime=1795659051)
    squeue = ("4101|PENDING|BeginTime|1|\n4102|RUNNING|None|1|\n4103|COMPLETING|None|1|\n"
              "4104|CANCELLED|None|1|\n4105|COMPLETING|None|0|\n4106|PENDING|BeginTime|2|\n"
              # What squeue says in the preempted run's TERM trap (captured on 22.05):
              "4107|COMPLETING|None|1|\n")
    observed = schedulers.parse_status(SLURM, status(tmp_path, jobs, squeue), jobs)
    assert [observed[job.key] for job in jobs] == [
        Observation(RemoteState.WAITING, started=1795659000, restarts=1),
        Observation(RemoteState.RUNNING, started=1795659000, restarts=1),
        Observation(RemoteState.DONE, 0, started=1795659200, ended=1795659300, restarts=1),
        Observation(RemoteState.DONE, 143, started=1795659000, ended=1795659051,
                    signal="TERM", signalled_at=1795659050, restarts=1),
        Observation(RemoteState.DONE, 0, started=1795659000, ended=1795659300),
        Observation(RemoteState.WAITING, started=1795659000, restarts=2),
        Observation(RemoteState.RUNNING, started=1795659000, restarts=1),
    ]


def test_the_markers_are_read_before_the_queue(tmp_path: Path) -> None:
    # The queue answers "running, never requeued", then the job is requeued and its script
    # writes the exit code of the preempted run: that exit code must wait for the next poll,
    # whose queue shows the requeue.
    (job,) = job_dirs(tmp_path, "k")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "squeue").write_text(f"#!/bin/bash\necho '4101|RUNNING|None|0|'\n"
                                    f"echo 143 > {shlex.quote(job.files.exit_code)}\n")
    (bin_dir / "squeue").chmod(0o755)
    script = f"export PATH={bin_dir}:$PATH\n{schedulers.status_script(SLURM, [job])}"
    run = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=30)
    assert schedulers.parse_status(SLURM, run.stdout, [job])["k"].state is RemoteState.RUNNING
    requeued = status(tmp_path, [job], "4101|PENDING|BeginTime|1|\n")
    assert schedulers.parse_status(SLURM, requeued, [job])["k"] == \
        Observation(RemoteState.WAITING, restarts=1)


def test_markers_of_odd_paths_are_read(tmp_path: Path) -> None:
    job = JobRef("k", JobFiles(str(tmp_path / "odd dir" / "$(touch pwned)")), "1")
    Path(job.files.job_dir).mkdir(parents=True)
    write(job.files.exit_code, "3\n")
    write(job.files.stderr, "x")
    observed = schedulers.parse_status(SLURM, status(tmp_path, [job]), [job])
    assert (observed["k"].exit_code, observed["k"].log_size) == (3, 1)
    assert not list(tmp_path.rglob("pwned"))


def test_garbled_markers_are_not_taken_for_an_end(tmp_path: Path) -> None:
    (job,) = job_dirs(tmp_path, "k")
    write(job.files.exit_code, "garbage\n")
    write(job.files.started, "")
    write(job.files.terminated, "\n")
    observed = schedulers.parse_status(SLURM, status(tmp_path, [job]), [job])
    assert observed["k"] == Observation(RemoteState.VANISHED)


def test_a_failing_queue_command_is_an_outage_with_its_words(tmp_path: Path) -> None:
    (job,) = job_dirs(tmp_path, "k")
    write(job.files.exit_code, "0\n")  # even a finished job: nothing is concluded
    output = status(tmp_path, [job], stderr="slurm_load_jobs error: Unable to contact slurm "
                    "controller (connect failure)\n", code=1)
    with pytest.raises(StatusUnavailable, match=r"slurm: the queue command failed \(exit status "
                       r"1\): slurm_load_jobs error: Unable to contact slurm controller"):
        schedulers.parse_status(SLURM, output, [job])


def test_a_queue_command_that_hangs_is_an_outage(tmp_path: Path) -> None:
    (job,) = job_dirs(tmp_path, "k")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "squeue").write_text("#!/bin/bash\nsleep 60\n")
    (bin_dir / "squeue").chmod(0o755)
    script = f"export PATH={bin_dir}:$PATH\n{schedulers.status_script(SLURM, [job], 1)}"
    run = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=30)
    with pytest.raises(StatusUnavailable, match=r"exit status 124\): no answer within 1 s"):
        schedulers.parse_status(SLURM, run.stdout, [job])


@pytest.mark.parametrize("squeue", [
    "%%% garbage <html> ***\n",
    "4101|RUNNING|None|0|\n<html>502 Bad Gateway</html>\n",
    "4101 RUNNING\n",
    "4101|RUNNING|None\n",  # without the restart count
])
def test_garbage_from_the_queue_command_is_an_outage(tmp_path: Path, squeue: str) -> None:
    (job,) = job_dirs(tmp_path, "k")
    with pytest.raises(StatusUnavailable, match="squeue printed what Cerise cannot read"):
        schedulers.parse_status(SLURM, status(tmp_path, [job], squeue), [job])


def test_cut_short_output_is_an_outage(tmp_path: Path) -> None:
    (job,) = job_dirs(tmp_path, "k")
    write(job.files.exit_code, "0\n")
    full = status(tmp_path, [job], "4101|RUNNING|None|0|\n")
    end = full.index(schedulers.END_LINE)
    for cut in (0, full.index(schedulers.QUEUE_LINE) + 5, full.index(schedulers.MARKERS_BEGIN),
                end - 1, end + 3):
        with pytest.raises(StatusUnavailable, match="cut short"):
            schedulers.parse_status(SLURM, full[:cut], [job])
    other = JobRef("other", job.files, "4102")
    with pytest.raises(StatusUnavailable, match="lacks job other"):
        schedulers.parse_status(SLURM, full, [job, other])
    assert schedulers.parse_status(SLURM, full, [job])["k"].state is RemoteState.DONE


def test_status_is_one_command_for_all_jobs_without_a_process_per_job(tmp_path: Path) -> None:
    jobs = job_dirs(tmp_path, *(f"j{n}" for n in range(50)))
    script = schedulers.status_script(DirectScheduler(), jobs)
    assert script.count("ps -ww -o") == 1
    # The markers (one capture, read first) and the queue command's words; markers are read by
    # builtins.
    assert script.count("$(") == 2
    assert script.count("xargs") == 1


def test_a_running_local_job_with_a_long_path_is_seen_whatever_the_terminal_width(
    tmp_path: Path,
) -> None:
    # ps cuts its lines at $COLUMNS (set in many shells and in pytest-xdist's workers); a cut
    # line lost the job script's path, and the job ended "without an exit code".
    files = JobFiles(str(tmp_path / ("deep-" * 30) / "job"))
    Path(files.job_dir).mkdir(parents=True)
    Path(files.script).write_text("sleep 30\n")
    process = subprocess.Popen(["setsid", "bash", files.script])
    try:
        job = JobRef("k", files, str(process.pid))
        scheduler = DirectScheduler()
        queue = subprocess.run(
            ["bash", "-c", scheduler.queue_script([job])], capture_output=True, text=True,
            env={**os.environ, "COLUMNS": "40"}, check=True)
        assert scheduler.parse_queue(queue.stdout, [job])["k"].state is QueueState.RUNNING
    finally:
        process.kill()
        process.wait()


def test_local_jobs_are_looked_up_by_bash_alone_and_odd_command_lines_are_read(
    tmp_path: Path,
) -> None:
    # `ps -p` read four /proc files of every process on the host to print a few: bash reads
    # the jobs' command lines itself, so no program is started (PATH is empty here).
    files = JobFiles(str(tmp_path / "a b'$(c)" / "job"))
    Path(files.job_dir).mkdir(parents=True)
    Path(files.script).write_text("sleep 30\n")
    ours = subprocess.Popen(["setsid", "bash", files.script])
    # a PID reused by another program, with line breaks of every kind in its arguments
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)",
                              "a\nb\rc\u2028d\x0be\x0cf\x85g\x1ch"])
    try:
        jobs = [JobRef("ours", files, str(ours.pid)), JobRef("other", files, str(other.pid)),
                JobRef("gone", files, "999999999")]
        scheduler = DirectScheduler()
        # bytes, decoded as the connection does (text=True would turn \r into \n)
        queue = subprocess.run(["/bin/bash", "-c", scheduler.queue_script(jobs)],
                               capture_output=True, env={"PATH": ""}, check=True)
        assert queue.stderr == b""
        output = queue.stdout.decode(errors="replace")
        states = {key: entry.state for key, entry in scheduler.parse_queue(output,
                                                                          jobs).items()}
        assert states == {"ours": QueueState.RUNNING, "other": QueueState.ABSENT,
                          "gone": QueueState.ABSENT}
    finally:
        for process in (ours, other):
            process.kill()
            process.wait()


@pytest.mark.parametrize(
    ("entry", "markers", "expected"),
    [
        (QueueEntry(QueueState.WAITING), Markers(), RemoteState.WAITING),
        (QueueEntry(QueueState.RUNNING), Markers(), RemoteState.RUNNING),
        (QueueEntry(QueueState.ABSENT), Markers(), RemoteState.VANISHED),
        (QueueEntry(QueueState.RUNNING), Markers(exit_code=0), RemoteState.DONE),
        (QueueEntry(QueueState.ABSENT), Markers(exit_code=143), RemoteState.DONE),
        # signalled and still stopping: the queue still has it
        (QueueEntry(QueueState.RUNNING), Markers(signal="TERM"), RemoteState.RUNNING),
        (QueueEntry(QueueState.ABSENT), Markers(signal="USR2"), RemoteState.DONE),
    ],
)
def test_observe(entry: QueueEntry, markers: Markers, expected: RemoteState) -> None:
    observation = schedulers.observe(entry, markers)
    assert observation.state is expected
    if expected is RemoteState.DONE:
        assert observation.exit_code == (143 if markers.exit_code is None else markers.exit_code)


def test_only_a_waiting_job_carries_why_it_never_runs() -> None:
    entry = QueueEntry(QueueState.WAITING, "PENDING", "Slurm holds it with reason X: y")
    assert schedulers.observe(entry).never_runs == "Slurm holds it with reason X: y"
    assert schedulers.observe(entry, Markers(exit_code=1)).never_runs is None


@pytest.mark.parametrize(
    ("detail", "expected"),
    [
        ("sbatch: error: Batch job submission failed: Unable to contact slurm controller "
         "(connect failure)", SubmitOutcome.FAILED),
        ("sbatch: error: Batch job submission failed: Socket timed out on send/recv "
         "operation", SubmitOutcome.FAILED),
        ("error: commlib error: got select error (Connection refused)\nUnable to run job: "
         "unable to contact qmaster using port 6444 on host \"vm\"", SubmitOutcome.FAILED),
        ("qsub: cannot connect to server head (errno=111) Connection refused",
         SubmitOutcome.FAILED),
        ("submit exited with status 255", SubmitOutcome.FAILED),
        ("sbatch: error: Batch job submission failed: More processors requested than "
         "permitted", SubmitOutcome.REFUSED),
        ("sbatch: error: Batch job submission failed: Requested node configuration is not "
         "available", SubmitOutcome.REFUSED),
        ("sbatch: error: invalid partition specified: nope", SubmitOutcome.REFUSED),
        ("Unable to run job: error: no suitable queues\nExiting.", SubmitOutcome.REFUSED),
        ("none: the job asks for 64 cores, but this host has 2", SubmitOutcome.REFUSED),
    ],
)
def test_refused_and_passing_submit_failures(detail: str, expected: SubmitOutcome) -> None:
    judged = schedulers.judge_submit(SubmitResult(SubmitOutcome.FAILED, detail=detail))
    assert judged == SubmitResult(expected, detail=detail)


def test_only_failures_are_judged() -> None:
    submitted = SubmitResult(SubmitOutcome.SUBMITTED, remote_id="7")
    assert schedulers.judge_submit(submitted) is submitted
