"""`cerise dev up` as a new user runs it: a job through it, a killed operator restarted,
Ctrl-C leaving no process behind, and the jobs still there at the next start."""

from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from cerise.devenv import controlplane
from cerise.devenv.controlplane import ControlPlane
from cerise.devenv.process import free_port
from tests.integration import http_calls
from tests.integration.api_fixtures import poll_until

pytestmark = pytest.mark.integration

WC = """cwlVersion: v1.2
class: Workflow
inputs: {file: File}
outputs: {counts: {type: File, outputSource: wc/output}}
steps: {wc: {run: cerise/test/wc.cwl, in: {file: file}, out: [output]}}
"""


class Running:
    """A `cerise dev up` process and the lines it prints."""

    def __init__(self, state: Path, port: int, *extra: str,
                 env: dict[str, str] | None = None) -> None:
        self.process = subprocess.Popen(
            [str(Path(sys.executable).parent / "cerise"), "dev", "up", "--state", str(state),
             "--port", str(port), *extra],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
            env=env)
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.put(line)

    def wait_for(self, pattern: str, timeout: float = 120) -> re.Match[str]:
        """The first new line matching `pattern`."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=0.5)
            except queue.Empty:
                if self.process.poll() is not None:
                    break
                continue
            self.seen.append(line)
            found = re.search(pattern, line)
            if found:
                return found
        raise AssertionError(f"no line matching {pattern!r}; it printed:\n{''.join(self.seen)}")


@contextmanager
def dev_up(state: Path, port: int, *extra: str,
           env: dict[str, str] | None = None) -> Iterator[Running]:
    running = Running(state, port, *extra, env=env)
    try:
        yield running
    finally:
        if running.process.poll() is None:
            os.killpg(running.process.pid, signal.SIGKILL)
            running.process.wait()


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"


def processes_mentioning(text: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if text in (entry / "cmdline").read_bytes().decode(errors="replace"):
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def test_the_local_service_keeps_its_jobs_and_restarts_what_dies(
    control_plane: ControlPlane, tmp_path: Path
) -> None:
    # control_plane: the binaries are built and CERISE_BIN_DIR is set for the command.
    state, port = tmp_path / "state", free_port()
    url = f"http://localhost:{port}"
    with dev_up(state, port) as first:
        pids = first.wait_for(r"operator pid (\d+), apiserver pid (\d+)")
        first.wait_for("Press Ctrl-C")
        job = http_calls.post(f"{url}/jobs", json={"name": "count", "workflow": WC, "input": {
            "file": {"class": "File",
                     "location": f"{url}/files/input/count-words/hello.txt"}}}).json()
        poll_until(lambda: http_calls.get(f"{url}/jobs/{job['id']}").json()["state"] == "Success",
                   what="the job succeeding")
        os.kill(int(pids[1]), signal.SIGKILL)
        first.wait_for("the operator exited")
        again = first.wait_for(r"the operator is running again \(pid (\d+)\)")
        started = [int(pids[1]), int(pids[2]), int(again[1])]
        first.process.send_signal(signal.SIGINT)
        assert first.process.wait(timeout=90) == 0
        assert not [pid for pid in started if alive(pid)]
        assert not processes_mentioning(str(state)), "a process of the first run is left"
    with dev_up(state, port) as second:
        second.wait_for("with the jobs of the last run")
        second.wait_for("Press Ctrl-C")
        listed = {found["id"]: found["state"] for found in http_calls.get(f"{url}/jobs").json()}
        assert listed.get(job["id"]) == "Success"
        second.process.send_signal(signal.SIGINT)
        assert second.process.wait(timeout=90) == 0


def test_use_cluster_runs_the_service_against_the_cluster_of_kubeconfig(
    control_plane: ControlPlane, tmp_path: Path
) -> None:
    """`--use-cluster` with a cluster of the user's own (a real control plane that no other
    operator watches): the CRDs and roles applied, a job run there, nothing left running."""
    cluster = controlplane.start(tmp_path / "cluster")
    try:
        state, port = tmp_path / "state", free_port()
        url = f"http://localhost:{port}"
        env = {**os.environ, "KUBECONFIG": str(cluster.kubeconfig)}
        with dev_up(state, port, "--use-cluster", env=env) as running:
            running.wait_for("Kubernetes: +the cluster of KUBECONFIG")
            pids = running.wait_for(r"operator pid (\d+), apiserver pid (\d+)")
            running.wait_for("Press Ctrl-C")
            job = http_calls.post(f"{url}/jobs", json={"name": "count", "workflow": WC, "input": {
                "file": {"class": "File",
                         "location": f"{url}/files/input/count-words/hello.txt"}}}).json()
            poll_until(lambda: http_calls.get(f"{url}/jobs/{job['id']}").json()["state"]
                       == "Success", what="the job succeeding")
            phases = cluster.kubectl("get", "wfj", "-n", "default", "-o",
                                     "jsonpath={.items[*].status.phase}").stdout.split()
            assert phases == ["Success"], phases
            running.process.send_signal(signal.SIGINT)
            assert running.process.wait(timeout=90) == 0
        assert not [pid for pid in (int(pids[1]), int(pids[2])) if alive(pid)]
        assert not processes_mentioning(str(state)), "a process of dev up is left"
        assert not (state / "control-plane").exists()  # none of its own was started
    finally:
        cluster.stop()
