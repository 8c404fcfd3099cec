"""Installing a specialisation project on a compute resource, over its shared connection.

Layout under ``<base>/api``: ``<project>`` is a symbolic link to
``.install/<project>/<version>-<token>/``, which holds ``version``, ``steps/``, ``files/``,
``install.sh``, the script's ``install.log`` and ``.cerise-install.json`` (who installed
it). `install` fills a new directory beside the current one (steps with
``$CERISE_PROJECT_FILES`` replaced by that directory's ``files/``), runs ``install.sh``
there with ``CERISE_PROJECT_FILES`` set (and the files directory as its argument, as the
original did), and only then renames a new link over ``<project>``: the switch is atomic,
so a workflow sees the old version or the new one, never a half-installed one. The
previous directory stays for jobs still running it; older ones are removed. A failed
install leaves the current version in place.

`read_installed` lists what is installed, in one command. The scripts need bash and GNU
coreutils (``mv -T``, ``timeout``), as on any Linux cluster.
"""

from __future__ import annotations

import asyncio
import json
import posixpath
import secrets
import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cerise.model import project_files
from cerise.model.project_files import InvalidProject
from cerise.model.specialisation import Failure, Installed, Owner
from cerise.remote.protocol import Remote

INSTALL_DIR = ".install"
MARKER = ".cerise-install.json"
LOG = "install.log"
LOG_TAIL = 4000
"""Characters of the script's output kept for the status."""
SCRIPT_TIMEOUT = 1800
"""Seconds install.sh may run."""
PARALLEL_FILES = 8
MAX_NAME, MAX_VERSION = 253, 128
"""Longest project name and version the status can hold (a hand-made directory may differ)."""


class InstallFailed(Exception):
    """The project was not installed; `failure` says why (the old version stays)."""

    def __init__(self, failure: Failure) -> None:
        super().__init__(failure.message)
        self.failure = failure


@dataclass(frozen=True)
class ProjectFile:
    """An entry of the project to install: a local file, content, or a link."""

    path: str
    """Inside the project, e.g. ``files/add_heading.sh``."""
    mode: int = 0o644
    local: Path | None = None
    data: bytes | None = None
    link: str | None = None
    """For a symbolic link: its (checked, relative) target."""


def read_script(api: str) -> str:
    """Print one line per installed project: name, link target, version, install record."""
    return (
        f"cd {shlex.quote(api)} 2>/dev/null || exit 0\n"
        "for entry in *; do\n"
        '  [ -f "$entry/version" ] || continue\n'
        "  printf '%s\\t%s\\t%s\\t' \"$entry\" \"$(readlink \"$entry\")\" "
        '"$(head -n 1 "$entry/version" | head -c 200)"\n'
        f"  head -c 4096 \"$entry/{MARKER}\" 2>/dev/null | tr -d '\\n\\t'\n"
        "  printf '\\n'\n"
        "done"
    )


def parse_installed(output: str) -> dict[str, Installed]:
    """The projects `read_script` printed."""
    found = {}
    for line in output.splitlines():
        fields = line.split("\t")
        if len(fields) != 4:
            continue
        name, link, version, marker = fields
        if len(name) > MAX_NAME:
            continue
        try:
            record = json.loads(marker) if marker else {}
        except json.JSONDecodeError:
            record = {}
        if not isinstance(record, dict):
            record = {}
        found[name] = Installed(project=name, version=version.strip()[:MAX_VERSION],
                                owner_uid=str(record.get("uid", "")),
                                owner=str(record.get("specialisation", "")), directory=link)
    return found


async def read_installed(remote: Remote, api: str) -> dict[str, Installed]:
    """What is installed under `api` now."""
    result = await remote.run(read_script(api))
    if result.exit_status != 0:
        raise OSError(f"cannot list {api}: {result.stderr.strip()[-500:]}")
    return parse_installed(result.stdout)


async def install(
    remote: Remote, *, api: str, project: str, version: str, owner: Owner,
    files: Sequence[ProjectFile], prologue: str = "",
) -> Installed:
    """Install `files` as `project` `version` and switch to it; InstallFailed if not."""
    name = f"{version}-{secrets.token_hex(4)}"
    relative = f"{INSTALL_DIR}/{project}/{name}"
    directory = f"{api}/{relative}"
    files_dir = f"{directory}/files"
    contents = await _with_steps_substituted(files, files_dir)
    await _checked(remote, _layout_script(directory, files_dir, files), "cannot create the files")
    gate = asyncio.Semaphore(PARALLEL_FILES)

    async def send(entry: ProjectFile) -> None:
        async with gate:
            source = contents.get(entry.path, entry.data)
            await remote.upload(source if source is not None else _local(entry),
                                f"{directory}/{entry.path}", mode=entry.mode)

    try:
        await asyncio.gather(*(send(f) for f in files if f.link is None))
    except (ConnectionError, TimeoutError):  # RemoteUnavailable, CommandTimedOut: a retry
        raise
    except OSError as error:
        raise InstallFailed(Failure("InstallError", f"copying the files failed: {error}")) \
            from None
    await remote.write(f"{directory}/version", f"{version}\n".encode(), mode=0o644)
    if any(f.path == "install.sh" for f in files):
        await _run_install_script(remote, directory, files_dir, prologue)
    record = {"specialisation": str(owner), "uid": owner.uid, "generation": owner.generation,
              "version": version}
    await remote.write(f"{directory}/{MARKER}", json.dumps(record).encode(), mode=0o644)
    await _checked(remote, _switch_script(api, project, relative), "cannot switch versions")
    return Installed(project=project, version=version, owner_uid=owner.uid, owner=str(owner),
                     directory=relative)


def _local(entry: ProjectFile) -> Path:
    assert entry.local is not None, f"{entry.path} has no content"
    return entry.local


async def _with_steps_substituted(
    files: Sequence[ProjectFile], files_dir: str
) -> dict[str, bytes]:
    """The new content of every step document that mentions the files directory."""
    changed = {}
    for entry in files:
        if entry.link is not None or not project_files.is_step(entry.path):
            continue
        text = entry.data if entry.data is not None else await asyncio.to_thread(
            _local(entry).read_bytes)
        try:
            new = project_files.substitute_step(text, files_dir, entry.path)
        except InvalidProject as error:
            raise InstallFailed(Failure("InvalidProject", str(error))) from None
        if new is not None:
            changed[entry.path] = new
    return changed


def _layout_script(directory: str, files_dir: str, files: Sequence[ProjectFile]) -> str:
    """Make the new directory tree and its links."""
    directories = {directory, files_dir} | {
        posixpath.dirname(f"{directory}/{f.path}") for f in files}
    lines = ["set -e", "umask 077",
             "mkdir -p -- " + " ".join(shlex.quote(d) for d in sorted(directories))]
    lines += [f"ln -s -- {shlex.quote(f.link)} {shlex.quote(f'{directory}/{f.path}')}"
              for f in files if f.link is not None]
    return "\n".join(lines)


async def _run_install_script(remote: Remote, directory: str, files_dir: str,
                              prologue: str) -> None:
    script = (
        f"{prologue}\n"
        f"cd {shlex.quote(directory)} || exit 125\n"
        f"chmod u+x install.sh\n"
        f"export CERISE_PROJECT_FILES={shlex.quote(files_dir)}\n"
        f"timeout {SCRIPT_TIMEOUT} ./install.sh \"$CERISE_PROJECT_FILES\" > {LOG} 2>&1\n"
        "status=$?\n"
        f"tail -c {LOG_TAIL} {LOG}\n"
        "exit $status"
    )
    result = await remote.run(script, timeout=SCRIPT_TIMEOUT + 60)
    if result.exit_status == 0:
        return
    how = (f"did not finish within {SCRIPT_TIMEOUT} s" if result.exit_status == 124
           else f"exited with status {result.exit_status}")
    raise InstallFailed(Failure(
        "InstallScriptFailed", f"install.sh {how}; its output is in {directory}/{LOG}",
        log=(result.stdout + result.stderr)[-LOG_TAIL:]))


def _switch_script(api: str, project: str, relative: str) -> str:
    """Point `<api>/<project>` at `relative` with one rename; keep the previous version."""
    link = f".{project}.link-{secrets.token_hex(4)}"
    keep = shlex.quote(posixpath.basename(relative))
    return "\n".join([
        "set -e",
        f"cd {shlex.quote(api)}",
        f"project={shlex.quote(project)}",
        'previous=""',
        'if [ -L "$project" ]; then previous=$(basename "$(readlink "$project")")',
        'elif [ -e "$project" ]; then',
        # A plain directory (installed by hand or by an older Cerise) cannot be renamed over.
        f'  previous=legacy-{secrets.token_hex(4)}; mv -T -- "$project" '
        f'{shlex.quote(INSTALL_DIR)}/"$project/$previous"',
        "fi",
        f"ln -s -- {shlex.quote(relative)} {shlex.quote(link)}",
        f'mv -T -- {shlex.quote(link)} "$project"',
        f'for old in {shlex.quote(INSTALL_DIR)}/"$project"/*; do',
        f'  case "${{old##*/}}" in {keep}|"$previous") ;; *) rm -rf -- "$old" ;; esac',
        "done",
    ])


async def _checked(remote: Remote, script: str, what: str) -> None:
    result = await remote.run(script)
    if result.exit_status != 0:
        raise InstallFailed(Failure("InstallError", f"{what}: {result.stderr.strip()[-1000:]}"))
