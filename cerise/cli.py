"""The `cerise` command."""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import sys
import threading
from pathlib import Path

from cerise.devenv import controlplane
from cerise.devenv.process import StartupError, rss_kib


def _state_dir() -> Path:
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "cerise" / "dev"


def dev_up(state: Path) -> int:
    """Start the local environment and keep it running until interrupted."""
    shutil.rmtree(state, ignore_errors=True)
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    try:
        plane = controlplane.start(
            state / "control-plane",
            identities=[("alice", ("cerise:team-a",))],
            namespaces={"alice": "team-a"},
        )
    except StartupError as error:
        print(f"cerise: {error}", file=sys.stderr)
        return 1
    try:
        controlplane.create_tenant(plane, "team-a", "cerise:team-a")
        memory = ", ".join(f"{d.name} {rss_kib(d.pid) // 1024} MiB" for d in plane.daemons)
        print(
            f"Cerise development environment is up ({plane.started_in:.1f} s; {memory}).\n"
            f"  API server:  {plane.api_url}\n"
            f"  kubeconfig:  {plane.kubeconfig}  (contexts: admin, alice in team-a)\n"
            f"  logs:        {plane.workdir}/*.log\n"
            f"Try:\n"
            f"  export KUBECONFIG={plane.kubeconfig}\n"
            f"  {plane.bindir / 'kubectl'} get crd\n"
            f"  {plane.bindir / 'kubectl'} apply -f examples/compute-resource-local.yaml\n"
            f"  {plane.bindir / 'kubectl'} get cerise\n"
            f"Press Ctrl-C to stop.",
            flush=True,
        )
        while not stop.wait(1.0):
            dead = [d.name for d in plane.daemons if not d.alive()]
            if dead:
                print(f"cerise: {', '.join(dead)} exited; see {plane.workdir}", file=sys.stderr)
                return 1
    finally:
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
