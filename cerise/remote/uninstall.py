"""Removing a specialisation project from a compute resource that no Specialisation wants.

The project's link ``<api>/<project>`` goes at once, so no new workflow finds it, but the
install directory it pointed to stays for jobs still running its steps (their runner
loaded the steps from there and runs the project's files from there); it is stamped with
the time of the removal, and `sweep` deletes it after `KEEP_REMOVED` seconds. A link that
meanwhile points elsewhere (a newer install) is left alone. The layout is
`cerise.remote.install`'s.
"""

from __future__ import annotations

import posixpath
import shlex

from cerise.model.specialisation import Installed
from cerise.remote.install import INSTALL_DIR
from cerise.remote.protocol import Remote

KEEP_REMOVED = 7 * 86400
"""Seconds a removed project's last install directory is kept for jobs still running it."""


class RemovalFailed(Exception):
    """The project could not be removed; the message says why."""


def removal_script(api: str, found: Installed) -> str:
    """Remove the link `found` was seen through, keep its directory (stamped), remove older
    ones."""
    q = shlex.quote
    keep = posixpath.basename(found.directory)
    return "\n".join([
        "set -e",
        f"cd {q(api)}",
        f"project={q(found.project)}",
        f'[ -L "$project" ] && [ "$(readlink -- "$project")" = {q(found.directory)} ] || exit 0',
        'rm -f -- "$project"',
        f'touch -- {q(INSTALL_DIR)}/"$project"/{q(keep)}',
        f'for old in {q(INSTALL_DIR)}/"$project"/*; do',
        f'  [ "${{old##*/}}" = {q(keep)} ] || rm -rf -- "$old"',
        "done",
    ])


def sweep_script(api: str, keep_seconds: int = KEEP_REMOVED) -> str:
    """Delete the kept directories of removed projects (no link) older than `keep_seconds`."""
    minutes = max(1, keep_seconds // 60)
    return "\n".join([
        f"cd {shlex.quote(api)}/{shlex.quote(INSTALL_DIR)} 2>/dev/null || exit 0",
        "for project in *; do",
        '  [ -d "$project" ] && [ ! -e "../$project" ] && [ ! -L "../$project" ] || continue',
        f'  find "$project" -mindepth 1 -maxdepth 1 -mmin +{minutes} -exec rm -rf -- {{}} +',
        '  rmdir -- "$project" 2>/dev/null || true',
        "done",
    ])


async def remove(remote: Remote, api: str, found: Installed) -> None:
    """Remove an installed project (see the module docstring); RemovalFailed if not."""
    result = await remote.run(removal_script(api, found))
    if result.exit_status != 0:
        raise RemovalFailed(f"removing project {found.project}: {result.stderr.strip()[-500:]}")


async def sweep(remote: Remote, api: str, keep_seconds: int = KEEP_REMOVED) -> None:
    """Delete what removed projects left for running jobs once it is old enough."""
    result = await remote.run(sweep_script(api, keep_seconds))
    if result.exit_status != 0:
        raise RemovalFailed(f"sweeping removed projects: {result.stderr.strip()[-500:]}")
