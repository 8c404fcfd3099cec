"""Put a specialisation project's files on a compute resource, for tests and `./dev up`.

A stand-in for installing Specialisations (a later piece of work): it copies a project
directory (`version`, `steps/`, `files/`) to `<base>/api/<project>/` as is, so that jobs
can run its steps. It runs no install script.
"""

from __future__ import annotations

import asyncio
import shlex
from pathlib import Path

from cerise.remote.connection import Remote

REPO = Path(__file__).resolve().parents[2]
EXAMPLE_PROJECT = REPO / "specialisations" / "example" / "cerise"


async def install(remote: Remote, base: str, project: Path = EXAMPLE_PROJECT) -> str:
    """Copy `project` to `<base>/api/<name>`; return that remote directory."""
    target = f"{base.rstrip('/')}/api/{project.name}"
    files = await asyncio.to_thread(lambda: sorted(p for p in project.rglob("*") if p.is_file()))
    directories = {target} | {f"{target}/{p.parent.relative_to(project)}" for p in files}
    made = await remote.run("umask 077 && mkdir -p " + " ".join(
        shlex.quote(d) for d in sorted(directories)))
    if made.exit_status != 0:
        raise RuntimeError(f"cannot create {target}: {made.stderr.strip()}")
    for path in files:
        await remote.upload(path, f"{target}/{path.relative_to(project)}")
    return target
