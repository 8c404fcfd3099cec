"""What every compute resource offers, over SSH (`cerise.remote.ssh_remote`) or on this
machine (`cerise.remote.local`): the `Remote` protocol and what its commands return.

Commands are bash scripts sent on standard input to `bash -s`, so the login shell of the
remote account (which may be csh) never parses them; the script body is wrapped in a
function that runs with stdin from /dev/null, so no command inside it can eat the rest
of the script.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

DEFAULT_TIMEOUT = 120.0

Progress = Callable[[int], None]
"""Told the number of bytes moved since its last call."""


@dataclass(frozen=True)
class CommandResult:
    """What a remote script did."""

    exit_status: int
    stdout: str
    stderr: str


@dataclass(frozen=True)
class BytesResult:
    """What a remote script did, with its standard output as bytes (e.g. file contents)."""

    exit_status: int
    stdout: bytes
    stderr: str

    def as_text(self) -> CommandResult:
        return CommandResult(exit_status=self.exit_status,
                             stdout=self.stdout.decode(errors="replace"), stderr=self.stderr)


class Remote(Protocol):
    """Commands and files on a compute resource."""

    @property
    def username(self) -> str:
        """The login name on the compute resource (for $CERISE_USERNAME)."""
        ...

    async def run(self, script: str, *, timeout: float = DEFAULT_TIMEOUT) -> CommandResult:
        """Run a bash script; its exit status and output."""
        ...

    async def run_bytes(self, script: str, *, timeout: float = DEFAULT_TIMEOUT) -> BytesResult:
        """Run a bash script; its exit status and output, standard output as bytes."""
        ...

    async def read(self, remote: str, offset: int = 0, limit: int = 1 << 20) -> bytes:
        """Up to `limit` bytes of a remote file from `offset` (empty if it is missing)."""
        ...

    async def upload(self, local: Path | bytes, remote: str, *, mode: int = 0o600,
                     progress: Progress | None = None) -> int:
        """Copy a local file (or content already read) to the compute resource; bytes sent.

        The remote file is created with `mode`. Pipelined: several blocks are in flight at
        once. A large file goes to a hidden partial file beside `remote`, renamed over it
        when complete; one cut off is resumed by the next upload of the same file (the
        bytes sent then are the rest). `progress`, if given, is called with the bytes
        moved since its last call, at least once per chunk; a part found already in place
        counts once, when found, so the calls add up to the file's size. Remote failures
        raise OSError (FileNotFoundError, PermissionError…) or RemoteUnavailable.
        """
        ...

    async def download(self, remote: str, local: Path, *,
                       progress: Progress | None = None) -> int:
        """Copy a remote file to `local`, atomically replaced; the bytes received.

        Copies the size the file had when opened (it is not expected to change). A large
        file cut off is resumed as in `upload`, from a hidden partial file beside `local`.
        `progress` is called as for `upload`.
        """
        ...

    async def write(self, remote: str, data: bytes, mode: int = 0o600) -> None:
        """Create or atomically replace a remote file (readers see the old or the new)."""
        ...

    async def close(self) -> None:
        """Release the connection."""
        ...


def wrap_script(script: str) -> str:
    """The text sent to `bash -s`: `script` as a function body run with stdin from /dev/null,
    then `exit` with its status. bash ends there without waiting for the end of its input:
    through a jump host, that end (a second small packet) could be held back by the
    bastion's TCP for a delayed acknowledgement, some 40 ms on every command."""
    return f"__cerise_main() {{\n{script}\n}}\n__cerise_main < /dev/null\nexit\n"


def temporary_name(path: str) -> str:
    """A unique sibling of `path` to write before renaming over it."""
    return f"{path}.{secrets.token_hex(6)}.tmp"
