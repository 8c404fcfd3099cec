"""The documents of the steps installed on a compute resource, read with one command.

A project's steps live in ``<api>/<project>/steps/<project>/`` (``<project>`` is a link
to the installed version, see `cerise.remote.install`). Every regular file in those
trees (the step documents and whatever they ``$import``) comes back in one tar stream of
at most `MAX_BYTES`, as ``<project>/<path>`` → text; files that are not UTF-8 are left
out. The command first prints a fingerprint of the trees (names, sizes, modification
times) and sends the archive only when it differs from the one read last through the same
connection, so reading again after an unknown step costs one short command, not a
transfer and a parse. The archive is parsed in a thread.
"""

from __future__ import annotations

import asyncio
import io
import shlex
import tarfile
import weakref
from dataclasses import dataclass

from cerise.remote.failures import RemoteCommandFailed
from cerise.remote.protocol import Remote

MAX_BYTES = 64 << 20


@dataclass(frozen=True)
class _Read:
    fingerprint: str
    documents: dict[str, str]


_last_read: weakref.WeakKeyDictionary[Remote, dict[str, _Read]] = weakref.WeakKeyDictionary()
"""What was read last through each connection, by api directory."""


def read_script(api_dir: str, known: str) -> str:
    """Print the steps' fingerprint, then (unless it is `known`) their tar archive."""
    return (
        f"cd {shlex.quote(api_dir)} 2>/dev/null || exit 0\n"
        "shopt -s nullglob; set -o pipefail; set -- ./*/steps\n"
        "[ $# -eq 0 ] && exit 0\n"
        "sum=$(find -L \"$@\" -type f -printf '%p\\t%s\\t%T@\\n' | LC_ALL=C sort "
        "| sha256sum) || exit 1\n"
        'printf \'%s\\n\' "${sum%% *}"\n'
        f'[ "${{sum%% *}}" = {shlex.quote(known or "none")} ] && exit 0\n'
        'find -L "$@" -type f -print0 | tar -h --null -T - -cf - '
        f"| head -c {MAX_BYTES + 1}"
    )


async def step_documents(remote: Remote, api_dir: str) -> dict[str, str]:
    """The installed steps under `api_dir` (``<base>/api``), by ``<project>/<path>``."""
    known = _last_read.get(remote, {}).get(api_dir)
    result = await remote.run_bytes(read_script(api_dir, known.fingerprint if known else ""))
    if result.exit_status != 0:
        detail = result.stderr.strip()[-1000:] or f"exit status {result.exit_status}"
        raise RemoteCommandFailed(f"reading the installed steps: {detail}")
    fingerprint, _, archive = result.stdout.partition(b"\n")
    if known is not None and fingerprint.decode(errors="replace") == known.fingerprint:
        return known.documents
    if len(archive) > MAX_BYTES:
        raise RemoteCommandFailed(f"the installed steps are more than {MAX_BYTES >> 20} MiB")
    documents = await asyncio.to_thread(parse_archive, archive)
    if fingerprint:
        _last_read.setdefault(remote, {})[api_dir] = _Read(fingerprint.decode(), documents)
    return documents


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
