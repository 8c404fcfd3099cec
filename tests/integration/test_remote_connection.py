"""The shared SSH connection against a real OpenSSH server, and its local twin."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncssh
import pytest

from cerise.devenv import sshd as devenv_sshd
from cerise.devenv.sshd import SshEndpoint
from cerise.remote.failures import CommandTimedOut, RemoteUnavailable
from cerise.remote.protocol import Remote
from cerise.remote.ssh import SshCredentials
from cerise.remote.ssh_remote import SshRemote
from tests.integration.remote_fixtures import kill_sessions, ssh_target

pytestmark = pytest.mark.integration


async def test_runs_scripts_as_the_remoteuser(ssh: SshRemote, sshd: SshEndpoint) -> None:
    result = await ssh.run("id -un; echo oops >&2; exit 3")
    assert (result.exit_status, result.stdout, result.stderr) == (3, f"{sshd.username}\n", "oops\n")


async def test_commands_cannot_read_the_rest_of_the_script(remote: Remote) -> None:
    result = await remote.run("cat\necho still-here")
    assert result.stdout == "still-here\n"


async def test_many_commands_share_one_connection(ssh: SshRemote, sshd: SshEndpoint) -> None:
    before = await _established(sshd)
    results = await asyncio.gather(*(ssh.run(f"echo {i}") for i in range(40)))
    assert [r.stdout for r in results] == [f"{i}\n" for i in range(40)]
    # One new TCP connection from this process to sshd, whatever the number of commands
    # (the session's operator, and an earlier test's connection still closing, are not it).
    assert len(await _established(sshd) - before) == 1
    assert ssh.counters.connects == 1


async def _established(sshd: SshEndpoint) -> set[str]:
    """This process's established TCP connections to `sshd`, by local address."""
    ss = ["ss", "-Htnp", "state", "established", "dst", f"127.0.0.1:{sshd.port}"]
    listing = await asyncio.to_thread(subprocess.run, ss, capture_output=True, text=True)
    return {line.split()[2] for line in listing.stdout.splitlines()
            if f"pid={os.getpid()}," in line}


async def test_a_slow_command_times_out_alone(remote: Remote) -> None:
    await remote.run("true")
    with pytest.raises(CommandTimedOut, match=r"did not finish within 0\.5 s"):
        await remote.run("sleep 5", timeout=0.5)
    assert (await remote.run("echo fine")).stdout == "fine\n"
    if isinstance(remote, SshRemote):  # the shared connection was not dropped for it
        assert remote.counters.connects == 1


async def test_files_round_trip(remote: Remote, tmp_path: Path) -> None:
    base = (await remote.run("mktemp -d")).stdout.strip()
    name = f"{base}/a file with 'quotes' and $(dollar)"
    await remote.write(name, b"hello\n")
    assert await remote.read(name) == b"hello\n"
    assert await remote.read(name, offset=2, limit=2) == b"ll"
    assert await remote.read(f"{base}/missing") == b""
    source = tmp_path / "source"
    source.write_bytes(bytes(range(256)) * 1000)
    uploaded: list[int] = []
    downloaded: list[int] = []
    await remote.upload(source, f"{base}/copy", progress=uploaded.append)
    await remote.download(f"{base}/copy", tmp_path / "back", progress=downloaded.append)
    assert (tmp_path / "back").read_bytes() == source.read_bytes()
    assert sum(uploaded) == sum(downloaded) == 256_000
    mode = await remote.run(f"stat -c %a {base}/copy && rm -rf {base}")
    assert mode.exit_status == 0


async def test_wrong_host_key_is_refused(sshd: SshEndpoint) -> None:
    impostor = asyncssh.generate_private_key("ssh-ed25519").export_public_key().decode()
    remote = SshRemote(ssh_target(sshd, host_keys=(impostor,)))
    with pytest.raises(RemoteUnavailable, match="host key does not match"):
        await remote.run("true")
    assert not remote.connected


async def test_wrong_key_is_refused_without_leaking_it(
    sshd: SshEndpoint, caplog: pytest.LogCaptureFixture
) -> None:
    other = asyncssh.generate_private_key("ssh-ed25519").export_private_key().decode()
    creds = SshCredentials(sshd.username, private_key=other)
    remote = SshRemote(ssh_target(sshd, credentials=creds))
    caplog.set_level(logging.DEBUG)
    with pytest.raises(RemoteUnavailable) as error:
        await remote.run("true")
    assert "authentication failed" in str(error.value)
    assert other not in str(error.value) and other not in caplog.text


async def test_password_login_is_refused_by_the_server(sshd: SshEndpoint) -> None:
    creds = SshCredentials(sshd.username, password="hunter2")
    remote = SshRemote(ssh_target(sshd, credentials=creds))
    with pytest.raises(RemoteUnavailable, match="authentication failed") as error:
        await remote.run("true")
    assert "hunter2" not in str(error.value)
    assert "hunter2" not in repr(creds)


async def test_encrypted_key_with_passphrase(sshd: SshEndpoint, tmp_path: Path) -> None:
    key = asyncssh.import_private_key(sshd.client_key.read_text())
    encrypted = key.export_private_key(passphrase="s3cret").decode()
    ok = SshRemote(ssh_target(sshd, credentials=SshCredentials(
        sshd.username, private_key=encrypted, passphrase="s3cret")))
    assert (await ok.run("echo in")).stdout == "in\n"
    await ok.close()
    wrong = SshRemote(ssh_target(sshd, credentials=SshCredentials(
        sshd.username, private_key=encrypted, passphrase="nope")))
    with pytest.raises(ValueError, match="cannot be read"):
        await wrong.run("true")


async def test_unreachable_server_backs_off(sshd: SshEndpoint) -> None:
    down = SshRemote(ssh_target(sshd, port=1))
    with pytest.raises(RemoteUnavailable, match=r"Connect call failed|refused"):
        await down.run("true")
    with pytest.raises(RemoteUnavailable, match="retrying in"):
        await down.run("true")


async def test_killed_sessions_are_survived_by_reconnecting(
    ssh: SshRemote, sshd: SshEndpoint
) -> None:
    assert (await ssh.run("echo one")).stdout == "one\n"
    # Kill the server side of our connection (sshd's per-connection processes of the user).
    await asyncio.to_thread(kill_sessions, sshd)
    with pytest.raises(RemoteUnavailable, match="connection lost"):
        for _ in range(50):
            await ssh.run("echo two")
            await asyncio.sleep(0.05)
    assert not ssh.connected
    assert (await ssh.run("echo three")).stdout == "three\n"


async def test_file_access_recovers_after_killed_sessions(
    ssh: SshRemote, sshd: SshEndpoint
) -> None:
    base = (await ssh.run("mktemp -d")).stdout.strip()
    await ssh.write(f"{base}/f", b"kept")
    await asyncio.to_thread(kill_sessions, sshd)
    with pytest.raises(RemoteUnavailable, match="connection lost"):
        for _ in range(50):
            await ssh.read(f"{base}/f")
            await asyncio.sleep(0.05)
    assert await ssh.read(f"{base}/f") == b"kept"


@pytest.fixture
async def with_fifo(sshd: SshEndpoint) -> AsyncIterator[tuple[SshRemote, str]]:
    """A connection whose SFTP requests must be answered within 1 s, and a directory on the
    server holding a file `f` ("kept") and a FIFO `fifo`."""
    ssh = SshRemote(ssh_target(sshd, sftp_timeout=1.0))
    base = (await ssh.run("mktemp -d")).stdout.strip()
    try:
        await ssh.write(f"{base}/f", b"kept")
        await ssh.run(f"mkfifo {base}/fifo")
        yield ssh, base
    finally:
        # a writer opening the FIFO lets a blocked SFTP process go, and end
        await ssh.run(f"timeout 5 sh -c ': > {base}/fifo'; rm -rf {base}")
        await ssh.close()


async def test_an_sftp_server_that_stops_answering_does_not_hold_the_resource_up(
    with_fifo: tuple[SshRemote, str],
) -> None:
    """A read of a FIFO blocks the server's SFTP process for good (it answers requests one at
    a time): the read fails as a passing outage within `sftp_timeout`, the commands go on,
    and the next read gets a session of its own on the same connection."""
    ssh, base = with_fifo
    began = time.monotonic()
    with pytest.raises(RemoteUnavailable, match="did not answer within 1 s"):
        await ssh.read(f"{base}/fifo")
    assert time.monotonic() - began < 5
    assert (await ssh.run("echo still")).stdout == "still\n"
    assert await ssh.read(f"{base}/f") == b"kept"
    await ssh.write(f"{base}/g", b"written")
    assert await ssh.read(f"{base}/g") == b"written"
    assert ssh.connection.counters.connects == 1


async def test_reads_queued_behind_a_stuck_sftp_server_leave_the_connection_alone(
    with_fifo: tuple[SshRemote, str],
) -> None:
    """Reads waiting behind the stuck one end with it, as passing outages; the shared
    connection stays, and a command running on it meanwhile finishes."""
    ssh, base = with_fifo
    running = asyncio.ensure_future(ssh.run("sleep 3; echo done"))
    stuck = asyncio.ensure_future(ssh.read(f"{base}/fifo"))
    await asyncio.sleep(0.2)  # the FIFO's open first: the server is blocked in it
    queued = await asyncio.gather(*(ssh.read(f"{base}/f") for _ in range(3)),
                                  return_exceptions=True)
    assert all(isinstance(each, RemoteUnavailable) for each in queued), queued
    with pytest.raises(RemoteUnavailable):
        await stuck
    assert (await running).stdout == "done\n"
    assert await ssh.read(f"{base}/f") == b"kept"
    assert ssh.connection.counters.connects == 1


async def test_a_command_that_waited_for_a_channel_runs_on_the_new_connection(
    sshd: SshEndpoint,
) -> None:
    """The connection is taken when a channel is free, not before: one lost meanwhile is not
    used (nor closed, when its failure comes late, in place of the new one)."""
    remote = SshRemote(ssh_target(sshd, max_sessions=2))  # one channel for commands
    marker = f"/tmp/cerise-holder-{uuid.uuid4().hex}"
    try:
        holder = asyncio.ensure_future(remote.run(f"echo $$ > {marker}; sleep 30"))
        sessions = await asyncio.to_thread(
            connection_processes, int(await poll_for_file(Path(marker))))
        waiting = asyncio.ensure_future(remote.run("echo waited"))
        for _ in range(10):  # it takes the connection, if it does, without any I/O
            await asyncio.sleep(0)
        for pid in sessions:  # this connection's sshd processes, no other
            with contextlib.suppress(ProcessLookupError):  # the monitor ends with its child
                os.kill(pid, signal.SIGKILL)
        with pytest.raises(RemoteUnavailable, match="connection lost"):
            await holder
        assert (await waiting).stdout == "waited\n"
        assert (await remote.run("echo after")).stdout == "after\n"
    finally:
        await remote.close()
        await asyncio.to_thread(Path(marker).unlink, missing_ok=True)


def connection_processes(pid: int) -> list[int]:
    """The sshd processes of the connection that `pid` runs in: its nearest sshd ancestor
    (the user's) and that one's parent (the privileged monitor), which hold the socket."""
    def parent(pid: int) -> int:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])

    while Path(f"/proc/{pid}/comm").read_text().strip() != "sshd":
        pid = parent(pid)
    return [pid, parent(pid)]


async def poll_for_file(path: Path, timeout: float = 10.0, empty: bool = False) -> str:
    """The content of `path` once it has some (or, if `empty`, once it exists)."""
    deadline = time.monotonic() + timeout

    def content() -> str | None:
        if not path.exists():
            return None
        return path.read_text().strip() or (None if not empty else "")

    while (found := await asyncio.to_thread(content)) is None:
        assert time.monotonic() < deadline, f"{path} did not appear"
        await asyncio.sleep(0.02)
    return found


@pytest.fixture(scope="module")
def narrow_sshd() -> Iterator[SshEndpoint]:
    """An sshd that allows two sessions per connection (MaxSessions 2)."""
    server = devenv_sshd.start(max_sessions=2)
    yield server.endpoint
    server.stop()


async def test_a_server_with_fewer_sessions_than_configured_serves_every_command(
    narrow_sshd: SshEndpoint,
) -> None:
    """A channel the server refuses is not a lost connection: the others carry on, and the
    refused command waits for a channel that the server allows."""
    remote = SshRemote(ssh_target(narrow_sshd, max_sessions=8))
    try:
        results = await asyncio.gather(*(remote.run(f"sleep 0.3; echo {i}") for i in range(6)))
        assert [r.stdout for r in results] == [f"{i}\n" for i in range(6)]
        assert remote.counters.connects == 1
    finally:
        await remote.close()


async def test_a_refused_file_session_leaves_the_commands_running(
    narrow_sshd: SshEndpoint,
) -> None:
    """With every session the server allows taken by commands, opening the SFTP session is
    refused: that file access fails alone, the commands finish on the same connection."""
    remote = SshRemote(ssh_target(narrow_sshd, max_sessions=8))
    markers = [f"/tmp/cerise-busy-{uuid.uuid4().hex}" for _ in range(2)]
    try:
        busy = [asyncio.ensure_future(remote.run(f"touch {m}; sleep 1; echo done"))
                for m in markers]
        for marker in markers:
            await poll_for_file(Path(marker), empty=True)
        with pytest.raises(RemoteUnavailable, match="refused"):
            await remote.read("/etc/hostname")
        assert [(await b).stdout for b in busy] == ["done\n", "done\n"]
        deadline = time.monotonic() + 10  # sshd frees the sessions a moment later
        while True:
            try:
                assert await remote.read("/etc/hostname")
                break
            except RemoteUnavailable:
                assert time.monotonic() < deadline
                await asyncio.sleep(0.05)
        assert remote.counters.connects == 1
    finally:
        await remote.close()
        for marker in markers:
            await asyncio.to_thread(Path(marker).unlink, missing_ok=True)


async def test_decrypting_the_key_does_not_hold_up_other_work(sshd: SshEndpoint) -> None:
    """A passphrase key is decrypted in a thread, once, not on the event loop at each
    connect: other jobs' work goes on meanwhile."""
    key = asyncssh.import_private_key(sshd.client_key.read_text())
    slow = key.export_private_key(passphrase="s3cret", rounds=100).decode()
    remote = SshRemote(ssh_target(sshd, credentials=SshCredentials(
        sshd.username, private_key=slow, passphrase="s3cret")))
    gaps: list[float] = []

    async def tick() -> None:
        while True:
            started = time.monotonic()
            await asyncio.sleep(0.01)
            gaps.append(time.monotonic() - started)

    ticking = asyncio.ensure_future(tick())
    try:
        started = time.monotonic()
        assert (await remote.run("echo in")).stdout == "in\n"
        await remote.close()
        assert (await remote.run("echo again")).stdout == "again\n"
        took = time.monotonic() - started
        await asyncio.sleep(0.05)  # the tick that a stall delayed is counted too
    finally:
        ticking.cancel()
        await remote.close()
    assert took > 0.3, "the key decrypts too fast to show anything"
    # Decrypted on the event loop, one gap would take most of `took`; a loaded machine
    # stretches both alike.
    assert max(gaps) < took / 3, (max(gaps), took)
