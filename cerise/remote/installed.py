"""The documents of the steps installed on a compute resource, read with one command.

A project's steps live in ``<api>/<project>/steps/<project>/`` (``<project>`` is a link
to the installed version, see `cerise.remote.install`). Every regular file in those
trees (the step documents and whatever they ``$import``) comes back in one tar stream of
at most `MAX_BYTES`, as ``<project>/<path>`` → text; files that are not UTF-8 are left
out.
"""

from __future__ import annotations

import io
import shlex
import tarfile

from cerise.remote.connection import Remote
from cerise.remote.executor import RemoteCommandFailed

MAX_BYTES = 64 << 20


async def step_documents(remote: Remote, api_dir: str) -> dict[str, str]:
    """The installed steps under `api_dir` (``<base>/api``), by ``<project>/<path>``."""
    result = await remote.run_bytes(
        f"cd {shlex.quote(api_dir)} 2>/dev/null || exit 0\n"
        "shopt -s nullglob; set -o pipefail; set -- ./*/steps\n"
        '[ $# -eq 0 ] || find -L "$@" -type f -print0 | tar -h --null -T - -cf - '
        f"| head -c {MAX_BYTES + 1}"
    )
    if len(result.stdout) > MAX_BYTES:
        raise RemoteCommandFailed(f"the installed steps are more than {MAX_BYTES >> 20} MiB")
    if result.exit_status != 0:
        detail = result.stderr.strip()[-1000:] or f"exit status {result.exit_status}"
        raise RemoteCommandFailed(f"reading the installed steps: {detail}")
    return parse_archive(result.stdout)


def parse_archive(data: bytes) -> dict[str, str]:
    """``./<project>/steps/<project>/<path>`` members of a tar archive → ``<project>/<path>``."""
    if not data:
        return {}
    documents = {}
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as archive:
        for member in archive:
            parts = member.name.split("/", 3)
            if not member.isfile() or len(parts) != 4 or parts[:1] != ["."] or parts[2] != "steps":
                continue
            handle = archive.extractfile(member)
            if handle is None:
                continue
            try:
                documents[parts[3]] = handle.read().decode("utf-8")
            except UnicodeDecodeError:
                continue
    return documents
