"""The shared SSH connection against a real OpenSSH server, and its local twin."""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
from pathlib import Path

import asyncssh
import pytest

from cerise.devenv.sshd import SshEndpoint
from cerise.remote.connection import (
    CommandTimedOut,
    Remote,
    RemoteUnavailable,
    SshCredentials,
    SshRemote,
)
from tests.integration.remote_fixtures import kill_sessions, ssh_target

pytestmark = pytest.mark.integration


async def test_runs_scripts_as_the_remoteuser(ssh: SshRemote, sshd: SshEndpoint) -> None:
    result = await ssh.run("id -un; echo oops >&2; exit 3")
    assert (result.exit_status, result.stdout, result.stderr) == (3, f"{sshd.username}\n", "oops\n")


async def test_commands_cannot_read_the_rest_of_the_script(remote: Remote) -> None:
    result = await remote.run("cat\necho still-here")
    assert result.stdout == "still-here\n"


async def test_many_commands_share_one_connection(ssh: SshRemote, sshd: SshEndpoint) -> None:
    results = await asyncio.gather(*(ssh.run(f"echo {i}") for i in range(40)))
    assert [r.stdout for r in results] == [f"{i}\n" for i in range(40)]
    # One TCP connection from this process to sshd, whatever the number of commands
    # (the session's operator may hold connections of its own to the same sshd).
    ss = ["ss", "-Htnp", "state", "established", "dst", f"127.0.0.1:{sshd.port}"]
    listing = await asyncio.to_thread(subprocess.run, ss, capture_output=True, text=True)
    established = [line for line in listing.stdout.splitlines()
                   if f"pid={os.getpid()}," in line]
    assert len(established) == 1


async def test_a_slow_command_times_out_alone(remote: Remote) -> None:
    await remote.run("true")
    connection = getattr(remote, "_connection", None)
    with pytest.raises(CommandTimedOut, match=r"did not finish within 0\.5 s"):
        await remote.run("sleep 5", timeout=0.5)
    assert (await remote.run("echo fine")).stdout == "fine\n"
    # over SSH, the shared connection was not dropped for one slow command
    assert getattr(remote, "_connection", None) is connection


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
