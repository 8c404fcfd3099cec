"""The operator's start-up checks of its settings (`cerise.operator.settings`), on the real
`kopf run` command line against the real API server."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from cerise.devenv.controlplane import ControlPlane
from cerise.devenv.operator import IDENTITY

pytestmark = pytest.mark.integration


def start_operator(plane: ControlPlane, exchange: Path, url: str, *namespaces: str,
                   **env: str) -> subprocess.CompletedProcess[str]:
    """`kopf run` of the operator, for at most 30 s (it is stopped if still running)."""
    options = [f"--namespace={n}" for n in namespaces] or ["--all-namespaces"]
    try:
        return subprocess.run(
            [sys.executable, "-m", "kopf", "run", "--standalone", *options,
             "-m", "cerise.operator.handlers"],
            env={**os.environ, "KUBECONFIG": str(plane.kubeconfig_for(IDENTITY[0])),
                 "CERISE_EXCHANGE_DIR": str(exchange), "CERISE_EXCHANGE_URL": url,
                 "CERISE_METRICS_PORT": "0", **env},
            capture_output=True, text=True, timeout=30)
    except subprocess.TimeoutExpired as expired:
        raise AssertionError(f"the operator did not stop by itself: {expired.stderr!r}") from None


@pytest.mark.parametrize("namespaces", [(), ("a", "b"), ("team-*",)])
def test_one_exchange_directory_for_several_namespaces_is_refused(
    control_plane: ControlPlane, tmp_path: Path, namespaces: tuple[str, ...],
) -> None:
    done = start_operator(control_plane, tmp_path, "http://localhost:29593/files", *namespaces)
    assert done.returncode != 0
    assert "would keep their files in one exchange directory" in done.stderr, done.stderr[-3000:]
    assert "put {namespace} in CERISE_EXCHANGE_URL" in done.stderr
