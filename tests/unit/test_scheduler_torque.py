"""Scheduler `torque`: parsing captured `qstat -f` output, and the qsub line it builds."""

from __future__ import annotations

from pathlib import Path

import pytest

from cerise.remote import schedulers
from cerise.remote.jobscript import JobFiles
from cerise.remote.schedulers import (
    JobRef,
    Observation,
    QueueEntry,
    QueueState,
    RemoteState,
    Request,
    StatusUnavailable,
)
from cerise.remote.schedulers.batch import BatchSettings
from cerise.remote.schedulers.torque import TorqueScheduler, queue_state, short_id
from tests.unit.command_stubs import run_with_stub

SCHEDULER = TorqueScheduler()
HOSTILE_QUEUE = "batch $(touch pwned) `touch pwned`; touch pwned"
HOSTILE_OPTIONS = ("-W", "umask=it's \"quoted\" $(touch pwned)", "-M", "a b;`touch pwned`")


def job(key: str, remote_id: str) -> JobRef:
    return JobRef(key, JobFiles(f"/home/cerise-test/cap/{key}"), remote_id)


# Slurm 22.05.8's Torque wrappers, the queue script of TorqueScheduler run as cerise-test:
# job 17 exited 0, 18 exited 3, 19 is held, 20 was cancelled while running, 21 was cancelled
# before its script started, 22 (2 cores) is running; 9999 is unknown.
CAPTURED_QSTAT = """\
Job Id:\t17
\tJob_Name = cerisecf5f0a2ae
\tJob_Owner = cerise-test@localhost
\tjob_state = C
\tqueue = debug
\tqtime = Wed Nov 25 12:27:19 2026
\tmtime = Wed Nov 25 12:27:20 2026
\tctime = Wed Nov 25 12:27:20 2026
\texec_host = vm/1
\tPriority = 4294901746
\teuser = cerise-test(1001)
\tegroup = cerise-test(1001)
\tResource_List.walltime = 00:10:00
\tResource_List.nodect = 1
\tResource_List.ncpus = 1

Job Id:\t18
\tJob_Name = cerise8d40873ab
\tJob_Owner = cerise-test@localhost
\tjob_state = C
\tqueue = debug
\tqtime = Wed Nov 25 12:27:19 2026
\tmtime = Wed Nov 25 12:27:20 2026
\tctime = Wed Nov 25 12:27:20 2026
\texec_host = vm/1
\tPriority = 4294901745
\teuser = cerise-test(1001)
\tegroup = cerise-test(1001)
\tResource_List.walltime = 71582788:15:00
\tResource_List.nodect = 1
\tResource_List.ncpus = 1

Job Id:\t19
\tJob_Name = cerise3d4f2f011
\tJob_Owner = cerise-test@localhost
\tjob_state = Q
\tqueue = debug
\tqtime = Wed Nov 25 12:27:20 2026
\tPriority = 0
\teuser = cerise-test(1001)
\tegroup = cerise-test(1001)
\tResource_List.walltime = 71582788:15:00
\tResource_List.nodect = 1
\tResource_List.ncpus = 1

Job Id:\t20
\tJob_Name = cerisee47c189c0
\tJob_Owner = cerise-test@localhost
\tjob_state = C
\tqueue = debug
\tqtime = Wed Nov 25 12:27:20 2026
\tmtime = Wed Nov 25 12:27:23 2026
\tctime = Wed Nov 25 12:27:29 2026
\texec_host = vm/1
\tPriority = 4294901744
\teuser = cerise-test(1001)
\tegroup = cerise-test(1001)
\tResource_List.walltime = 71582788:15:00
\tResource_List.nodect = 1
\tResource_List.ncpus = 1

Job Id:\t21
\tJob_Name = cerise12dff4c66
\tJob_Owner = cerise-test@localhost
\tjob_state = C
\tqueue = debug
\tqtime = Wed Nov 25 12:27:20 2026
\tmtime = Wed Nov 25 12:27:23 2026
\tctime = Wed Nov 25 12:27:23 2026
\tPriority = 4294901743
\teuser = cerise-test(1001)
\tegroup = cerise-test(1001)
\tResource_List.walltime = 71582788:15:00
\tResource_List.nodect = 1
\tResource_List.ncpus = 1

Job Id:\t22
\tJob_Name = cerisebe1c8645b
\tJob_Owner = cerise-test@localhost
\tjob_state = R
\tqueue = debug
\tqtime = Wed Nov 25 12:27:20 2026
\tmtime = Wed Nov 25 12:27:29 2026
\tctime = Thu Nov 25 12:27:29 2027
\texec_host = vm/2
\tPriority = 4294901742
\teuser = cerise-test(1001)
\tegroup = cerise-test(1001)
\tResource_List.walltime = 71582788:15:00
\tResource_List.nodect = 1
\tResource_List.ncpus = 2

"""
CAPTURED_JOBS = [
    job("cf5f0a2ae530", "17"),
    job("8d40873ab69c", "18"),
    job("3d4f2f011dd8", "19"),
    job("e47c189c0c86", "20"),
    job("12dff4c6677b", "21"),
    job("be1c8645b8eb", "22"),
    job("gone", "9999"),
]


def test_queue_of_captured_jobs() -> None:
    entries = SCHEDULER.parse_queue(CAPTURED_QSTAT, CAPTURED_JOBS)
    assert [entries[j.key] for j in CAPTURED_JOBS] == [
        QueueEntry(QueueState.ABSENT, "C"),
        QueueEntry(QueueState.ABSENT, "C"),
        QueueEntry(QueueState.WAITING, "Q"),
        QueueEntry(QueueState.ABSENT, "C"),
        QueueEntry(QueueState.ABSENT, "C"),
        QueueEntry(QueueState.RUNNING, "R"),
        QueueEntry(QueueState.ABSENT),
    ]


@pytest.mark.parametrize("output", [
    "qstat: Unknown queue\n", "<html>\n", CAPTURED_QSTAT + "garbage\n"])
def test_unreadable_output_makes_the_status_unavailable(output: str) -> None:
    with pytest.raises(StatusUnavailable, match="qstat printed what Cerise cannot read"):
        SCHEDULER.parse_queue(output, CAPTURED_JOBS)


# Real Torque's layout (4-space indent, ids with the server's name, `-1` off), after
# Torque 6's qstat documentation; not captured here, as only the wrappers are installed.
TORQUE_OUTPUT = """\
Job Id: 4801.head.cluster.example.org
    Job_Name = cerise3f2a1b2c4
    Job_Owner = jdoe@login1.cluster.example.org
    job_state = R
    queue = batch
    Resource_List.walltime = 01:00:00

Job Id: 4802.head.cluster.example.org
    Job_Name = cerise9e8d7c6b5
    job_state = W
"""


def test_ids_match_without_the_server_name() -> None:
    jobs = [job("a", "4801.head"), job("b", "4802.head.cluster.example.org"), job("c", "4803")]
    entries = SCHEDULER.parse_queue(TORQUE_OUTPUT, jobs)
    assert {key: entry.state for key, entry in entries.items()} == {
        "a": QueueState.RUNNING, "b": QueueState.WAITING, "c": QueueState.ABSENT}
    assert short_id(" 123.server\n") == "123"


@pytest.mark.parametrize(
    ("state", "expected"),
    [("Q", QueueState.WAITING), ("H", QueueState.WAITING), ("W", QueueState.WAITING),
     ("R", QueueState.RUNNING), ("E", QueueState.RUNNING), ("S", QueueState.RUNNING),
     ("C", QueueState.ABSENT), ("U", QueueState.ABSENT)],
)
def test_queue_state(state: str, expected: QueueState) -> None:
    assert queue_state(state) is expected


@pytest.mark.parametrize(("status", "polled"), [(0, True), (153, True), (255, False)])
def test_unknown_ids_do_not_make_the_status_unavailable(
    tmp_path: Path, status: int, polled: bool
) -> None:
    # 153: some (Torque) or all (wrappers) ids unknown; 255: the wrapper's `die`.
    run = run_with_stub(tmp_path, "qstat", schedulers.status_script(SCHEDULER, CAPTURED_JOBS),
                        stdout=CAPTURED_QSTAT, stderr="qstat: Unknown Job Id 9999\n",
                        status=status)
    assert run.calls == [["-f", "17", "18", "19", "20", "21", "22", "9999"]]
    if polled:
        observed = schedulers.parse_status(SCHEDULER, run.result.stdout, CAPTURED_JOBS)
        assert observed["3d4f2f011dd8"] == Observation(RemoteState.WAITING)
    else:
        with pytest.raises(StatusUnavailable, match=r"\(exit status 255\): qstat: Unknown"):
            schedulers.parse_status(SCHEDULER, run.result.stdout, CAPTURED_JOBS)


@pytest.mark.parametrize("queue", [HOSTILE_QUEUE, "a b", "x;y", "q'"])
def test_a_queue_the_wrappers_shell_would_read_is_refused(queue: str) -> None:
    # The queue goes on qsub's command line, which Slurm's wrapper runs through /bin/sh.
    with pytest.raises(ValueError, match="would pass to a shell"):
        TorqueScheduler(BatchSettings(queue=queue))


@pytest.mark.parametrize("option", ["a\nb", "x\ty", "\r", "\x7f"])
def test_an_option_with_a_control_character_is_refused(option: str) -> None:
    # A line break would end the #PBS directive and start a command in the job script.
    with pytest.raises(ValueError, match="control character"):
        TorqueScheduler(BatchSettings(options=("-A", option)))


def test_options_are_a_directive_with_each_word_as_qsub_reads_it() -> None:
    options = ("-l", "mem=4gb", "-A", "it's \"quoted\" $(touch pwned)", "-W",
               "umask=`id`;x", "-M", "back\\slash #not-a-comment", "")
    scheduler = TorqueScheduler(BatchSettings(options=options))
    assert scheduler.directives(JobFiles("/j"), Request("n")) == [
        '#PBS -l mem=4gb -A "it\'s \\"quoted\\" $(touch pwned)" -W umask=`id`;x '
        '-M "back\\\\slash #not-a-comment" ""']
    assert SCHEDULER.directives(JobFiles("/j"), Request("n")) == []


def test_job_paths_the_wrappers_shell_would_read_are_refused(tmp_path: Path) -> None:
    files = JobFiles(str(tmp_path / "my jobs" / "$(touch pwned)" / "uid-1"))
    with pytest.raises(ValueError, match="job directory"):
        SCHEDULER.submit_command(files, Request("cerise-3f2a1b2c-4d5e"))


def test_submit_passes_every_value_as_a_word_and_no_option(tmp_path: Path) -> None:
    files = JobFiles(str(tmp_path / "jobs" / "uid-1"))
    settings = BatchSettings(queue="long.q", cores_per_node=16, options=HOSTILE_OPTIONS[:2])
    command = TorqueScheduler(settings).submit_command(
        files, Request("cerise-3f2a1b2c-4d5e $(touch pwned)", cores=20, time_limit=360000))
    run = run_with_stub(tmp_path, "qsub", command, stdout="123.server\n")
    assert run.result.returncode == 0, run.result.stderr
    assert run.result.stdout == "123.server\n"
    assert run.calls == [[
        "-N", "cerise3f2a1b2c4", "-j", "oe", "-o", f"{files.job_dir}/scheduler.txt", "-r", "n",
        "-l", "walltime=100:00:00,nodes=2:ppn=10", "-q", "long.q", files.script,
    ]]
    assert not list(tmp_path.rglob("pwned"))


@pytest.mark.parametrize(("cores", "expected"), [
    (0, "mem=3000mb"),
    (20, "nodes=2:ppn=10,mem=3000mb"),
])
def test_submit_asks_for_the_memory_of_the_job(tmp_path: Path, cores: int,
                                               expected: str) -> None:
    settings = BatchSettings(cores_per_node=16)
    command = TorqueScheduler(settings).submit_command(
        JobFiles("/j"), Request("1", cores=cores, memory=3000))
    run = run_with_stub(tmp_path, "qsub", command, stdout="7\n")
    assert run.calls == [["-N", "j1", "-j", "oe", "-o", "/j/scheduler.txt", "-r", "n",
                          "-l", expected, "/j/job.sh"]]


def test_plain_submit(tmp_path: Path) -> None:
    run = run_with_stub(tmp_path, "qsub", SCHEDULER.submit_command(JobFiles("/j"), Request("1")),
                        stdout="7\n")
    assert run.calls == [["-N", "j1", "-j", "oe", "-o", "/j/scheduler.txt", "-r", "n",
                          "/j/job.sh"]]


def test_refused_submit_reports_on_stderr(tmp_path: Path) -> None:
    # The wrappers print sbatch's complaint on stdout and exit non-zero.
    complaint = ("There was an error running the Slurm sbatch command.\n"
                 "'sbatch: error: invalid partition specified: nope'\n")
    command = SCHEDULER.submit_command(JobFiles("/j"), Request("n"))
    run = run_with_stub(tmp_path, "qsub", command, stdout=complaint, status=1)
    assert run.result.returncode != 0
    assert run.result.stdout == ""
    assert "invalid partition" in run.result.stderr


def test_cancel_ignores_finished_jobs(tmp_path: Path) -> None:
    run = run_with_stub(tmp_path, "qdel", SCHEDULER.cancel_script(CAPTURED_JOBS[:2]), status=1)
    assert run.result.returncode == 0
    assert run.calls == [["17", "18"]]


def test_search_finds_a_job_by_the_name_it_was_submitted_under() -> None:
    files = JobFiles("/home/cerise-test/cap/x")
    # The name is cut to 15 letters and digits at submit, and so it is when searched.
    found = SCHEDULER.parse_search(CAPTURED_QSTAT, files, Request(name="cerise-cf5f0a2ae-77"))
    assert found == "17"
    assert SCHEDULER.parse_search(CAPTURED_QSTAT, files, Request(name="cerise-0000")) is None
    assert SCHEDULER.parse_search("", files, Request(name="cerise-cf5f0a2ae")) is None
    with pytest.raises(StatusUnavailable):
        SCHEDULER.parse_search("qstat: cannot connect to server", files,
                               Request(name="cerise-cf5f0a2ae"))
