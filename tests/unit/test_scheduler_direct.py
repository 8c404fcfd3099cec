"""Scheduler `none`: what its submit refuses before starting anything."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

from cerise.remote.jobscript import JobFiles
from cerise.remote.schedulers import Request
from cerise.remote.schedulers.direct import DirectScheduler


def host_memory() -> int:
    """This host's MemTotal in MiB."""
    line = next(line for line in Path("/proc/meminfo").read_text().splitlines()
                if line.startswith("MemTotal:"))
    return int(line.split()[1]) // 1024


def submit(tmp_path: Path, memory: int) -> tuple[subprocess.CompletedProcess[str], Path]:
    files = JobFiles(str(tmp_path / "job dir"))
    ran = tmp_path / "ran"
    Path(files.job_dir).mkdir()
    Path(files.script).write_text(f"touch '{ran}'\n")
    command = DirectScheduler().submit_command(files, Request("n", memory=memory))
    return subprocess.run(["bash", "-c", command], capture_output=True, text=True,
                          check=False), ran


def test_memory_beyond_the_host_is_refused_with_the_numbers(tmp_path: Path) -> None:
    run, ran = submit(tmp_path, host_memory() + 1)
    assert run.returncode == 1
    assert run.stdout == ""
    assert run.stderr == (f"none: the job asks for {host_memory() + 1} MiB of memory, but this "
                          f"host has {host_memory()} MiB\n")
    assert not ran.exists()


def test_memory_the_host_has_is_started(tmp_path: Path) -> None:
    run, ran = submit(tmp_path, host_memory())
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip().isdigit()
    deadline = time.monotonic() + 10
    while not ran.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert ran.exists()
