"""The `cerise` command."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import sys
import threading
from pathlib import Path
from typing import Annotated

import typer
import yaml

from cerise import job_commands
from cerise.devenv import controlplane, projects
from cerise.devenv.apiserver import IDENTITY as apiserver_identity
from cerise.devenv.apiserver import ApiserverProcess
from cerise.devenv.operator import IDENTITY as operator_identity
from cerise.devenv.operator import OperatorProcess
from cerise.devenv.process import StartupError, rss_kib
from cerise.model import compute
from cerise.remote.connection import LocalRemote

EXAMPLE_RESOURCE = controlplane.REPO / "examples" / "compute-resource-local.yaml"


def _state_dir() -> Path:
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "cerise" / "dev"


API_PORT = 29593
EXCHANGE_URL = f"http://localhost:{API_PORT}/files"
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
            identities=[("alice", ("cerise:team-a",)), operator_identity, apiserver_identity],
            namespaces={"alice": "team-a"},
        )
    except StartupError as error:
        print(f"cerise: {error}", file=sys.stderr)
        return 1
    operator = OperatorProcess(kubeconfig=plane.kubeconfig_for(operator_identity[0]),
                               exchange_dir=state / "files",
                               exchange_url=EXCHANGE_URL, log=state / "operator.log")
    apiserver = ApiserverProcess(kubeconfig=plane.kubeconfig_for(apiserver_identity[0]),
                                 exchange_dir=state / "files", exchange_url=EXCHANGE_URL,
                                 port=API_PORT, log=state / "apiserver.log")
    try:
        controlplane.create_tenant(plane, "team-a", "cerise:team-a")
        controlplane.bind_cluster_role(plane, "cerise-operator", operator_identity[1][0])
        controlplane.bind_cluster_role(plane, "cerise-apiserver", apiserver_identity[1][0])
        _prepare_local_resource(state / "files")
        plane.kubectl("apply", "-n", "default", "-f", str(EXAMPLE_RESOURCE))
        operator.start()
        apiserver.start()
        daemons = [*plane.daemons, operator.daemon, apiserver.daemon]
        memory = ", ".join(f"{d.name.split(' (')[0]} {rss_kib(d.pid) // 1024} MiB"
                           for d in daemons if d is not None)
        kubectl = plane.bindir / "kubectl"
        print(
            f"Cerise development environment is up ({plane.started_in:.1f} s; {memory}).\n"
            f"  Cerise:      {apiserver.url}  (jobs API /jobs, WES /ga4gh/wes/v1, "
            f"WebDAV /files, docs {apiserver.url}/docs)\n"
            f"  Kubernetes:  {plane.api_url}\n"
            f"  kubeconfig:  {plane.kubeconfig}  (contexts: admin, alice in team-a)\n"
            f"  exchange:    {state / 'files'}  (clients see it as {EXCHANGE_URL})\n"
            f"  logs:        {plane.workdir}/*.log, {operator.log}, {apiserver.log}\n"
            f"  compute resource 'local' (namespace default) runs jobs on this machine\n"
            f"Try, with the published Python client (pip install cerise-client docker):\n"
            f"  python -c 'import cerise_client as c; s = c.Service(\"http://localhost\", "
            f"{API_PORT}); print([j.state for j in s.list_jobs()])'\n"
            f"or with kubectl:\n"
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
        apiserver.stop()
        operator.stop()
        plane.stop()
    return 0


app = typer.Typer(
    name="cerise", no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
    help="Run CWL workflows on HPC compute resources with Cerise.",
    epilog="Exit codes: 0 success, 1 the job failed, 2 usage, 3 cancelled, 4 service "
           "unreachable, 5 refused, 6 not found.")
for _name, _command in job_commands.COMMANDS.items():
    app.command(_name)(_command)
dev = typer.Typer(no_args_is_help=True, help="The local development environment.")
app.add_typer(dev, name="dev")


@dev.command("up")
def up(state: Annotated[Path | None, typer.Option(
        help="Directory for its state and logs (wiped at start) "
             "[default: $XDG_STATE_HOME/cerise/dev].")] = None) -> None:
    """Start the whole service on this machine and keep it running until Ctrl-C."""
    raise typer.Exit(dev_up(state or _state_dir()))


@app.command("apiserver")
def apiserver(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = API_PORT,
) -> None:
    """Serve the REST APIs (configured by CERISE_* environment variables)."""
    from cerise.apiserver.__main__ import serve as serve_api

    serve_api(host, port)


@app.command("operator")
def operator() -> None:
    """Run the operator for all namespaces (configured by CERISE_* and KUBECONFIG)."""
    os.execv(sys.executable, [sys.executable, "-m", "kopf", "run", "--standalone",  # noqa: S606
                              "--all-namespaces", "-m", "cerise.operator.handlers"])


def main() -> None:
    """Entry point of the `cerise` command."""
    app()


if __name__ == "__main__":
    main()
