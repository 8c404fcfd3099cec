"""Large transfers against a real OpenSSH server: uploads through an `ssh` child, and
transfers cut off by killing the sshd sessions serving them, then resumed."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import re
import shlex
import signal
import subprocess
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import asyncssh
import pytest

from cerise.devenv.sshd import SshEndpoint
from cerise.remote.failures import RemoteUnavailable
from cerise.remote.resume import BLOCK
from cerise.remote.ssh import SshCredentials
from cerise.remote.ssh_remote import SshRemote
from tests.integration.remote_fixtures import ssh_target

pytestmark = [pytest.mark.integration,
              # its 256 MiB file made once, on one worker
              pytest.mark.xdist_group("remote-transfer")]

MIB = 1 << 20
SIZE = 256 * MIB
CUT_AT = 64 * MIB
"""Progress after which the sessions are killed: about a quarter of the file."""


@pytest.fixture(scope="module")
def big(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("transfer") / "big.bin"
    with path.open("wb") as out:
        for _ in range(SIZE // MIB):
            out.write(os.urandom(MIB))
    return path


@pytest.fixture
async def remote_dir(sshd: SshEndpoint) -> AsyncIterator[str]:
    """A new directory on the server, removed after the test (over connections of its own,
    since the tests kill theirs)."""
    base = await _run_once(sshd, "mktemp -d")
    yield base
    await _run_once(sshd, f"rm -rf {shlex.quote(base)}")


async def _run_once(sshd: SshEndpoint, script: str) -> str:
    remote = SshRemote(ssh_target(sshd))
    try:
        return (await remote.run(script)).stdout.strip()
    finally:
        await remote.close()


def _sha256(path: Path) -> str:
    with path.open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


async def _remote_sha256(remote: SshRemote, path: str) -> str:
    return (await remote.run(f"sha256sum < {shlex.quote(path)}")).stdout[:64]


async def _listing(remote: SshRemote, directory: str) -> list[str]:
    return (await remote.run(f"ls -A {shlex.quote(directory)}")).stdout.split()


def _write_head(source: Path, target: Path, size: int, data: bytes | None = None) -> None:
    """Write the first `size` bytes of `source` (or `data`) over the start of `target`."""
    head = source.read_bytes()[:size] if data is None else data
    with target.open("r+b" if target.exists() else "wb") as handle:
        handle.write(head)


def _children(name: str | None = None) -> set[int]:
    """This process's child processes (`name`d ones only, if given)."""
    found = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError, ValueError):
            head, tail = stat.read_text().rsplit(")", 1)
            if int(tail.split()[1]) == os.getpid() and name in (None, head.split("(", 1)[1]):
                found.add(int(stat.parent.name))
    return found


def _sessions(port: int, clients: set[int]) -> set[int]:
    """The sshd processes serving the connections of `clients` to `port`."""
    listing = subprocess.run(["ss", "-Htnp", "state", "established"], capture_output=True,
                             text=True, check=True).stdout
    ours, servers = set(), {}
    for line in listing.splitlines():
        fields = line.split()
        local, peer = fields[2].rsplit(":", 1), fields[3].rsplit(":", 1)
        pids = {int(pid) for pid in re.findall(r"pid=(\d+)", line)}
        if peer[1] == str(port) and pids & clients:
            ours.add(local[1])
        if local[1] == str(port):
            servers[peer[1]] = pids
    return {pid for client_port in ours for pid in servers.get(client_port, ())}


class Cutter:
    """A progress callback that kills the sshd sessions serving a transfer once `CUT_AT`
    bytes have moved. It looks the sessions up (an `ss` run) at the first bytes moved, with
    the transfer held still meanwhile: the event loop is busy in the callback, and any `ssh`
    child is stopped. It kills them in the callback that sees `CUT_AT`. A lookup beside the
    transfer once took longer on a loaded machine than the rest of the transfer, which then
    ended before the cut."""

    def __init__(self, sshd: SshEndpoint, clients: Callable[[], set[int]]) -> None:
        self.moved = 0
        self._port, self._clients = sshd.port, clients
        self._sessions: set[int] | None = None
        self._killed: int | None = None

    def __call__(self, moved: int) -> None:
        self.moved += moved
        if self._sessions is None and self.moved > 0:
            children = _children("ssh")
            _signal(children, signal.SIGSTOP)
            try:
                self._sessions = _sessions(self._port, self._clients())
            finally:
                _signal(children, signal.SIGCONT)
        if self._killed is None and self.moved >= CUT_AT:
            _signal(self._sessions or set(), signal.SIGKILL)
            self._killed = len(self._sessions or ())

    def killed(self) -> int:
        """How many sshd processes were killed."""
        assert self._killed is not None, "the transfer ended before the cut"
        return self._killed


def _signal(pids: set[int], number: signal.Signals) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, number)


def _everyone() -> set[int]:
    return {os.getpid(), *_children()}


def _memory_files() -> list[str]:
    """This process's open memory files (memfd) of Cerise's."""
    links = (os.readlink(f"/proc/self/fd/{fd}") for fd in os.listdir("/proc/self/fd")
             if os.path.exists(f"/proc/self/fd/{fd}"))
    return [link for link in links if link.startswith("/memfd:cerise-")]


def _command_lines(pids: set[int]) -> list[str]:
    """The command lines of those of `pids` still alive (one may end as it is read)."""
    lines = []
    for pid in pids:
        with contextlib.suppress(FileNotFoundError, ProcessLookupError):
            lines.append(Path(f"/proc/{pid}/cmdline").read_text())
    return lines


@pytest.mark.parametrize("passphrase", [None, "s3cret"])
async def test_large_uploads_go_through_an_ssh_child_that_leaves_no_key_behind(
    sshd: SshEndpoint, big: Path, remote_dir: str, passphrase: str | None,
) -> None:
    key = asyncssh.import_private_key(sshd.client_key.read_text())
    credentials = SshCredentials(
        sshd.username, private_key=key.export_private_key(passphrase=passphrase).decode(),
        passphrase=passphrase)
    remote = SshRemote(ssh_target(sshd, credentials=credentials))
    seen: list[tuple[list[str], list[str]]] = []
    secret = key.export_private_key().decode().splitlines()[1]

    def progress(moved: int) -> None:
        seen.append((_command_lines(_children("ssh")), _memory_files()))
        calls.append(moved)

    calls: list[int] = []
    try:
        sent = await remote.upload(big, f"{remote_dir}/big.bin", mode=0o640, progress=progress)
        mode = (await remote.run(f"stat -c %a {remote_dir}/big.bin")).stdout.strip()
        assert await _remote_sha256(remote, f"{remote_dir}/big.bin") == _sha256(big)
        assert await _listing(remote, remote_dir) == ["big.bin"]
    finally:
        await remote.close()
    assert (sent, sum(calls), mode) == (SIZE, SIZE, "640")
    assert len(calls) >= 4  # as it goes, not at the end (how often depends on the load)
    # ssh children carried the data (one the shared connection); the key, never on their
    # command lines, was in a memory file closed before the first byte.
    command_lines = seen[0][0]
    assert len(command_lines) == 2
    assert all("/proc/" in line and secret not in line for line in command_lines)
    assert all(not files for _, files in seen) and not _memory_files()


async def test_large_downloads_go_through_an_ssh_child_too(
    sshd: SshEndpoint, big: Path, remote_dir: str, tmp_path: Path,
) -> None:
    remote = SshRemote(ssh_target(sshd))
    seen: list[list[str]] = []
    calls: list[int] = []

    def progress(moved: int) -> None:
        seen.append(_command_lines(_children("ssh")))
        calls.append(moved)

    try:
        await remote.upload(big, f"{remote_dir}/big.bin")
        received = await remote.download(f"{remote_dir}/big.bin", tmp_path / "back.bin",
                                         progress=progress)
    finally:
        await remote.close()
    assert _sha256(tmp_path / "back.bin") == _sha256(big)
    assert (received, sum(calls)) == (SIZE, SIZE)
    assert await asyncio.to_thread(os.listdir, tmp_path) == ["back.bin"]  # no partial left
    assert seen[0] and all("/proc/" in line for line in seen[0])  # ssh children wrote it
    assert not _memory_files()


def _connections(port: int, clients: set[int]) -> set[str]:
    """The local ports of the connections that `clients` hold to `port`."""
    listing = subprocess.run(["ss", "-Htnp", "state", "established"], capture_output=True,
                             text=True, check=True).stdout
    return {fields[2].rsplit(":", 1)[1] for fields, line in
            ((line.split(), line) for line in listing.splitlines())
            if fields[3].rsplit(":", 1)[1] == str(port)
            and {int(pid) for pid in re.findall(r"pid=(\d+)", line)} & clients}


async def test_large_transfers_after_the_first_share_its_connection(
    sshd: SshEndpoint, big: Path, remote_dir: str, tmp_path: Path,
) -> None:
    remote = SshRemote(ssh_target(sshd, shared_idle=1.0))
    seen: list[set[str]] = [set(), set(), set()]

    def watching(transfer: int) -> Callable[[int], None]:
        def progress(moved: int) -> None:
            seen[transfer] |= _connections(sshd.port, _children("ssh"))
        return progress

    try:
        await remote.upload(big, f"{remote_dir}/one.bin", progress=watching(0))
        await remote.download(f"{remote_dir}/one.bin", tmp_path / "two.bin",
                              progress=watching(1))
        assert _sha256(tmp_path / "two.bin") == _sha256(big)
        # Idle for shared_idle, the shared connection ends; the next transfer starts another.
        await _until(lambda: not _children("ssh"))
        await remote.upload(big, f"{remote_dir}/three.bin", progress=watching(2))
        assert await _remote_sha256(remote, f"{remote_dir}/three.bin") == _sha256(big)
    finally:
        await remote.close()
    assert len(seen[0]) == 1 and seen[1] == seen[0]  # one login for both
    assert len(seen[2]) == 1 and seen[2] != seen[0]
    await _until(lambda: not _children("ssh"))  # none left once the remote is closed


async def _until(condition: Callable[[], bool], timeout: float = 20.0) -> None:
    """Poll `condition` until it holds; fail after `timeout` s."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "not in time"
        await asyncio.sleep(0.05)


@pytest.mark.parametrize("accelerate", [True, False], ids=["ssh-child", "asyncssh"])
async def test_an_upload_cut_off_resumes_from_the_bytes_already_there(
    sshd: SshEndpoint, big: Path, remote_dir: str, accelerate: bool,
) -> None:
    remote = SshRemote(ssh_target(sshd, accelerate=accelerate))
    target = f"{remote_dir}/big.bin"
    try:
        cutter = Cutter(sshd, _everyone)
        with pytest.raises(RemoteUnavailable, match="connection lost"):
            await remote.upload(big, target, progress=cutter)
        assert cutter.killed() > 0
        assert len(await _listing(remote, remote_dir)) == 1  # the partial file, hidden
        calls: list[int] = []
        sent = await remote.upload(big, target, progress=calls.append)
        assert await _remote_sha256(remote, target) == _sha256(big)
        assert await _listing(remote, remote_dir) == ["big.bin"]
    finally:
        await remote.close()
    resumed = SIZE - sent
    assert CUT_AT - 2 * BLOCK <= resumed < SIZE
    assert calls[0] == resumed and sum(calls) == SIZE


async def test_only_the_blocks_that_match_are_kept(
    sshd: SshEndpoint, big: Path, remote_dir: str,
) -> None:
    remote = SshRemote(ssh_target(sshd))
    target = f"{remote_dir}/big.bin"
    try:
        cutter = Cutter(sshd, _everyone)
        with pytest.raises(RemoteUnavailable):
            await remote.upload(big, target, progress=cutter)
        cutter.killed()
        [partial] = await _listing(remote, remote_dir)
        # the second block of what arrived is damaged: only the first one is kept
        damage = (f"head -c {BLOCK} /dev/zero | dd of={shlex.quote(f'{remote_dir}/{partial}')} "
                  f"bs={BLOCK} seek=1 conv=notrunc status=none")
        assert (await remote.run(damage)).exit_status == 0
        sent = await remote.upload(big, target)
        assert await _remote_sha256(remote, target) == _sha256(big)
    finally:
        await remote.close()
    assert sent == SIZE - BLOCK


async def test_a_new_version_of_the_source_starts_afresh(
    sshd: SshEndpoint, big: Path, remote_dir: str, tmp_path: Path,
) -> None:
    source = tmp_path / "source.bin"
    await asyncio.to_thread(_write_head, big, source, 96 * MIB)
    remote = SshRemote(ssh_target(sshd, accelerate=False))
    target = f"{remote_dir}/source.bin"
    try:
        cutter = Cutter(sshd, _everyone)
        with pytest.raises(RemoteUnavailable):
            await remote.upload(source, target, progress=cutter)
        cutter.killed()
        await asyncio.to_thread(_write_head, source, source, 7, b"changed")  # same size
        assert await remote.upload(source, target) == 96 * MIB
        assert await _remote_sha256(remote, target) == _sha256(source)
    finally:
        await remote.close()


async def test_an_ssh_child_cut_off_is_carried_on_by_asyncssh(
    sshd: SshEndpoint, big: Path, remote_dir: str, caplog: pytest.LogCaptureFixture,
) -> None:
    remote = SshRemote(ssh_target(sshd))
    target = f"{remote_dir}/big.bin"
    caplog.set_level(logging.WARNING)
    try:
        cutter = Cutter(sshd, lambda: _children("ssh"))  # the child's session only
        sent = await remote.upload(big, target, progress=cutter)
        assert cutter.killed() > 0
        assert await _remote_sha256(remote, target) == _sha256(big)
        assert await _listing(remote, remote_dir) == ["big.bin"]
    finally:
        await remote.close()
    assert cutter.moved == SIZE
    # What the child had sent was not sent again: at most its last blocks, in flight.
    assert sent < SIZE + 3 * BLOCK
    assert "asyncssh carries on" in caplog.text


async def test_a_download_whose_ssh_child_is_cut_off_is_carried_on_by_asyncssh(
    sshd: SshEndpoint, big: Path, remote_dir: str, tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    remote = SshRemote(ssh_target(sshd))
    local = tmp_path / "out" / "big.bin"
    local.parent.mkdir()
    caplog.set_level(logging.WARNING)
    try:
        await remote.upload(big, f"{remote_dir}/big.bin")
        cutter = Cutter(sshd, lambda: _children("ssh"))  # the children's connection only
        received = await remote.download(f"{remote_dir}/big.bin", local, progress=cutter)
        assert cutter.killed() > 0
    finally:
        await remote.close()
    assert _sha256(local) == _sha256(big)
    assert os.listdir(local.parent) == ["big.bin"]  # the partial file renamed into place
    assert cutter.moved == SIZE
    assert received < SIZE + 3 * BLOCK  # what the child had written was kept
    assert "asyncssh carries on" in caplog.text


async def test_a_download_cut_off_resumes_from_the_bytes_already_there(
    sshd: SshEndpoint, big: Path, remote_dir: str, tmp_path: Path,
) -> None:
    remote = SshRemote(ssh_target(sshd))
    source = f"{remote_dir}/big.bin"
    local = tmp_path / "out" / "big.bin"
    local.parent.mkdir()
    try:
        await remote.upload(big, source)
        cutter = Cutter(sshd, _everyone)
        with pytest.raises(RemoteUnavailable, match="connection lost"):
            await remote.download(source, local, progress=cutter)
        assert cutter.killed() > 0
        [partial] = os.listdir(local.parent)
        assert partial.startswith(".big.bin.") and partial.endswith(".partial")
        calls: list[int] = []
        received = await remote.download(source, local, progress=calls.append)
    finally:
        await remote.close()
    assert _sha256(local) == _sha256(big)
    assert os.listdir(local.parent) == ["big.bin"]
    resumed = SIZE - received
    assert CUT_AT - 2 * BLOCK <= resumed < SIZE
    assert calls[0] == resumed and sum(calls) == SIZE
