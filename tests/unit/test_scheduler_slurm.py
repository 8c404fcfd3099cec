"""Scheduler `slurm`: parsing captured squeue output, and the sbatch line it builds."""

from __future__ import annotations

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
from cerise.remote.schedulers.slurm import SlurmScheduler, never_runs, queue_state, slurm_time
from tests.unit.command_stubs import run_with_stub

SCHEDULER = SlurmScheduler()
HOSTILE_QUEUE = "debug $(touch pwned) `touch pwned`; touch pwned"
HOSTILE_OPTIONS = ("--comment=it's \"quoted\" $(touch pwned)", "--mail-user=a b\nc", "*")


def job(key: str, remote_id: str) -> JobRef:
    return JobRef(key, JobFiles(f"/home/cerise-test/cap/{key}"), remote_id)


# Slurm 22.05.8 without EnforcePartLimits, `squeue -h -t all -O 'JobID:|,State:|,Reason:|,
# RestartCnt:|'` as cerise-test,
# lines captured on this machine (ids renumbered): 14 exited 0, 15 exited 3, 10 was held,
# 11 was cancelled while running (its record has expired), 16 was cancelled while pending,
# 7 hit its time limit, 13 asked for 2 nodes of a 1-node cluster, 17 for 64 CPUs of a 2-CPU
# node, 18 for 2 days of a 1-day partition (all three pending forever); 12 is someone
# else's job, still running.
CAPTURED_SQUEUE = """\
16|CANCELLED|JobHeldUser|0|
14|COMPLETED|None|0|
15|FAILED|NonZeroExitCode|0|
13|PENDING|PartitionNodeLimit|0|
17|PENDING|PartitionConfig|0|
18|PENDING|PartitionTimeLimit|0|
10|PENDING|JobHeldUser|0|
12|RUNNING|None|0|
7|TIMEOUT|TimeLimit|0|
"""
CAPTURED_JOBS = [
    job("882a30a930f2", "14"),
    job("10fbb43da3f3", "15"),
    job("bff51311b082", "10"),
    job("16d9aa3df4dd", "11"),
    job("23d4fd09b8a4", "16"),
    job("abfce9989df2", "7"),
    job("a1a6c9402f29", "13"),
]
NEVER = {
    "13": "Slurm holds it with reason PartitionNodeLimit: it asks for more nodes than its "
          "partition has or allows",
    "17": "Slurm holds it with reason PartitionConfig: no node of its partition has what it "
          "asks for",
    "18": "Slurm holds it with reason PartitionTimeLimit: its time limit is beyond its "
          "partition's",
}


def test_queue_of_captured_jobs() -> None:
    jobs = [*CAPTURED_JOBS, job("b", "17"), job("c", "18"), job("d", "12"), job("e", "99999"),
            job("f", "")]
    entries = SCHEDULER.parse_queue(CAPTURED_SQUEUE, jobs)
    assert [entries[j.key] for j in jobs] == [
        QueueEntry(QueueState.ABSENT, "COMPLETED"),
        QueueEntry(QueueState.ABSENT, "FAILED"),
        QueueEntry(QueueState.WAITING, "PENDING"),
        QueueEntry(QueueState.ABSENT),
        QueueEntry(QueueState.ABSENT, "CANCELLED"),
        QueueEntry(QueueState.ABSENT, "TIMEOUT", timed_out=True),
        QueueEntry(QueueState.WAITING, "PENDING", NEVER["13"]),
        QueueEntry(QueueState.WAITING, "PENDING", NEVER["17"]),
        QueueEntry(QueueState.WAITING, "PENDING", NEVER["18"]),
        QueueEntry(QueueState.RUNNING, "RUNNING"),
        QueueEntry(QueueState.ABSENT),
        QueueEntry(QueueState.ABSENT),
    ]


@pytest.mark.parametrize(
    ("reason", "never"),
    [
        ("PartitionTimeLimit", True), ("BadConstraints", True),
        ("DependencyNeverSatisfied", True), ("QOSMaxWallDurationPerJobLimit", True),
        ("AssocMaxCpuPerJobLimit", True), ("QOSMinCpuNotSatisfied", True),
        ("Resources", False), ("Priority", False), ("JobHeldUser", False),
        ("ReqNodeNotAvail, UnavailableNodes:vm", False), ("QOSMaxJobsPerUserLimit", False),
        ("AssocGrpCpuLimit", False), ("BeginTime", False), ("None", False),
    ],
)
def test_pending_reasons_that_never_clear(reason: str, never: bool) -> None:
    assert (never_runs(reason) is not None) is never


@pytest.mark.parametrize(
    ("state", "expected"),
    [
        ("PENDING", QueueState.WAITING),
        ("CONFIGURING", QueueState.WAITING),
        ("REQUEUE_HOLD", QueueState.WAITING),
        ("RUNNING", QueueState.RUNNING),
        ("COMPLETING", QueueState.RUNNING),
        ("SUSPENDED", QueueState.RUNNING),
        ("COMPLETED", QueueState.ABSENT),
        ("OUT_OF_MEMORY", QueueState.ABSENT),
        ("SOMETHING_NEW", QueueState.ABSENT),
    ],
)
def test_queue_state(state: str, expected: QueueState) -> None:
    assert queue_state(state) is expected


def test_status_script_asks_for_every_job_and_its_reason(tmp_path: Path) -> None:
    run = run_with_stub(tmp_path, "squeue", schedulers.status_script(SCHEDULER, CAPTURED_JOBS),
                        stdout=CAPTURED_SQUEUE)
    assert run.calls[0][0] == "-u"
    assert run.calls[0][2:] == ["-h", "-t", "all", "-O", "JobID:|,State:|,Reason:|,RestartCnt:|"]
    observed = schedulers.parse_status(SCHEDULER, run.result.stdout, CAPTURED_JOBS)
    assert observed["a1a6c9402f29"] == Observation(RemoteState.WAITING, never_runs=NEVER["13"])
    assert observed["abfce9989df2"].timed_out


def test_failing_squeue_makes_the_status_unavailable(tmp_path: Path) -> None:
    # Captured: squeue when the controller's configuration cannot be read.
    stderr = ("squeue: error: ClusterName needs to be specified\n"
              "squeue: fatal: Unable to process configuration file\n")
    run = run_with_stub(tmp_path, "squeue", schedulers.status_script(SCHEDULER, CAPTURED_JOBS),
                        stderr=stderr, status=1)
    with pytest.raises(StatusUnavailable, match="ClusterName needs to be specified squeue: "
                       "fatal: Unable to process configuration file"):
        schedulers.parse_status(SCHEDULER, run.result.stdout, CAPTURED_JOBS)


def test_submit_quotes_every_value(tmp_path: Path) -> None:
    files = JobFiles(str(tmp_path / "my jobs" / "$(touch pwned)" / "uid-1"))
    scheduler = SlurmScheduler(BatchSettings(queue=HOSTILE_QUEUE, options=HOSTILE_OPTIONS))
    command = scheduler.submit_command(files, Request("cerise-uid 1'", time_limit=90))
    run = run_with_stub(tmp_path, "sbatch", command, stdout="42;cluster\n")
    assert run.result.returncode == 0, run.result.stderr
    assert run.result.stdout == "42\n"
    assert run.calls == [[
        "--parsable", "--requeue", "--job-name=cerise-uid 1'", f"--chdir={files.work}",
        f"--output={files.job_dir}/scheduler.txt", "--time=0-00:01:30",
        f"--partition={HOSTILE_QUEUE}", *HOSTILE_OPTIONS, files.script,
    ]]
    assert not list(tmp_path.rglob("pwned"))


@pytest.mark.parametrize(
    ("cores", "cores_per_node", "slots_per_node", "expected"),
    [
        (4, 32, 1, ["--nodes=1", "--ntasks-per-node=1", "--cpus-per-task=4"]),
        (64, 32, 1, ["--nodes=2", "--ntasks-per-node=1", "--cpus-per-task=32"]),
        (64, 32, 32, ["--nodes=2", "--ntasks-per-node=32", "--cpus-per-task=1"]),
        (0, 32, 1, []),
    ],
)
def test_submit_shape(
    tmp_path: Path, cores: int, cores_per_node: int, slots_per_node: int, expected: list[str]
) -> None:
    settings = BatchSettings(cores_per_node=cores_per_node, slots_per_node=slots_per_node)
    command = SlurmScheduler(settings).submit_command(JobFiles("/j"), Request("n", cores=cores))
    run = run_with_stub(tmp_path, "sbatch", command, stdout="7\n")
    assert run.calls[0][5:-1] == expected


@pytest.mark.parametrize(("memory", "expected"), [(0, []), (1, ["--mem=1M"]),
                                                  (4096, ["--mem=4096M"])])
def test_submit_asks_for_the_memory_per_node(tmp_path: Path, memory: int,
                                             expected: list[str]) -> None:
    command = SCHEDULER.submit_command(JobFiles("/j"), Request("n", cores=64, memory=memory))
    run = run_with_stub(tmp_path, "sbatch", command, stdout="7\n")
    assert run.calls[0][5:-1] == ["--nodes=2", "--ntasks-per-node=1", "--cpus-per-task=32",
                                  *expected]


def test_refused_submit_prints_no_id(tmp_path: Path) -> None:
    command = SCHEDULER.submit_command(JobFiles("/j"), Request("n"))
    run = run_with_stub(tmp_path, "sbatch", command, status=1,
                        stderr="sbatch: error: invalid partition specified: nope\n")
    assert run.result.returncode == 1
    assert run.result.stdout == ""
    assert "invalid partition" in run.result.stderr


@pytest.mark.parametrize(
    ("seconds", "expected"), [(1, "0-00:00:01"), (3600, "0-01:00:00"), (90061, "1-01:01:01")]
)
def test_slurm_time(seconds: int, expected: str) -> None:
    assert slurm_time(seconds) == expected


def test_cancel(tmp_path: Path) -> None:
    run = run_with_stub(tmp_path, "scancel", SCHEDULER.cancel_script(CAPTURED_JOBS[:2]))
    assert run.calls == [["14", "15"]]
    assert SCHEDULER.cancel_script([job("x", "")]) == "true"


# Slurm 22.05.8, `squeue -u cerise-test -h -t all --name cerise-5d3c… -o '%i|%j'` after a
# submit whose answer was lost, and a second one of the same name (the newer counts).
CAPTURED_SEARCH = """\
31|cerise-5d3c0a9e-2b1f-4c4e-9d62-0f6a1b7e8c11
33|cerise-5d3c0a9e-2b1f-4c4e-9d62-0f6a1b7e8c11
"""


def test_search_finds_a_job_by_the_name_it_was_submitted_under(tmp_path: Path) -> None:
    files = JobFiles("/home/cerise-test/cap/x")
    request = Request(name="cerise-5d3c0a9e-2b1f-4c4e-9d62-0f6a1b7e8c11")
    run = run_with_stub(tmp_path, "squeue", SCHEDULER.search_command(files, request),
                        stdout=CAPTURED_SEARCH)
    assert run.calls[0][-4:] == ["--name", request.name, "-o", "%i|%j"]
    assert SCHEDULER.parse_search(run.result.stdout, files, request) == "33"
    assert SCHEDULER.parse_search("", files, request) is None
    assert SCHEDULER.parse_search("31|cerise-other\n", files, request) is None
    with pytest.raises(StatusUnavailable):
        SCHEDULER.parse_search("slurm_load_jobs error: Socket timed out", files, request)


@pytest.mark.parametrize(
    ("states", "waits"),
    [
        ("idle\n", False), ("mixed\nallocated+\n", False), ("", False),
        ("down*\nidle\n", True), ("drained\n", True), ("draining\n", True), ("idle~\n", True),
        ("idle#\n", True), ("maint\n", True), ("idle*\n", True), ("fail\n", True),
    ],
)
def test_partition_reasons_wait_while_nodes_are_unavailable(states: str, waits: bool) -> None:
    output = f"13|PENDING|PartitionNodeLimit|0|\n17|PENDING|PartitionConfig|0|\n" \
             f"18|PENDING|PartitionTimeLimit|0|\n--- cerise: node states\n{states}"
    jobs = [job("a", "13"), job("b", "17"), job("c", "18")]
    entries = SCHEDULER.parse_queue(output, jobs)
    assert entries["a"].never_runs == (None if waits else NEVER["13"])
    assert entries["b"].never_runs == (None if waits else NEVER["17"])
    assert entries["c"].never_runs == NEVER["18"], "a time limit does not wait for nodes"


def test_status_script_lists_the_node_states_after_the_queue(tmp_path: Path) -> None:
    script = schedulers.status_script(SCHEDULER, CAPTURED_JOBS)
    run_with_stub(tmp_path, "sinfo", "true", stdout="down*\nidle\n")  # a stub sinfo too
    run = run_with_stub(tmp_path, "squeue", script, stdout=CAPTURED_SQUEUE)
    observed = schedulers.parse_status(SCHEDULER, run.result.stdout, CAPTURED_JOBS)
    assert observed["a1a6c9402f29"] == Observation(RemoteState.WAITING)
    assert observed["bff51311b082"] == Observation(RemoteState.WAITING)


def test_out_of_memory_is_read_from_squeue_and_reaches_the_observation() -> None:
    refs = [job("a", "21"), job("b", "22")]
    entries = SlurmScheduler().parse_queue("21|OUT_OF_MEMORY|OutOfMemory|0|\n22|FAILED|None|0|\n",
                                           refs)
    assert entries["a"] == QueueEntry(QueueState.ABSENT, "OUT_OF_MEMORY",
                                      out_of_memory="Slurm reports OUT_OF_MEMORY")
    assert entries["b"].out_of_memory is None
    seen = observe(entries["a"], Markers(exit_code=1, started=10))
    assert seen.state is RemoteState.DONE
    assert seen.out_of_memory == "Slurm reports OUT_OF_MEMORY"


def test_the_restart_count_of_a_requeued_job_is_read_from_squeue() -> None:
    # Captured on the test cluster: job 1 preempted by a job of partition `urgent` and
    # requeued (Slurm holds a requeued job until its credential expires: BeginTime), then
    # running again; squeue of another version may pad the fields.
    refs = [job("a", "1"), job("b", "2"), job("c", "3")]
    entries = SCHEDULER.parse_queue(
        "1|PENDING|BeginTime|1|\n2|RUNNING|None|1|\n3       |RUNNING  |None   |12  |\n", refs)
    assert entries["a"] == QueueEntry(QueueState.WAITING, "PENDING", restarts=1)
    assert entries["b"] == QueueEntry(QueueState.RUNNING, "RUNNING", restarts=1)
    assert entries["c"].restarts == 12


def test_jobs_are_submitted_requeueable_with_the_restart_in_their_markers() -> None:
    files = JobFiles("/home/u/jobs/uid-1")
    assert SCHEDULER.submit_command(files, Request("cerise-uid-1")).count("--requeue") == 1
    # A pilot allocation is not: its runs are requeued by Cerise, not by Slurm.
    allocation = SCHEDULER.submit_command(files, Request("cerise-pilot-a", rerun=False))
    assert "--no-requeue" in allocation and "--requeue " not in allocation
    assert isinstance(SCHEDULER, schedulers.Requeueing)
    assert SCHEDULER.restart_variable == "SLURM_RESTART_COUNT"
