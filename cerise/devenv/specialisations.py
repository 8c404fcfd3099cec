"""The example Specialisation (examples/specialisation.yaml) for `cerise dev up`, the tests and
the benchmarks, whose operator runs from this repository: its `path` sources, which name
the image's copy under /opt/cerise, point into the repository instead."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from cerise.devenv import controlplane
from cerise.devenv.controlplane import ControlPlane
from cerise.devenv.process import StartupError

EXAMPLE = controlplane.REPO / "examples" / "specialisation.yaml"
IMAGE_ROOT = "/opt/cerise/"
"""Where the image keeps this repository's `specialisations/` (see the Dockerfile)."""


def example(resources: Sequence[str]) -> dict[str, Any]:
    """The example Specialisation (named `example`) for `resources`."""
    body: dict[str, Any] = yaml.safe_load(EXAMPLE.read_text())
    body["spec"]["computeResources"] = list(resources)
    for project in body["spec"]["projects"]:
        path = project["source"].get("path", "")
        if path.startswith(IMAGE_ROOT):
            project["source"]["path"] = str(controlplane.REPO / path[len(IMAGE_ROOT):])
    return body


def write_example(target: Path, resources: Sequence[str]) -> Path:
    """The example Specialisation as a file for `kubectl apply -f`."""
    target.write_text(json.dumps(example(resources)))
    return target


def wait_ready(plane: ControlPlane, namespace: str, name: str,
               timeout: float = 60.0) -> dict[str, Any]:
    """Poll a Specialisation until it is Ready; its status. StartupError if it failed."""
    deadline = time.monotonic() + timeout
    status: dict[str, Any] = {}
    while time.monotonic() < deadline:
        result = plane.kubectl("get", "specialisation", name, "-n", namespace, "-o", "json",
                               check=False)
        if result.returncode == 0:
            status = json.loads(result.stdout).get("status") or {}
            ready = [c for c in status.get("conditions", []) if c["type"] == "Ready"]
            if ready and ready[0]["status"] == "True":
                return status
            if ready and ready[0]["reason"] == "InstallFailed":
                raise StartupError(f"Specialisation {namespace}/{name} failed: {status}")
        time.sleep(0.05)
    raise StartupError(f"Specialisation {namespace}/{name} not ready after {timeout} s: {status}")
