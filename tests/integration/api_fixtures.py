"""Session fixtures for the apiserver: single-user (the operator's exchange) and cluster mode.

* `single_user_api`: serves namespace `SINGLE` with a `local` ComputeResource, no
  credentials, on the port the session operator advertises its exchange under
  (`EXCHANGE_URL`), so jobs made through it run end to end.
* `cluster_api`: bearer tokens required, an exchange per namespace of its own; used for
  tenant isolation (alice in team-a, bob in team-b).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from cerise.devenv import specialisations
from cerise.devenv.apiserver import IDENTITY, ApiserverProcess
from cerise.devenv.controlplane import ControlPlane
from cerise.devenv.operator import OperatorProcess
from cerise.devenv.postgres import Postgres
from cerise.devenv.process import free_port, wait_until
from tests.integration import http_calls
from tests.integration.operator_fixtures import API_PORT, EXCHANGE_URL, apply

SINGLE = "single-user"
"""The namespace the single-user apiserver serves."""


@dataclass(frozen=True)
class Api:
    """A running apiserver."""

    url: str
    exchange_dir: Path
    process: ApiserverProcess


@pytest.fixture(scope="session")
def single_user_api(
    control_plane: ControlPlane, operator: OperatorProcess, exchange_dir: Path,
    tmp_path_factory: pytest.TempPathFactory, archive_db: Postgres,
) -> Iterator[Api]:
    """The apiserver as `./dev up` runs it, with a local compute resource to run jobs on."""
    base = tmp_path_factory.mktemp("single-user-resource") / "cerise"
    control_plane.kubectl("create", "namespace", SINGLE)
    apply(control_plane, SINGLE, {
        "apiVersion": "cerise.dev/v1alpha1", "kind": "ComputeResource",
        "metadata": {"name": "local"},
        "spec": {"refreshSeconds": 0.2, "files": {"protocol": "local", "path": str(base)},
                 "jobs": {"protocol": "local", "scheduler": "none"}}},
          specialisations.example(["local"]))
    process = ApiserverProcess(
        kubeconfig=control_plane.kubeconfig_for(IDENTITY[0]), exchange_dir=exchange_dir,
        exchange_url=EXCHANGE_URL, port=API_PORT, namespace=SINGLE,
        log=tmp_path_factory.mktemp("apiserver") / "single-user.log",
        extra_env={"CERISE_ARCHIVE_URL": archive_db.url})
    process.start()
    api = Api(f"http://localhost:{API_PORT}", exchange_dir, process)
    # The ComputeResource must be in the apiserver's cache before jobs can go to it.
    wait_until(lambda: _resource_known(api.url), timeout=30, what="the ComputeResource")
    specialisations.wait_ready(control_plane, SINGLE, "example")
    yield api
    process.stop()


def pause_after(look: float) -> float:
    """How long to wait after a look that took `look` s before the next: 0.1 s, or four
    times a costly look's time (a `kubectl` run, say), so that polling keeps at most a fifth
    of a core busy and leaves the machine to the components under test."""
    return max(0.1, 4 * look)


def poll_until(condition: Callable[[], bool], timeout: float = 60.0, what: str = "it") -> None:
    """Poll `condition` until it holds (`pause_after` apart); fail the test if it does not
    within `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        started = time.monotonic()
        if condition():
            return
        if (now := time.monotonic()) > deadline:
            raise AssertionError(f"{what} did not happen within {timeout} s")
        time.sleep(pause_after(now - started))


def _resource_known(url: str) -> bool:
    info = http_calls.get(f"{url}/ga4gh/wes/v1/service-info", timeout=5).json()
    return bool(info["default_workflow_engine_parameters"][0]["default_value"] == "local")


@pytest.fixture(scope="session")
def cluster_api(
    control_plane: ControlPlane, tmp_path_factory: pytest.TempPathFactory, archive_db: Postgres,
) -> Iterator[Api]:
    """The apiserver in cluster mode: tokens checked, RBAC decides, an exchange per namespace;
    team-a is also served at the root."""
    port = free_port()
    exchange = tmp_path_factory.mktemp("cluster-exchange")
    process = ApiserverProcess(
        kubeconfig=control_plane.kubeconfig_for(IDENTITY[0]), exchange_dir=exchange,
        exchange_url=f"http://localhost:{port}/ns/{{namespace}}/files", port=port,
        auth="kubernetes", namespace="team-a",
        log=tmp_path_factory.mktemp("apiserver") / "cluster.log",
        extra_env={"CERISE_ARCHIVE_URL": archive_db.url, "CERISE_METRICS_PORT": str(free_port())})
    process.start()
    yield Api(f"http://localhost:{port}", exchange, process)
    process.stop()
