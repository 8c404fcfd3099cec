"""A compute resource over SSH: commands on its shared connection (`cerise.remote.ssh`),
files through `cerise.remote.transfers`."""

from __future__ import annotations

from pathlib import Path

from cerise.remote.protocol import DEFAULT_TIMEOUT, BytesResult, CommandResult, Progress
from cerise.remote.ssh import SshConnection, SshCounters, SshTarget
from cerise.remote.transfers import SshTransfers


class SshRemote:
    """The `Remote` of a compute resource reached over SSH."""

    def __init__(self, target: SshTarget) -> None:
        self.connection = SshConnection(target)
        self._transfers = SshTransfers(self.connection)

    @property
    def username(self) -> str:
        return self.connection.username

    @property
    def connected(self) -> bool:
        """Whether a connection is open now."""
        return self.connection.connected

    @property
    def counters(self) -> SshCounters:
        return self.connection.counters

    async def run(self, script: str, *, timeout: float = DEFAULT_TIMEOUT) -> CommandResult:
        return (await self.connection.run_bytes(script, timeout=timeout)).as_text()

    async def run_bytes(self, script: str, *, timeout: float = DEFAULT_TIMEOUT) -> BytesResult:
        return await self.connection.run_bytes(script, timeout=timeout)

    async def read(self, remote: str, offset: int = 0, limit: int = 1 << 20) -> bytes:
        return await self._transfers.read(remote, offset, limit)

    async def upload(self, local: Path | bytes, remote: str, *, mode: int = 0o600,
                     progress: Progress | None = None) -> int:
        return await self._transfers.upload(local, remote, mode=mode, progress=progress)

    async def download(self, remote: str, local: Path, *,
                       progress: Progress | None = None) -> int:
        return await self._transfers.download(remote, local, progress=progress)

    async def write(self, remote: str, data: bytes, mode: int = 0o600) -> None:
        await self._transfers.write(remote, data, mode)

    async def close(self) -> None:
        await self._transfers.close()
        await self.connection.close()
