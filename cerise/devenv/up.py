"""`cerise dev up`: the whole service on one machine, keeping its work between starts.

It starts (or, with `--use-cluster`, uses the cluster of `KUBECONFIG` instead of) an
embedded control plane, the CRDs and RBAC, PostgreSQL for the archive of finished jobs
(`cerise.devenv.postgres`, its data in the state directory), the operator, the apiserver on
127.0.0.1:`port` in single-user mode and a `local` ComputeResource, then supervises the
operator and the apiserver as a Deployment would: one that exits is started again, with a
line saying so. Jobs (in etcd), outputs and the exchange live under the state directory
and survive a restart; `--fresh` wipes them first. Ctrl-C stops every process it started.
Jobs already handed to the local compute resource run on, as they would on a cluster,
and are picked up again at the next start.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import yaml

from cerise.devenv import controlplane, postgres, specialisations
from cerise.devenv.apiserver import IDENTITY as APISERVER_IDENTITY
from cerise.devenv.apiserver import ApiserverProcess
from cerise.devenv.operator import IDENTITY as OPERATOR_IDENTITY
from cerise.devenv.operator import OperatorProcess
from cerise.devenv.process import StartupError, rss_kib

API_PORT = 29593
"""The original Cerise's port."""
EXAMPLE_RESOURCE = controlplane.REPO / "examples" / "compute-resource-local.yaml"
EXAMPLE_INPUT = ("count-words", "hello.txt",
                 b"Hello from Cerise!\nThis file has three lines\nand twelve words.\n")
RESTART_BACKOFF = (1.0, 2.0, 5.0, 10.0, 30.0)
"""Seconds before restarting a component that exited, by how often it exited recently."""


DEV_LEASE_TIMINGS = {"CERISE_LEASE_DURATION": "5", "CERISE_LEASE_RENEW_DEADLINE": "3",
                     "CERISE_LEASE_RETRY": "1"}
"""The one operator of a development setup, restarted after a crash, takes its resources'
Leases back within seconds (the defaults, for replicas in a cluster, are 15, 10 and 2 s)."""

def default_state_dir() -> Path:
    """`$XDG_STATE_HOME/cerise/dev` (or `~/.local/state/cerise/dev`)."""
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "cerise" / "dev"


def say(message: str) -> None:
    """A line for the person who started it."""
    print(f"cerise: {message}", flush=True)


def _prepare_local_resource(state: Path, kubeconfig: Path) -> None:
    """Have the operator install the example projects on the local resource (the example
    Specialisation, from this repository) and seed the example input."""
    resource = yaml.safe_load(EXAMPLE_RESOURCE.read_text())["metadata"]["name"]
    example = specialisations.write_example(state / "specialisation.json", [resource])
    _kubectl(kubeconfig, "apply", "-n", "default", "-f", str(example))
    exchange = state / "files"
    folder, name, content = EXAMPLE_INPUT
    (exchange / "input" / folder).mkdir(parents=True, exist_ok=True)
    (exchange / "input" / folder / name).write_bytes(content)


@dataclass
class Supervised:
    """A component that is started again when it exits."""

    name: str
    process: OperatorProcess | ApiserverProcess
    exits: int = 0
    next_start: float = 0.0

    def pid(self) -> int | None:
        daemon = self.process.daemon
        return daemon.pid if daemon is not None and daemon.alive() else None

    def check(self) -> None:
        """Start it again if it has exited (after a back-off that grows if it keeps exiting)."""
        daemon = self.process.daemon
        if daemon is None or daemon.alive():
            return
        now = time.monotonic()
        if self.next_start == 0.0:
            code = daemon.process.returncode if daemon.process is not None else None
            delay = RESTART_BACKOFF[min(self.exits, len(RESTART_BACKOFF) - 1)]
            self.exits += 1
            self.next_start = now + delay
            say(f"the {self.name} exited (status {code}); restarting it in {delay:g} s "
                f"(see {daemon.log})")
            return
        if now >= self.next_start:
            self.next_start = 0.0
            try:
                self.process.start()
            except StartupError as error:
                say(f"the {self.name} did not start again: {str(error).splitlines()[0]}")
                return
            say(f"the {self.name} is running again (pid {self.pid()})")


@contextmanager
def _signals() -> Iterator[threading.Event]:
    stop = threading.Event()
    previous = {signum: signal.signal(signum, lambda *_: stop.set())
                for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stop
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def dev_up(state: Path, *, port: int = API_PORT, fresh: bool = False,
           use_cluster: bool = False) -> int:
    """Start everything, supervise it until Ctrl-C, then stop it; the exit status."""
    if fresh and state.exists():
        say(f"starting afresh: removing {state}")
        shutil.rmtree(state)
    resumed = (state / "control-plane" / "etcd").exists() and not use_cluster
    state.mkdir(parents=True, exist_ok=True)
    exchange_url = f"http://localhost:{port}/files"
    with _signals() as stop, ExitStack() as stack:
        plane = None
        try:
            began = time.monotonic()
            if use_cluster:
                kubeconfig = _use_cluster()
                operator_config = apiserver_config = kubeconfig
            else:
                plane = controlplane.start(
                    state / "control-plane",
                    identities=[("alice", ("cerise:team-a",)), OPERATOR_IDENTITY,
                                APISERVER_IDENTITY],
                    namespaces={"alice": "team-a"})
                controlplane.create_tenant(plane, "team-a", "cerise:team-a")
                controlplane.bind_cluster_role(plane, "cerise-operator", OPERATOR_IDENTITY[1][0])
                controlplane.bind_cluster_role(plane, "cerise-apiserver",
                                               APISERVER_IDENTITY[1][0])
                kubeconfig = plane.kubeconfig
                operator_config = plane.kubeconfig_for(OPERATOR_IDENTITY[0])
                apiserver_config = plane.kubeconfig_for(APISERVER_IDENTITY[0])
            _prepare_local_resource(state, kubeconfig)
            _kubectl(kubeconfig, "apply", "-n", "default", "-f", str(EXAMPLE_RESOURCE))
            archive = postgres.start(state / "archive")
            stack.callback(archive.stop)
            archived = {"CERISE_ARCHIVE_URL": archive.url}
            components = [
                Supervised("operator", OperatorProcess(
                    kubeconfig=operator_config, exchange_dir=state / "files",
                    exchange_url=exchange_url, log=state / "operator.log",
                    extra_env={**archived, **DEV_LEASE_TIMINGS})),
                Supervised("apiserver", ApiserverProcess(
                    kubeconfig=apiserver_config, exchange_dir=state / "files",
                    exchange_url=exchange_url, port=port, log=state / "apiserver.log",
                    extra_env=archived)),
            ]
            try:
                for component in components:
                    component.process.start()
                _welcome(state, plane, kubeconfig, components, exchange_url, port,
                         time.monotonic() - began, resumed)
                while not stop.wait(0.5):
                    if plane is not None:
                        dead = [d.name for d in plane.daemons if not d.alive()]
                        if dead:
                            say(f"{', '.join(dead)} exited; see {plane.workdir}; stopping")
                            return 1
                    for component in components:
                        component.check()
                say("stopping")
            finally:
                for component in reversed(components):
                    component.process.stop()
        except StartupError as error:
            say(str(error))
            return 1
        finally:
            if plane is not None:
                plane.stop()
    return 0


def _use_cluster() -> Path:
    """The cluster of KUBECONFIG, with Cerise's CRDs and ClusterRoles applied."""
    configured = os.environ.get("KUBECONFIG")
    if not configured:
        raise StartupError("--use-cluster needs KUBECONFIG to name the cluster's kubeconfig")
    kubeconfig = Path(configured.split(os.pathsep)[0])
    _kubectl(kubeconfig, "apply", "-f", str(controlplane.CRDS))
    _kubectl(kubeconfig, "wait", "--for=condition=Established", "--timeout=60s",
             "-f", str(controlplane.CRDS))
    _kubectl(kubeconfig, "apply", "-f", str(controlplane.RBAC))
    return kubeconfig


def _kubectl(kubeconfig: Path, *args: str) -> None:
    kubectl = controlplane.bin_dir() / "kubectl"
    done = subprocess.run([str(kubectl), "--kubeconfig", str(kubeconfig), *args],
                          capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        raise StartupError(f"kubectl {' '.join(args)} failed: {done.stderr.strip()}")


def _welcome(state: Path, plane: controlplane.ControlPlane | None, kubeconfig: Path,
             components: list[Supervised], exchange_url: str, port: int, took: float,
             resumed: bool) -> None:
    daemons = [*(plane.daemons if plane else []),
               *(c.process.daemon for c in components if c.process.daemon)]
    memory = ", ".join(f"{d.name.split(' (')[0]} {rss_kib(d.pid) // 1024} MiB" for d in daemons)
    pids = ", ".join(f"{c.name} pid {c.pid()}" for c in components)
    url = f"http://localhost:{port}"
    kubectl = controlplane.bin_dir() / "kubectl"
    where = "the cluster of KUBECONFIG" if plane is None else plane.api_url
    again = " with the jobs of the last run (--fresh starts afresh)" if resumed else ""
    print(
        f"Cerise is up in {took:.1f} s{again}.\n"
        f"  Cerise:      {url}  (jobs API /jobs, WES /ga4gh/wes/v1, WebDAV /files, "
        f"API docs {url}/docs)\n"
        f"  Kubernetes:  {where}\n"
        f"  kubeconfig:  {kubeconfig}\n"
        f"  exchange:    {state / 'files'}  (clients see it as {exchange_url})\n"
        f"  logs:        {state}/*.log  ({pids}; {memory})\n"
        f"  compute resource 'local' (namespace default) runs jobs on this machine\n"
        f"Try:\n"
        f"  {Path(sys.executable).parent / 'cerise'} list --url {url}\n"
        f"  export KUBECONFIG={kubeconfig}\n"
        f"  {kubectl} apply -f examples/workflow-job.yaml && {kubectl} get wfj -w\n"
        f"Press Ctrl-C to stop.",
        flush=True,
    )
