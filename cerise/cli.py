"""The `cerise` command."""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import sys
import threading
from pathlib import Path

import yaml

from cerise.devenv import controlplane, projects
from cerise.devenv.operator import IDENTITY as operator_identity
from cerise.devenv.operator import OperatorProcess
from cerise.devenv.process import StartupError, rss_kib
from cerise.model import compute
from cerise.remote.connection import LocalRemote

EXAMPLE_RESOURCE = controlplane.REPO / "examples" / "compute-resource-local.yaml"


def _state_dir() -> Path:
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "cerise" / "dev"


EXCHANGE_URL = "http://localhost:29593/files"
EXAMPLE_INPUT = ("count-words", "hello.txt",
                 b"Hello from Cerise!\nThis file has three lines\nand twelve words.\n")


def _prepare_local_resource(exchange: Path) -> None:
    """Install the example project for the local resource and seed the example input."""
    spec = compute.parse_spec(yaml.safe_load(EXAMPLE_RESOURCE.read_text())["spec"])
    remote = LocalRemote()
    asyncio.run(projects.install(remote, compute.base_path(spec, remote.username)))
    folder, name, content = EXAMPLE_INPUT
    (exchange / "input" / folder).mkdir(parents=True, exist_ok=True)
    (exchange / "input" / folder / name).write_bytes(content)


def dev_up(state: Path) -> int:
    """Start the local environment and keep it running until interrupted."""
    shutil.rmtree(state, ignore_errors=True)
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    try:
        plane = controlplane.start(
            state / "control-plane",
            identities=[("alice", ("cerise:team-a",)), operator_identity],
            namespaces={"alice": "team-a"},
        )
    except StartupError as error:
        print(f"cerise: {error}", file=sys.stderr)
        return 1
    operator = OperatorProcess(kubeconfig=plane.kubeconfig_for(operator_identity[0]),
                               exchange_dir=state / "files",
                               exchange_url=EXCHANGE_URL, log=state / "operator.log")
    try:
        controlplane.create_tenant(plane, "team-a", "cerise:team-a")
        controlplane.bind_cluster_role(plane, "cerise-operator", operator_identity[1][0])
        _prepare_local_resource(state / "files")
        plane.kubectl("apply", "-n", "default", "-f", str(EXAMPLE_RESOURCE))
        operator.start()
        daemons = [*plane.daemons, operator.daemon]
        memory = ", ".join(f"{d.name.split(' (')[0]} {rss_kib(d.pid) // 1024} MiB"
                           for d in daemons if d is not None)
        kubectl = plane.bindir / "kubectl"
        print(
            f"Cerise development environment is up ({plane.started_in:.1f} s; {memory}).\n"
            f"  API server:  {plane.api_url}\n"
            f"  kubeconfig:  {plane.kubeconfig}  (contexts: admin, alice in team-a)\n"
            f"  exchange:    {state / 'files'}  (clients see it as {EXCHANGE_URL})\n"
            f"  logs:        {plane.workdir}/*.log, {operator.log}\n"
            f"  compute resource 'local' (namespace default) runs jobs on this machine\n"
            f"Try:\n"
            f"  export KUBECONFIG={plane.kubeconfig}\n"
            f"  {kubectl} apply -f examples/workflow-job.yaml\n"
            f"  {kubectl} get wfj -w\n"
            f"  {kubectl} describe wfj count-words\n"
            f"Press Ctrl-C to stop.",
            flush=True,
        )
        while not stop.wait(1.0):
            dead = [d.name for d in daemons if d is not None and not d.alive()]
            if dead:
                print(f"cerise: {', '.join(dead)} exited; see {state}", file=sys.stderr)
                return 1
    finally:
        operator.stop()
        plane.stop()
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `cerise` command."""
    parser = argparse.ArgumentParser(prog="cerise", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    dev = commands.add_parser("dev", help="the local development environment")
    dev_commands = dev.add_subparsers(dest="dev_command", required=True)
    up = dev_commands.add_parser("up", help="start it and keep it running until Ctrl-C")
    up.add_argument("--state", type=Path, default=_state_dir(),
                    help="directory for its state and logs (wiped at start)")
    args = parser.parse_args(argv)
    if args.command == "dev" and args.dev_command == "up":
        return dev_up(args.state)
    parser.error("unknown command")


if __name__ == "__main__":
    sys.exit(main())
