"""The `cerise` commands a scientist uses: submit, list, status, logs, outputs, cancel, delete.

They talk to the REST APIs (`cerise.client`), so they work against any deployment: the
service's URL and token come from `--url`/`--token`, the environment (`CERISE_URL`,
`CERISE_TOKEN`) or `~/.config/cerise/config.yml` (`url:`, `token:`), in that order.
Errors are one line on stderr, never a traceback; exit codes are `client.ExitCode`.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml
from rich.console import Console, Group
from rich.live import Live
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from cerise.client import FINAL_STATES, Client, ClientError, ExitCode, exit_code_for
from cerise.model import accounting, callbacks, names

DEFAULT_URL = "http://localhost:29593"
CONFIG = (Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
          / "cerise" / "config.yml")
STATE_STYLES = {"Waiting": "yellow", "Running": "cyan", "Success": "green",
                "Cancelled": "magenta", "PermanentFailure": "red", "TemporaryFailure": "red",
                "SystemError": "red"}
LOG_TAIL = 12

out = Console()
err = Console(stderr=True)

UrlOption = Annotated[str | None, typer.Option(
    "--url", help=f"Cerise's base URL [env CERISE_URL; default {DEFAULT_URL}]")]
TokenOption = Annotated[str | None, typer.Option(
    "--token", help="A bearer token, for a service in cluster mode [env CERISE_TOKEN]")]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]
JobArgument = Annotated[str, typer.Argument(help="The job's id.")]


def _settings() -> dict[str, str]:
    try:
        loaded = yaml.safe_load(CONFIG.read_text()) if CONFIG.exists() else {}
    except (OSError, yaml.YAMLError) as error:
        raise ClientError(f"cannot read {CONFIG}: {error}", ExitCode.USAGE) from None
    return {str(k): str(v) for k, v in (loaded or {}).items()} if isinstance(loaded, dict) else {}


@contextmanager
def _client(url: str | None, token: str | None) -> Iterator[Client]:
    """A client for the configured service; ClientErrors become a message and an exit."""
    try:
        saved = _settings()
        client = Client(url or os.environ.get("CERISE_URL") or saved.get("url") or DEFAULT_URL,
                        token or os.environ.get("CERISE_TOKEN") or saved.get("token"))
        try:
            yield client
        finally:
            client.close()
    except ClientError as error:
        err.print(f"[bold red]cerise:[/] {error}", highlight=False)
        raise typer.Exit(error.code) from None


def _state(state: str) -> Text:
    return Text(state, style=STATE_STYLES.get(state, ""))


def _print_json(value: Any) -> None:
    sys.stdout.write(json.dumps(value, indent=2) + "\n")


def submit(
    workflow: Annotated[str, typer.Argument(help="A CWL workflow file, or its URL.")],
    inputs: Annotated[Path | None, typer.Argument(
        help="A YAML/JSON CWL input object; its local files are uploaded.")] = None,
    name: Annotated[str | None, typer.Option(help="A name for the job.")] = None,
    resource: Annotated[str | None, typer.Option(
        help="The ComputeResource to run on (default: the service's).")] = None,
    callback: Annotated[str | None, typer.Option(
        help="An http(s) URL to POST the job's summary to, signed, when it ends.")] = None,
    wait: Annotated[bool, typer.Option(
        "--wait", help="Follow the job until it ends; exit with its outcome.")] = False,
    url: UrlOption = None, token: TokenOption = None, as_json: JsonOption = False,
) -> None:
    """Submit a workflow run; with --wait, follow it live and exit 0 only on Success."""
    local = Path(workflow)
    with _client(url, token) as client:
        problem = names.problem(name or local.stem) or (
            None if callback is None else callbacks.url_problem(callback))
        if problem is not None:  # before anything is uploaded
            raise ClientError(problem, ExitCode.USAGE)
        input_object: dict[str, Any] = {}
        if inputs is not None:
            input_object = _read_inputs(inputs)
            input_object = client.upload_inputs(input_object, inputs.resolve().parent)
        if local.is_file():
            location = client.upload_workflow(local)
        elif "://" in workflow:
            location = workflow
        else:
            raise ClientError(f"the workflow {workflow} is neither a file nor a URL",
                              ExitCode.USAGE)
        job = client.submit(location, input_object, name=name or local.stem, resource=resource,
                            callback=callback)
        if not wait:
            if as_json:
                _print_json(job)
            else:
                out.print(f"submitted [bold]{job['id']}[/] ({job['state']}); follow it with "
                          f"[bold]cerise status {job['id']}[/] or [bold]cerise logs --follow "
                          f"{job['id']}[/]", highlight=False)
            return
        final = _follow(client, job["id"], quiet=as_json)
        if as_json:
            _print_json(final)
        else:
            _summary(final)
        raise typer.Exit(exit_code_for(final["state"]))


def _read_inputs(path: Path) -> dict[str, Any]:
    try:
        loaded = yaml.safe_load(path.read_text())
    except OSError as error:
        raise ClientError(f"cannot read {path}: {error.strerror}", ExitCode.USAGE) from None
    except yaml.YAMLError as error:
        raise ClientError(f"{path} is not valid YAML or JSON: {error}", ExitCode.USAGE) from None
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise ClientError(f"{path} must hold a mapping of input names to values",
                          ExitCode.USAGE)
    return loaded


def _follow(client: Client, job_id: str, *, quiet: bool = False,
            interval: float = 1.0) -> dict[str, Any]:
    """Show the job, its steps and its log tail live until it ends; return it."""
    def view() -> tuple[dict[str, Any], Group]:
        job = client.job(job_id)
        steps = Table("step", "state", "started", "ended", box=None, pad_edge=False)
        for task in client.steps(job_id):
            state = (task.get("system_logs") or ["state: Running"])[0].removeprefix("state: ")
            steps.add_row(task["name"], _state(state), task.get("start_time") or "",
                          task.get("end_time") or "")
        tail = "\n".join(client.log(job_id).splitlines()[-LOG_TAIL:])
        header = Text.assemble(("job ", "bold"), (job["id"], "bold"), "  ",
                               _state(job["state"]), f"  {names.printable(job.get('name', ''))}")
        # Text, not markup: cwltool's "[step wc]" must not be read as a style tag.
        return job, Group(header, steps, Panel(Text(tail or "(no log yet)"), title="log",
                                               border_style="dim"))

    job, shown = view()
    with Live(shown, console=err, refresh_per_second=4, transient=False,
              auto_refresh=not quiet) as live:
        while job["state"] not in FINAL_STATES:
            time.sleep(interval)
            job, shown = view()
            if not quiet:
                live.update(shown)
    if not quiet:
        err.print()
    return job


def _summary(job: dict[str, Any]) -> None:
    out.print(Text.assemble(("job ", "bold"), (job["id"], "bold"), " ended ",
                            _state(job["state"])))
    if job.get("accounting"):
        out.print(f"  cost: {accounting.describe(job['accounting'])}", highlight=False)
    for name, value in (job.get("output") or {}).items():
        if isinstance(value, dict) and value.get("class") in ("File", "Directory"):
            out.print(f"  {name}: {value.get('location')}", highlight=False)
        else:
            out.print(f"  {name}: {json.dumps(value)}", highlight=False)


def list_jobs(url: UrlOption = None, token: TokenOption = None,
              as_json: JsonOption = False) -> None:
    """List the jobs you can see, oldest first."""
    with _client(url, token) as client:
        jobs = client.jobs()
    if as_json:
        _print_json(jobs)
        return
    table = Table("id", "name", "state", box=None)
    for job in jobs:
        table.add_row(job["id"], Text(names.printable(job.get("name", ""))),
                      _state(job["state"]))
    out.print(table if jobs else "no jobs")


def status(job_id: JobArgument, url: UrlOption = None, token: TokenOption = None,
           as_json: JsonOption = False) -> None:
    """Show one job; exit 0 for Success, 1 for a failure, 3 cancelled, 0 while it runs."""
    with _client(url, token) as client:
        job = client.job(job_id)
    if as_json:
        _print_json(job)
    else:
        _summary(job)
    if job["state"] in FINAL_STATES:
        raise typer.Exit(exit_code_for(job["state"]))


def logs(job_id: JobArgument, follow: Annotated[bool, typer.Option(
            "--follow", "-f", help="Keep printing new lines until the job ends.")] = False,
         url: UrlOption = None, token: TokenOption = None) -> None:
    """Print the job's log: Cerise's messages and the runner's."""
    with _client(url, token) as client:
        shown = 0
        while True:
            text = client.log(job_id)
            sys.stdout.write(text[shown:])
            sys.stdout.flush()
            shown = len(text)
            if not follow or client.job(job_id)["state"] in FINAL_STATES:
                if follow:  # lines written just before the end
                    sys.stdout.write(client.log(job_id)[shown:])
                return
            time.sleep(1.0)


def outputs(job_id: JobArgument, download: Annotated[Path | None, typer.Option(
                help="Save the output files into this directory.")] = None,
            url: UrlOption = None, token: TokenOption = None, as_json: JsonOption = False,
            ) -> None:
    """Show the job's outputs; with --download, save its files."""
    with _client(url, token) as client:
        job = client.job(job_id)
        output = job.get("output") or {}
        saved: dict[str, str] = {}
        if download is not None:
            for name, location in _files(output):
                target = download / Path(location.rsplit("/", 1)[-1]).name
                client.download(location, target)
                saved[name] = str(target)
    if as_json:
        _print_json({"output": output, "saved": saved})
        return
    if not output:
        out.print(f"job {job_id} has no outputs (yet); it is {job['state']}")
    for name, value in output.items():
        where = value.get("location") if isinstance(value, dict) else json.dumps(value)
        out.print(f"{name}: {where}" + (f" -> {saved[name]}" if name in saved else ""),
                  highlight=False)


def _files(output: dict[str, Any]) -> Iterator[tuple[str, str]]:
    for name, value in output.items():
        items = value if isinstance(value, list) else [value]
        for item in items:
            if isinstance(item, dict) and item.get("class") == "File" and item.get("location"):
                yield name, str(item["location"])


def cancel(job_id: JobArgument, url: UrlOption = None, token: TokenOption = None) -> None:
    """Cancel a job (it becomes Cancelled once nothing runs any more)."""
    with _client(url, token) as client:
        job = client.cancel(job_id)
    out.print(f"cancel requested for {job['id']} ({job['state']})", highlight=False)


def delete(job_id: JobArgument, url: UrlOption = None, token: TokenOption = None) -> None:
    """Delete a job with its remote files and outputs (a running job is stopped)."""
    with _client(url, token) as client:
        client.delete(job_id)
    out.print(f"deleted {job_id}", highlight=False)


COMMANDS: dict[str, Callable[..., None]] = {
    "submit": submit, "list": list_jobs, "status": status, "logs": logs,
    "outputs": outputs, "cancel": cancel, "delete": delete,
}
"""The commands, by name, for the `cerise` application to register."""
