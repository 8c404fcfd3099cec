"""Schemathesis against the served OpenAPI document: generated requests, zero 5xx."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from cerise.devenv.controlplane import ControlPlane
from tests.integration.api_fixtures import Api

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("mode", ["single-user", "cluster"])
def test_no_request_makes_a_server_error(
    mode: str, single_user_api: Api, cluster_api: Api, control_plane: ControlPlane,
    tmp_path: Path,
) -> None:
    api, headers = single_user_api, []
    if mode == "cluster":  # as alice, whose namespace is team-a
        api = cluster_api
        headers = ["-H", f"Authorization: Bearer {control_plane.identities['alice'].token}"]
    command = Path(sys.executable).parent / "schemathesis"
    # One worker: with two threads, CPython 3.11's ast conversion can fail in schemathesis
    # itself ("AST constructor recursion depth mismatch", CPython gh-106905).
    result = subprocess.run(
        [str(command), "run", f"{api.url}/openapi.json", "--checks", "not_a_server_error",
         "--max-examples", "15", "--seed", "1", "--workers", "1",
         "--phases", "examples,coverage,fuzzing", "--request-timeout", "30",
         "--suppress-health-check", "all", "--no-color", *headers],
        capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    counts = re.search(r"(\d+) generated, (\d+) passed", result.stdout)
    assert counts and counts[1] == counts[2] and int(counts[1]) > 200, result.stdout[-3000:]
