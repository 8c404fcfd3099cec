"""The `cerise` command."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from cerise import job_commands
from cerise.devenv import up as devenv_up

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
def up(
    state: Annotated[Path | None, typer.Option(
        help="Directory for its jobs, files and logs, kept between starts "
             "(default: $XDG_STATE_HOME/cerise/dev).")] = None,
    port: Annotated[int, typer.Option(help="Port of the REST APIs.")] = devenv_up.API_PORT,
    fresh: Annotated[bool, typer.Option(
        "--fresh", help="Remove the jobs, files and logs of earlier runs first.")] = False,
    use_cluster: Annotated[bool, typer.Option(
        "--use-cluster", help="Use the cluster of KUBECONFIG instead of an embedded "
                              "control plane (installs the CRDs and ClusterRoles).")] = False,
) -> None:
    """Start the whole service on this machine and keep it running until Ctrl-C."""
    raise typer.Exit(devenv_up.dev_up(state or devenv_up.default_state_dir(), port=port,
                                      fresh=fresh, use_cluster=use_cluster))


@app.command("apiserver")
def apiserver(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = devenv_up.API_PORT,
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
