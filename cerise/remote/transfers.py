"""File transfers over a compute resource's shared SSH connection: reads, writes, uploads and
downloads, resumable, with large files through OpenSSH both ways.

Bulk transfers are pipelined SFTP (`cerise.remote.sftp`). `download` renames the local
file into place once complete; `upload` creates the remote file with its mode. Files of
`LARGE_FILE` bytes or more go through partial files that an interrupted transfer resumes
(`cerise.remote.resume`), and are renamed into place once complete, both ways. Transfers
with more than `ACCELERATION_THRESHOLD` left to move travel through an OpenSSH `ssh` child
(`cerise.remote.openssh`, `SshTarget.accelerate`), through the same jump hosts, at most
`MOVERS` at once per resource, since asyncssh is CPU-bound below OpenSSH's speed; the
children share one connection (`openssh.Master`), so only the first logs in. If a child
fails, asyncssh carries on from where it got to.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import asyncssh

from cerise.remote import openssh, resume, sftp
from cerise.remote.protocol import DEFAULT_TIMEOUT, Progress, temporary_name
from cerise.remote.sftp import Meter
from cerise.remote.ssh import SshConnection

LARGE_FILE = 64 << 20
"""Files of this size or more are resumable (a partial file renamed into place)."""
ACCELERATION_THRESHOLD = 128 << 20
"""Transfers with at least this much left to move go through an `ssh` child if allowed.
The first child's login costs about 0.2 to 0.5 s (later ones share its connection), so on
loopback asyncssh is as fast up to 128 to 180 MiB (depending on the machine's load); but
the child spares the operator's CPU (0.04 s instead of about 1.5 s per 512 MiB), which
every job shares."""
MOVERS = 4
"""`ssh` children moving files at once per compute resource (each is a connection of its
own, and sshd's MaxStartups refuses many new ones at once)."""
MOVER_PAUSE = 600.0
"""Seconds for which large files stay with asyncssh after an `ssh` child failed to log in."""
HASH_RATE = 50 << 20
"""Bytes per second that the remote side is given to checksum a partial file."""

_log = logging.getLogger(__name__)


class SshTransfers:
    """Files to and from one compute resource, over its `SshConnection`."""

    def __init__(self, connection: SshConnection) -> None:
        self._connection = connection
        self._movers = asyncio.Semaphore(MOVERS)
        self._master = openssh.Master(idle=connection.target.shared_idle)
        self._movers_paused_until = 0.0
        self._ssh_usable: bool | None = None

    async def read(self, remote: str, offset: int = 0, limit: int = 1 << 20) -> bytes:
        connection, client = await self._connection.sftp_session()
        try:
            async with asyncio.timeout(self._connection.target.sftp_timeout):
                async with client.open(remote, "rb") as handle:
                    await handle.seek(offset)
                    data: bytes = await handle.read(limit)
                    return data
        except asyncssh.SFTPNoSuchFile:
            return b""
        except TimeoutError:
            raise self._connection.sftp_stuck(client, remote) from None
        except (asyncssh.Error, ConnectionError) as error:
            raise await self._connection.sftp_failure(connection, error, remote) from None

    async def upload(self, local: Path | bytes, remote: str, *, mode: int = 0o600,
                     progress: Progress | None = None) -> int:
        meter = Meter(progress)
        if isinstance(local, Path):
            status = await asyncio.to_thread(os.stat, local)
            if status.st_size >= LARGE_FILE:
                return await self._upload_large(local, status, remote, mode, meter)
        return await self._sftp_send(local, remote, pflags="wb", mode=mode, meter=meter)

    async def _upload_large(self, local: Path, status: os.stat_result, remote: str, mode: int,
                            meter: Meter) -> int:
        """Upload into a partial file (resumed if one is there), then rename it into place."""
        size = status.st_size
        partial = resume.partial_name(remote, resume.version(size, status.st_mtime_ns))
        start = await self._resume_upload(local, partial, size, remote)
        meter.reach(start)
        sent = 0
        if size - start >= ACCELERATION_THRESHOLD and self._may_accelerate():
            moved = await self._move(lambda account, control: openssh.send(
                account, local, partial, start, size, meter.reach, control), str(local))
            sent += moved
            start = size if start + moved == size else (
                await self._resume_upload(local, partial, size, remote))
        if start < size:
            sent += await self._sftp_send(
                local, partial, shown=remote, pflags=asyncssh.FXF_WRITE | asyncssh.FXF_CREAT,
                mode=0o600, start=start, end=size, meter=meter)
        await self._put_in_place(partial, remote, size, mode)
        return sent

    async def _sftp_send(self, local: Path | bytes, path: str, *, pflags: int | str, mode: int,
                         meter: Meter, start: int = 0, end: int | None = None,
                         shown: str | None = None) -> int:
        """Send `local` (bytes `start` to `end`) into `path` at the same offsets; errors
        name `shown` (the target, for a partial file)."""
        if isinstance(local, bytes):
            source = sftp.LocalReader(local)
        else:
            source = await asyncio.to_thread(sftp.LocalReader, local, start, end)
        try:
            connection, client = await self._connection.sftp_session()
            try:
                attrs = asyncssh.SFTPAttrs(permissions=mode)
                async with client.open(path, pflags, attrs, encoding=None) as handle:
                    return await sftp.send(source, handle, meter)
            except (asyncssh.Error, ConnectionError) as error:
                raise await self._connection.sftp_failure(
                    connection, error, shown or path) from None
        finally:
            await source.close()

    async def _resume_upload(self, local: Path, partial: str, size: int, shown: str) -> int:
        """Where an upload into `partial` can carry on: the bytes there that are right."""
        connection, client = await self._connection.sftp_session()
        try:
            have = (await client.lstat(partial)).size or 0
            if have > size:
                await client.remove(partial)
                return 0
        except asyncssh.SFTPNoSuchFile:
            return 0
        except (asyncssh.Error, ConnectionError) as error:
            raise await self._connection.sftp_failure(connection, error, shown) from None
        return await self._matching(partial, local, have)

    async def _put_in_place(self, partial: str, remote: str, size: int, mode: int) -> None:
        """Rename a complete partial file to `remote` with `mode`."""
        connection, client = await self._connection.sftp_session()
        try:
            have = (await client.lstat(partial)).size
            if have == size:
                await client.chmod(partial, mode)
                await client.posix_rename(partial, remote)
                return
            await client.remove(partial)
        except (asyncssh.Error, ConnectionError) as error:
            raise await self._connection.sftp_failure(connection, error, remote) from None
        raise OSError(f"{remote}: {have} bytes arrived instead of {size}")

    async def _matching(self, remote: str, local: Path, length: int) -> int:
        """How many of the first `length` bytes of `remote` and `local` are the same."""
        blocks = length // resume.BLOCK
        if not blocks:
            return 0
        theirs, ours = await asyncio.gather(
            self._connection.run_bytes(resume.sums_script(remote, blocks),
                                       timeout=DEFAULT_TIMEOUT + length / HASH_RATE),
            asyncio.to_thread(resume.local_sums, local, blocks))
        if theirs.exit_status != 0:
            return 0
        return resume.matching_prefix(ours, resume.parse_sums(theirs.as_text().stdout, blocks))

    async def _move(self, move: Callable[[openssh.Account, str], Awaitable[int]],
                    shown: str) -> int:
        """The bytes that `move` (`openssh.send` or `receive`, given the master's control
        socket) moved with an `ssh` child: all it had to unless it failed (then asyncssh
        carries on)."""
        try:
            account = openssh.Account(await self._connection.logins(),
                                      self._connection.target.connect_timeout)
            async with self._movers, self._master.use(account) as control:
                return await move(account, control)
        except openssh.MoverFailed as failure:
            _log.warning("%s: moving %s with ssh failed (%s); asyncssh carries on",
                         self._connection.where(), shown, failure)
            if not failure.logged_in:
                self._movers_paused_until = time.monotonic() + MOVER_PAUSE
            return failure.sent

    def _may_accelerate(self) -> bool:
        target = self._connection.target
        if self._ssh_usable is None:
            self._ssh_usable = target.accelerate and openssh.usable(target.route)
        return self._ssh_usable and time.monotonic() >= self._movers_paused_until

    async def download(self, remote: str, local: Path, *,
                       progress: Progress | None = None) -> int:
        meter = Meter(progress)
        connection, client = await self._connection.sftp_session()
        try:
            async with client.open(remote, "rb") as handle:
                attrs = await handle.stat()
                size, start, partial = attrs.size or 0, 0, None
                received = 0
                if size >= LARGE_FILE:
                    version = resume.version(size, attrs.mtime)
                    partial = Path(resume.partial_name(str(local), version))
                    start = await self._resume_download(remote, partial, size)
                    meter.reach(start)
                    if size - start >= ACCELERATION_THRESHOLD and self._may_accelerate():
                        moved = await self._move(lambda account, control: openssh.receive(
                            account, remote, partial, start, size, meter.reach, control),
                            remote)
                        received += moved
                        start = size if start + moved == size else (
                            await self._resume_download(remote, partial, size))
                target = sftp.LocalWriter(local, partial)
                try:
                    return received + await sftp.receive(handle, start, size, target, meter)
                finally:
                    await target.discard()
        except (asyncssh.Error, ConnectionError) as error:
            raise await self._connection.sftp_failure(connection, error, remote) from None

    async def _resume_download(self, remote: str, partial: Path, size: int) -> int:
        """Where a download into `partial` can carry on: the bytes there that are right."""
        try:
            have = (await asyncio.to_thread(os.stat, partial)).st_size
        except FileNotFoundError:
            return 0
        return await self._matching(remote, partial, min(have, size))

    async def close(self) -> None:
        """Stop the `ssh` children's shared connection."""
        await self._master.close()

    async def write(self, remote: str, data: bytes, mode: int = 0o600) -> None:
        temporary = temporary_name(remote)
        await self.upload(data, temporary, mode=mode)
        connection, client = await self._connection.sftp_session()
        try:
            async with asyncio.timeout(self._connection.target.sftp_timeout):
                await client.posix_rename(temporary, remote)
        except TimeoutError:
            raise self._connection.sftp_stuck(client, remote) from None
        except (asyncssh.Error, ConnectionError) as error:
            raise await self._connection.sftp_failure(connection, error, remote) from None
