"""The `cerise` command as a scientist runs it, against the real service."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from tests.integration.api_fixtures import Api, poll_until

pytestmark = pytest.mark.integration

WC = """cwlVersion: v1.2
class: Workflow
inputs: {file: File}
outputs: {counts: {type: File, outputSource: wc/output}}
steps: {wc: {run: cerise/test/wc.cwl, in: {file: file}, out: [output]}}
"""
SLEEP = """cwlVersion: v1.2
class: Workflow
inputs: {delay: int}
outputs: {}
steps: {sleep: {run: cerise/test/sleep.cwl, in: {delay: delay}, out: []}}
"""


def cerise(
    api: Api | None, *args: str, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """Run the installed `cerise` command."""
    command = str(Path(sys.executable).parent / "cerise")
    url = ["--url", api.url] if api is not None else []
    return subprocess.run([command, *args, *url], capture_output=True, text=True, timeout=180,
                          cwd=cwd, env={"PATH": "/usr/bin:/bin", "HOME": str(cwd or "/tmp"),
                                        "COLUMNS": "120",
                                        # the code under test, in a worktree too
                                        "PYTHONPATH": os.environ.get("PYTHONPATH", "")})


def test_submit_wait_uploads_inputs_and_downloads_outputs(
    single_user_api: Api, tmp_path: Path
) -> None:
    (tmp_path / "wc.cwl").write_text(WC)
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "words.txt").write_text("one two three\nfour\n")
    (tmp_path / "inputs.yml").write_text("file: {class: File, path: data/words.txt}\n")
    done = cerise(single_user_api, "submit", "wc.cwl", "inputs.yml", "--wait", "--json",
                  cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    job = json.loads(done.stdout)
    assert job["state"] == "Success"
    assert job["accounting"]["source"] == "jobscript", job
    shown = cerise(single_user_api, "status", job["id"])
    assert "cost: elapsed " in shown.stdout and "core-hours (jobscript)" in shown.stdout, (
        shown.stdout)
    saved = cerise(single_user_api, "outputs", job["id"], "--download", "results",
                   cwd=tmp_path)
    assert saved.returncode == 0, saved.stderr
    assert (tmp_path / "results" / "output.txt").read_text().split()[:3] == ["2", "4", "19"]
    listed = json.loads(cerise(single_user_api, "list", "--json").stdout)
    assert job["id"] in [found["id"] for found in listed]
    log = cerise(single_user_api, "logs", job["id"])
    assert "Final process status is success" in log.stdout


def test_a_failing_job_exits_1_with_its_message(single_user_api: Api, tmp_path: Path) -> None:
    (tmp_path / "wc.cwl").write_text(WC.replace("cerise/test/wc.cwl", "cerise/test/nope.cwl"))
    done = cerise(single_user_api, "submit", "wc.cwl", "--wait", cwd=tmp_path)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "PermanentFailure" in done.stdout
    assert "Traceback" not in done.stderr


def test_cancel_and_status(single_user_api: Api, tmp_path: Path) -> None:
    delay = 1000 + uuid.uuid4().int % 9000
    (tmp_path / "sleep.cwl").write_text(SLEEP)
    (tmp_path / "inputs.yml").write_text(f"delay: {delay}\n")
    submitted = cerise(single_user_api, "submit", "sleep.cwl", "inputs.yml", "--json",
                       cwd=tmp_path)
    job_id = json.loads(submitted.stdout)["id"]

    def running() -> bool:
        job = json.loads(cerise(single_user_api, "status", job_id, "--json").stdout)
        return bool(job["state"] == "Running")

    poll_until(running, what="the job running")
    assert cerise(single_user_api, "cancel", job_id).returncode == 0

    def cancelled() -> bool:
        return cerise(single_user_api, "status", job_id).returncode == 3

    poll_until(cancelled, what="the job cancelled")
    assert cerise(single_user_api, "delete", job_id).returncode == 0
    missing = cerise(single_user_api, "status", job_id)
    assert missing.returncode == 6 and "no job" in missing.stderr


def test_errors_are_one_line_without_a_traceback(tmp_path: Path) -> None:
    unreachable = cerise(None, "list", "--url", "http://127.0.0.1:9")
    assert unreachable.returncode == 4
    assert "cannot reach Cerise" in unreachable.stderr and "Traceback" not in unreachable.stderr
    (tmp_path / "inputs.yml").write_text("file: {class: File, path: missing.txt}\n")
    (tmp_path / "wc.cwl").write_text(WC)
    missing = cerise(None, "submit", "wc.cwl", "inputs.yml", "--url", "http://127.0.0.1:9",
                     cwd=tmp_path)
    assert missing.returncode in (2, 4) and "Traceback" not in missing.stderr
