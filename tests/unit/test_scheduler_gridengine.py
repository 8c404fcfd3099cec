"""Scheduler `gridengine`: parsing captured `qstat -xml` output, and the qsub line it builds."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from cerise.remote import schedulers
from cerise.remote.jobscript import JobFiles
from cerise.remote.schedulers import (
    JobRef,
    Markers,
    Observation,
    QueueEntry,
    QueueState,
    RemoteState,
    Request,
    StatusUnavailable,
    observe,
)
from cerise.remote.schedulers.batch import BatchSettings
from cerise.remote.schedulers.gridengine import ERRORS_BEGIN, GridEngineScheduler, queue_state
from tests.unit.command_stubs import run_with_stub

SCHEDULER = GridEngineScheduler(BatchSettings(parallel_environment="smp"))
HOSTILE_QUEUE = "all.q $(touch pwned) `touch pwned`; touch pwned"
HOSTILE_OPTIONS = ("-P", "it's \"quoted\" $(touch pwned)", "-l", "a b\nc")


def job(key: str, remote_id: str) -> JobRef:
    return JobRef(key, JobFiles(f"/home/cerise-test/cap/{key}"), remote_id)


# Son of Grid Engine 8.1.9, `qstat -u cerise-test -xml` run as cerise-test:
# job 16 exited 0, 17 exited 3, 18 is held, 19 is running, 20 was deleted while running
# (SIGKILL: no exit code), 21 asks for 4 slots of a 2-slot host, 22 lost its directory
# before it started (Eqw); 9999 is unknown.
CAPTURED_QSTAT = """\
<?xml version='1.0'?>
<job_info  xmlns:xsd="http://arc.liv.ac.uk/repos/darcs/sge/source/dist/util/resources/schemas/qstat/qstat.xsd">
  <queue_info>
    <job_list state="running">
      <JB_job_number>19</JB_job_number>
      <JAT_prio>0.25000</JAT_prio>
      <JB_name>cerise-9a51d092cf3c</JB_name>
      <JB_owner>cerise-test</JB_owner>
      <state>r</state>
      <JAT_start_time>2026-11-25T12:27:38</JAT_start_time>
      <queue_name>all.q@vm</queue_name>
      <slots>1</slots>
    </job_list>
  </queue_info>
  <job_info>
    <job_list state="pending">
      <JB_job_number>21</JB_job_number>
      <JAT_prio>0.75000</JAT_prio>
      <JB_name>cerise-420bedf6aa97</JB_name>
      <JB_owner>cerise-test</JB_owner>
      <state>qw</state>
      <JB_submission_time>2026-11-25T12:27:38</JB_submission_time>
      <queue_name></queue_name>
      <slots>4</slots>
    </job_list>
    <job_list state="pending">
      <JB_job_number>22</JB_job_number>
      <JAT_prio>0.25000</JAT_prio>
      <JB_name>cerise-6143fce5b567</JB_name>
      <JB_owner>cerise-test</JB_owner>
      <state>Eqw</state>
      <JB_submission_time>2026-11-25T12:27:38</JB_submission_time>
      <queue_name></queue_name>
      <slots>1</slots>
    </job_list>
    <job_list state="pending">
      <JB_job_number>18</JB_job_number>
      <JAT_prio>0.00000</JAT_prio>
      <JB_name>cerise-2e2432289a20</JB_name>
      <JB_owner>cerise-test</JB_owner>
      <state>hqw</state>
      <JB_submission_time>2026-11-25T12:27:38</JB_submission_time>
      <queue_name></queue_name>
      <slots>1</slots>
    </job_list>
  </job_info>
</job_info>
"""
CAPTURED_JOBS = [
    job("934b4a22ea4d", "16"),
    job("c841b538bfba", "17"),
    job("2e2432289a20", "18"),
    job("9a51d092cf3c", "19"),
    job("4fe5d013c30a", "20"),
    job("420bedf6aa97", "21"),
    job("6143fce5b567", "22"),
    job("gone", "9999"),
]

# Captured: the same command with no jobs of the user in the queue.
EMPTY_QUEUE = """\
<?xml version='1.0'?>
<job_info  xmlns:xsd="http://arc.liv.ac.uk/repos/darcs/sge/source/dist/util/resources/schemas/qstat/qstat.xsd">
  <queue_info>
  </queue_info>
  <job_info>
  </job_info>
</job_info>
"""


# Captured: `qstat -j 22` of the job in Eqw above (the lines the status script keeps).
CAPTURED_ERROR = ("error reason    1:          11/25/2026 12:27:40 [1001:31622]: error: can't "
                  "chdir to /home/cerise-test/cap/6143fce5b567/work: No such file or directory")


def test_queue_of_captured_jobs() -> None:
    errors = f"{ERRORS_BEGIN}\n22 {CAPTURED_ERROR}\n"
    entries = SCHEDULER.parse_queue(CAPTURED_QSTAT + errors, CAPTURED_JOBS)
    assert [entries[j.key] for j in CAPTURED_JOBS] == [
        QueueEntry(QueueState.ABSENT),
        QueueEntry(QueueState.ABSENT),
        QueueEntry(QueueState.WAITING, "hqw"),
        QueueEntry(QueueState.RUNNING, "r"),
        QueueEntry(QueueState.ABSENT),
        QueueEntry(QueueState.WAITING, "qw"),
        QueueEntry(QueueState.WAITING, "Eqw", "Grid Engine holds it in error state Eqw: "
                   "11/25/2026 12:27:40 [1001:31622]: error: can't chdir to "
                   "/home/cerise-test/cap/6143fce5b567/work: No such file or directory"),
        QueueEntry(QueueState.ABSENT),
    ]


def test_empty_queue_lists_no_jobs() -> None:
    entries = SCHEDULER.parse_queue(EMPTY_QUEUE, CAPTURED_JOBS)
    assert set(entries.values()) == {QueueEntry(QueueState.ABSENT)}


@pytest.mark.parametrize(
    "output", ["", "error: commlib error: got select error\n", "<job_info><job",
               "<html><body>maintenance</body></html>"]
)
def test_unreadable_output_makes_the_status_unavailable(output: str) -> None:
    with pytest.raises(StatusUnavailable, match="qstat printed what Cerise cannot read"):
        SCHEDULER.parse_queue(output, CAPTURED_JOBS)


@pytest.mark.parametrize(
    ("state", "expected"),
    [("qw", QueueState.WAITING), ("hqw", QueueState.WAITING), ("Rq", QueueState.WAITING),
     ("r", QueueState.RUNNING), ("t", QueueState.RUNNING), ("Rr", QueueState.RUNNING),
     ("s", QueueState.RUNNING), ("S", QueueState.RUNNING), ("dr", QueueState.RUNNING),
     ("Eqw", QueueState.WAITING), ("z", QueueState.ABSENT), ("", QueueState.ABSENT)],
)
def test_queue_state(state: str, expected: QueueState) -> None:
    assert queue_state(state) is expected


QSTAT_STUB = """#!/bin/bash
printf '%s\\0' "$@" >> {calls}
if [ "$1" = -j ]; then
    printf 'job_number:                 %s\\n' "$2"
    cat {error}
else
    cat {listing}
fi
"""


def test_status_asks_why_only_for_our_jobs_in_an_error_state(tmp_path: Path) -> None:
    listing, calls, error = tmp_path / "listing.xml", tmp_path / "calls", tmp_path / "error"
    listing.write_text(CAPTURED_QSTAT)
    error.write_text(f"{CAPTURED_ERROR}\nscheduling info:            -\n")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    stub = bin_dir / "qstat"
    stub.write_text(QSTAT_STUB.format(calls=calls, listing=listing, error=error))
    stub.chmod(0o755)
    for jobs in (CAPTURED_JOBS, CAPTURED_JOBS[:-2]):
        calls.write_text("")
        script = f"export PATH={bin_dir}:$PATH\n{schedulers.status_script(SCHEDULER, jobs)}"
        run = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=30)
        observed = schedulers.parse_status(SCHEDULER, run.stdout, jobs)
        if jobs is CAPTURED_JOBS:
            assert observed["6143fce5b567"].never_runs == (
                "Grid Engine holds it in error state Eqw: 11/25/2026 12:27:40 [1001:31622]: "
                "error: can't chdir to /home/cerise-test/cap/6143fce5b567/work: No such file "
                "or directory")
            assert calls.read_text().count("-j\0") == 1
        else:
            assert calls.read_text().count("-j\0") == 0
        assert observed["9a51d092cf3c"] == Observation(RemoteState.RUNNING)


def test_failing_qstat_makes_the_status_unavailable(tmp_path: Path) -> None:
    run = run_with_stub(tmp_path, "qstat", schedulers.status_script(SCHEDULER, CAPTURED_JOBS),
                        stderr="error: unable to contact qmaster using port 6444\n", status=1)
    assert run.calls[0][0] == "-u" and run.calls[0][2:] == ["-xml"]
    with pytest.raises(StatusUnavailable, match="unable to contact qmaster using port 6444"):
        schedulers.parse_status(SCHEDULER, run.result.stdout, CAPTURED_JOBS)


def test_submit_quotes_every_value(tmp_path: Path) -> None:
    files = JobFiles(str(tmp_path / "my jobs" / "$(touch pwned)" / "uid-1"))
    settings = BatchSettings(queue=HOSTILE_QUEUE, parallel_environment="mpi fill",
                             options=HOSTILE_OPTIONS)
    command = GridEngineScheduler(settings).submit_command(
        files, Request("cerise-uid:1 *", cores=4, time_limit=90061))
    run = run_with_stub(tmp_path, "qsub", command, stdout="42.1-10:1\n")
    assert run.result.returncode == 0, run.result.stderr
    assert run.result.stdout == "42\n"
    assert run.calls == [[
        "-terse", "-notify", "-w", "e", "-S", "/bin/bash", "-N", "cerise-uid1", "-wd", files.work,
        "-j", "y", "-o", f"{files.job_dir}/scheduler.txt", "-r", "y",
        "-l", "h_rt=25:01:01", "-pe", "mpi fill", "4", "-q", HOSTILE_QUEUE, *HOSTILE_OPTIONS,
        files.script,
    ]]
    assert not list(tmp_path.rglob("pwned"))


@pytest.mark.parametrize("cores", [0, 1])
def test_one_core_needs_no_parallel_environment(tmp_path: Path, cores: int) -> None:
    command = GridEngineScheduler().submit_command(JobFiles("/j"), Request("9", cores=cores))
    run = run_with_stub(tmp_path, "qsub", command, stdout="5\n")
    assert run.result.stdout == "5\n"
    assert run.calls == [["-terse", "-notify", "-w", "e", "-S", "/bin/bash", "-N", "j9",
                          "-wd", "/j/work", "-j", "y", "-o", "/j/scheduler.txt", "-r", "y",
                          "/j/job.sh"]]


@pytest.mark.parametrize(("resource", "cores", "expected"), [
    ("h_vmem", 1, "h_vmem=3000M"),
    ("h_vmem", 4, "h_vmem=750M"),  # per slot: Grid Engine multiplies it by the 4 slots
    ("h_vmem", 7, "h_vmem=429M"),  # rounded up, never less than asked for
    ("site_mem", 4, "site_mem=750M"),
])
def test_submit_asks_for_the_memory_with_the_resources_complex(
    tmp_path: Path, resource: str, cores: int, expected: str
) -> None:
    settings = BatchSettings(parallel_environment="smp", memory_resource=resource)
    command = GridEngineScheduler(settings).submit_command(
        JobFiles("/j"), Request("n", cores=cores, memory=3000))
    run = run_with_stub(tmp_path, "qsub", command, stdout="5\n")
    words = run.calls[0]
    assert words[words.index("-r") + 2:-1] == [
        *(["-pe", "smp", str(cores)] if cores > 1 else []), "-l", expected]


def test_the_default_memory_complex_is_h_vmem(tmp_path: Path) -> None:
    command = SCHEDULER.submit_command(JobFiles("/j"), Request("n", memory=64))
    run = run_with_stub(tmp_path, "qsub", command, stdout="5\n")
    assert run.calls[0][-3:-1] == ["-l", "h_vmem=64M"]


def test_many_cores_without_parallel_environment_are_refused(tmp_path: Path) -> None:
    command = GridEngineScheduler().submit_command(JobFiles("/j"), Request("n", cores=2))
    run = run_with_stub(tmp_path, "qsub", command, stdout="5\n")
    assert run.result.returncode != 0
    assert run.result.stdout == ""
    assert "jobs.parallelEnvironment" in run.result.stderr
    assert run.calls == []


def test_refused_submit_prints_no_id(tmp_path: Path) -> None:
    # Captured: qsub's answer to an unknown queue.
    stderr = 'Unable to run job: Job was rejected because job requests unknown queue "nosuchq"\n'
    run = run_with_stub(tmp_path, "qsub", SCHEDULER.submit_command(JobFiles("/j"), Request("n")),
                        stderr=f"{stderr}Exiting.\n", status=1)
    assert run.result.returncode == 1
    assert run.result.stdout == ""
    assert "unknown queue" in run.result.stderr


def test_cancel_ignores_jobs_already_gone(tmp_path: Path) -> None:
    run = run_with_stub(tmp_path, "qdel", SCHEDULER.cancel_script(CAPTURED_JOBS[-2:]),
                        stderr='denied: job "9999" does not exist\n', status=1)
    assert run.result.returncode == 0
    assert run.calls == [["22", "9999"]]


def test_search_finds_a_job_by_the_name_it_was_submitted_under() -> None:
    files = JobFiles("/home/cerise-test/cap/x")
    assert SCHEDULER.parse_search(CAPTURED_QSTAT, files,
                                  Request(name="cerise-420bedf6aa97")) == "21"
    assert SCHEDULER.parse_search(CAPTURED_QSTAT, files, Request(name="cerise-gone")) is None
    assert SCHEDULER.parse_search(EMPTY_QUEUE, files, Request(name="cerise-420bedf6aa97")) is None
    with pytest.raises(StatusUnavailable):
        SCHEDULER.parse_search("error: commlib error", files, Request(name="cerise-x"))


def rescheduled(state: str) -> str:
    """qstat -xml of job 481 in `state` (captured on the test cell after `qmod -rj 481`)."""
    return f"""<?xml version='1.0'?>
<job_info  xmlns:xsd="http://arc.liv.ac.uk/repos/darcs/sge/source/dist/util/resources/schemas/qstat/qstat.xsd">
  <queue_info>
  </queue_info>
  <job_info>
    <job_list state="pending">
      <JB_job_number>481</JB_job_number>
      <JB_name>ge.sh</JB_name>
      <JB_owner>cerise-test</JB_owner>
      <state>{state}</state>
      <slots>1</slots>
    </job_list>
  </job_info>
</job_info>
"""


@pytest.mark.parametrize(("state", "expected"), [
    ("Rq", QueueEntry(QueueState.WAITING, "Rq", restarts=1, requeued=True)),
    ("Rr", QueueEntry(QueueState.RUNNING, "Rr", restarts=1)),
    ("r", QueueEntry(QueueState.RUNNING, "r")),
])
def test_a_rescheduled_job_counts_one_restart_and_waits_requeued(
        state: str, expected: QueueEntry) -> None:
    entries = SCHEDULER.parse_queue(rescheduled(state), [job("k", "481")])
    assert entries["k"] == expected


def test_the_exit_code_of_a_rescheduled_run_is_not_the_end() -> None:
    # The run got SIGUSR2 after Grid Engine had marked the job Rq: its exit code (143) is
    # seen with Rq, then with Rr before the rerun's script has removed it.
    preempted = Markers(exit_code=143, started=10, signal="USR2", signalled_at=60)
    for state, remote in (("Rq", RemoteState.WAITING), ("Rr", RemoteState.RUNNING)):
        entry = SCHEDULER.parse_queue(rescheduled(state), [job("k", "481")])["k"]
        assert observe(entry, preempted) == Observation(remote, started=10, restarts=1)
    rerun = SCHEDULER.parse_queue(rescheduled("Rr"), [job("k", "481")])["k"]
    assert observe(rerun, Markers(exit_code=0, started=100, run=1)).state is RemoteState.DONE


def test_jobs_are_rerunnable_but_pilot_allocations_are_not() -> None:
    assert SCHEDULER.restart_variable == "RESTARTED"
    allocation = SCHEDULER.submit_command(JobFiles("/j"), Request("a", rerun=False))
    assert "-r n " in allocation
