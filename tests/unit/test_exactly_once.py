"""Exactly-once submission across a submit whose answer was lost: a real bash runs the
submit and search scripts over the local remote; only the scheduler's commands are
stand-ins, which keep a queue in a file as the real ones would."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest

from cerise.remote import executor
from cerise.remote.jobscript import JobFiles, SubmitOutcome, SubmitResult
from cerise.remote.local import LocalRemote
from cerise.remote.schedulers import JobRef, Request
from cerise.remote.schedulers.direct import DirectScheduler
from cerise.remote.schedulers.slurm import SlurmScheduler

REQUEST = Request(name="cerise-5d3c0a9e-2b1f-4c4e-9d62-0f6a1b7e8c11")

# sbatch that queues the job and then loses its answer ($1 in `timeouts`: how many times),
# as Slurm's "Socket timed out on send/recv operation" does; squeue lists the queue.
SBATCH = """#!/bin/bash
dir={dir}
n=$(( $(cat "$dir/submits" 2>/dev/null || echo 0) + 1 )); echo $n > "$dir/submits"
for arg; do case $arg in --job-name=*) name=${{arg#--job-name=}};; esac; done
echo "$((40 + n))|$name" >> "$dir/queue"
if [ "$n" -le "$(cat "$dir/timeouts")" ]; then
    echo 'sbatch: error: Batch job submission failed: Socket timed out on send/recv operation' >&2
    exit 1
fi
echo $((40 + n))
"""
SQUEUE = """#!/bin/bash
cat {dir}/queue 2>/dev/null; true
"""


@pytest.fixture
def slurm_stubs(tmp_path: Path) -> tuple[Path, str]:
    """The stand-ins' directory, and a prologue that puts them first on the PATH."""
    state = tmp_path / "slurm"
    (state / "bin").mkdir(parents=True)
    for name, text in (("sbatch", SBATCH), ("squeue", SQUEUE)):
        stub = state / "bin" / name
        stub.write_text(text.format(dir=shlex.quote(str(state))))
        stub.chmod(0o755)
    return state, f"export PATH={shlex.quote(str(state / 'bin'))}:\"$PATH\""


def lose_answers(state: Path, times: int) -> None:
    """Have the stand-in sbatch lose the answer of its first `times` submits."""
    (state / "timeouts").write_text(str(times))


def replace_command(state: Path, name: str, text: str) -> None:
    (state / "bin" / name).write_text(text)


def submits(state: Path) -> int:
    """How many times the stand-in sbatch ran."""
    return int((state / "submits").read_text())


def cut_short_before_the_id_was_recorded(files: JobFiles) -> None:
    """Leave the job's directory as a submit that failed after starting the job would."""
    Path(files.remote_id).unlink()
    Path(files.submit_failed).touch()
    Path(files.lock).rmdir()


@pytest.fixture
def files(tmp_path: Path) -> JobFiles:
    (tmp_path / "job" / "work").mkdir(parents=True)
    return JobFiles(str(tmp_path / "job"))


async def test_a_submit_whose_answer_was_lost_is_found_not_submitted_again(
        slurm_stubs: tuple[Path, str], files: JobFiles) -> None:
    state, prologue = slurm_stubs
    lose_answers(state, 1)
    remote = LocalRemote()
    first = await executor.submit(remote, SlurmScheduler(), files, REQUEST, ["cwltool"],
                                  prologue)
    assert first.outcome is SubmitOutcome.FAILED  # passing: the worker tries again
    second = await executor.submit(remote, SlurmScheduler(), files, REQUEST, ["cwltool"],
                                   prologue)
    assert second == SubmitResult(SubmitOutcome.SUBMITTED, remote_id="41")
    assert submits(state) == 1
    third = await executor.submit(remote, SlurmScheduler(), files, REQUEST, ["cwltool"],
                                  prologue)
    assert third.remote_id == "41" and submits(state) == 1


async def test_a_submit_that_failed_before_queueing_is_submitted_again(
        slurm_stubs: tuple[Path, str], files: JobFiles) -> None:
    state, prologue = slurm_stubs
    lose_answers(state, 1)
    replace_command(state, "sbatch", "#!/bin/bash\necho 'sbatch: error: Unable to contact "
                    "slurm controller' >&2; exit 1\n")
    remote = LocalRemote()
    first = await executor.submit(remote, SlurmScheduler(), files, REQUEST, ["cwltool"],
                                  prologue)
    assert first.outcome is SubmitOutcome.FAILED
    replace_command(state, "sbatch", SBATCH.format(dir=shlex.quote(str(state))))
    lose_answers(state, 0)
    second = await executor.submit(remote, SlurmScheduler(), files, REQUEST, ["cwltool"],
                                   prologue)
    assert second == SubmitResult(SubmitOutcome.SUBMITTED, remote_id="41")


async def test_a_cancel_during_staging_finds_a_job_whose_submit_answer_was_lost(
        slurm_stubs: tuple[Path, str], files: JobFiles) -> None:
    state, prologue = slurm_stubs
    lose_answers(state, 1)
    remote = LocalRemote()
    await executor.submit(remote, SlurmScheduler(), files, REQUEST, ["cwltool"], prologue)
    found = await executor.submission(remote, SlurmScheduler(), files, REQUEST, prologue,
                                      wait_seconds=0)
    assert found == SubmitResult(SubmitOutcome.SUBMITTED, remote_id="41")


async def test_a_search_that_cannot_ask_the_scheduler_submits_nothing(
        slurm_stubs: tuple[Path, str], files: JobFiles) -> None:
    state, prologue = slurm_stubs
    lose_answers(state, 1)
    remote = LocalRemote()
    await executor.submit(remote, SlurmScheduler(), files, REQUEST, ["cwltool"], prologue)
    replace_command(state, "squeue", "#!/bin/bash\necho 'squeue: error: Unable to contact "
                    "slurm controller' >&2; exit 1\n")
    with pytest.raises(executor.RemoteCommandFailed, match="Unable to contact"):
        await executor.submit(remote, SlurmScheduler(), files, REQUEST, ["cwltool"], prologue)
    assert submits(state) == 1


async def test_a_direct_job_found_running_is_not_started_again(
        tmp_path: Path, files: JobFiles) -> None:
    """Scheduler `none`: the job script's process is found by its command line."""
    remote = LocalRemote()
    runner = ["bash", "-c", "sleep 30", "runner"]
    # A submit cut short after it started the job script, before it recorded the PID.
    started = await executor.submit(remote, DirectScheduler(), files, REQUEST, runner)
    cut_short_before_the_id_was_recorded(files)
    try:
        again = await executor.submit(remote, DirectScheduler(), files, REQUEST, runner)
        assert again == started
    finally:
        await executor.cancel(remote, DirectScheduler(), [JobRef("k", files, started.remote_id)])
