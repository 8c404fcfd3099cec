"""Installing a project over a real connection (SSH to the test sshd, and locally): the
layout, the switch to a new version, what a failure leaves, what is read back."""

from __future__ import annotations

import asyncio
import json
import shlex
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from cerise.devenv import controlplane
from cerise.devenv import sshd as devenv_sshd
from cerise.model.project_files import InvalidProject
from cerise.model.specialisation import Owner
from cerise.operator import sources
from cerise.remote import install
from cerise.remote.failures import RemoteUnavailable
from cerise.remote.install import InstallFailed, ProjectFile
from cerise.remote.protocol import BytesResult, CommandResult, Progress, Remote
from cerise.remote.ssh_remote import SshRemote
from tests.integration.remote_fixtures import ssh_target

pytestmark = pytest.mark.integration

TUTORIAL = controlplane.REPO / "specialisations" / "example" / "example"
OWNER = Owner("ns", "spec", "uid-1", 2, "2025-01-01T00:00:00Z")


@pytest.fixture
async def api(remote: Remote) -> AsyncIterator[str]:
    """A fresh `<base>/api` directory on the remote side, removed afterwards."""
    home = (await remote.run("echo $HOME")).stdout.strip()
    base = f"{home}/.cerise-install-{uuid.uuid4().hex[:8]}"
    yield f"{base}/api"
    await remote.run(f"rm -rf {shlex.quote(base)}")


async def run(remote: Remote, script: str) -> str:
    result = await remote.run(script)
    assert result.exit_status == 0, result.stderr
    return result.stdout


async def test_the_tutorial_project_is_installed_and_read_back(remote: Remote, api: str) -> None:
    files = sources.from_directory(TUTORIAL)
    done = await install.install(remote, api=api, project="example", version="0.1.0",
                                 owner=OWNER, files=files)
    project = f"{api}/example"
    real = (await run(remote, f"readlink -f {project}")).strip()
    assert real == f"{api}/{done.directory}"
    # install.sh ran with CERISE_PROJECT_FILES set to the new files directory
    assert await run(remote, f"cat {project}/files/heading.txt") == "=== Here is a heading! ===\n"
    assert "wrote " in await run(remote, f"cat {project}/install.log")
    # the script kept its permissions; the step names the installed files directory
    assert (await run(remote, f"stat -c %a {project}/files/add_heading.sh")).strip() == "755"
    step = json.loads(await run(remote, f"cat {project}/steps/example/custom_program.cwl"))
    assert (step["baseCommand"], step["arguments"]) == (f"{real}/files/add_heading.sh",
                                                        [f"{real}/files"])
    (found,) = (await install.read_installed(remote, api)).values()
    assert (found.project, found.version, found.owner_uid, found.owner) == (
        "example", "0.1.0", "uid-1", "ns/spec")


def project(message: str, script: str = "") -> list[ProjectFile]:
    files = [ProjectFile("steps/p/echo.cwl", data=b"class: CommandLineTool\nbaseCommand: echo\n"),
             ProjectFile("files/message.txt", data=message.encode())]
    if script:
        files.append(ProjectFile("install.sh", data=script.encode(), mode=0o755))
    return files


async def test_a_new_version_replaces_the_old_and_keeps_one_before_it(
    remote: Remote, api: str
) -> None:
    first = await install.install(remote, api=api, project="p", version="1.0.0", owner=OWNER,
                                  files=project("one"))
    second = await install.install(remote, api=api, project="p", version="1.1.0", owner=OWNER,
                                   files=project("two"))
    assert await run(remote, f"cat {api}/p/files/message.txt") == "two"
    assert await run(remote, f"cat {api}/p/version") == "1.1.0\n"
    await install.install(remote, api=api, project="p", version="1.2.0", owner=OWNER,
                          files=project("three"))
    kept = (await run(remote, f"ls {api}/.install/p")).split()
    assert second.directory.rsplit("/", 1)[1] in kept  # a job may still run it
    assert first.directory.rsplit("/", 1)[1] not in kept
    assert len(kept) == 2


async def test_a_failing_install_script_leaves_the_installed_version(
    remote: Remote, api: str
) -> None:
    await install.install(remote, api=api, project="p", version="1.0.0", owner=OWNER,
                          files=project("one"))
    script = "#!/bin/bash\necho compiling\necho 'no compiler here' >&2\nexit 3\n"
    with pytest.raises(InstallFailed) as failed:
        await install.install(remote, api=api, project="p", version="2.0.0", owner=OWNER,
                              files=project("two", script))
    failure = failed.value.failure
    assert failure.reason == "InstallScriptFailed"
    assert failure.message.startswith("install.sh exited with status 3; its output is in ")
    assert failure.log == "compiling\nno compiler here\n"
    assert await run(remote, f"cat {api}/p/files/message.txt") == "one"
    assert (await install.read_installed(remote, api))["p"].version == "1.0.0"


async def test_a_plain_directory_from_before_is_replaced(remote: Remote, api: str) -> None:
    await run(remote, f"mkdir -p {api}/p/steps/p && echo 0.0.1 > {api}/p/version")
    assert (await install.read_installed(remote, api))["p"].version == "0.0.1"
    await install.install(remote, api=api, project="p", version="1.0.0", owner=OWNER,
                          files=project("one"))
    assert await run(remote, f"cat {api}/p/files/message.txt") == "one"


async def test_nothing_installed_reads_as_nothing(remote: Remote, api: str) -> None:
    assert await install.read_installed(remote, api) == {}


def test_a_directory_source_keeps_its_links(tmp_path: Path) -> None:
    (tmp_path / "files" / "bin").mkdir(parents=True)
    (tmp_path / "files" / "bin" / "tool").write_text("#!/bin/sh\n")
    (tmp_path / "files" / "tool").symlink_to("bin/tool")
    (tmp_path / "notes.txt").write_text("not installed")
    listed = {f.path: f for f in sources.from_directory(tmp_path)}
    assert set(listed) == {"files/bin/tool", "files/tool"}
    assert listed["files/tool"].link == "bin/tool"
    (tmp_path / "files" / "out").symlink_to("../../etc")
    with pytest.raises(InvalidProject, match="links out of the project"):
        sources.from_directory(tmp_path)


@pytest.fixture(scope="module")
def own_sshd() -> Iterator[devenv_sshd.Sshd]:
    """An sshd of this module's own, which a test may take down."""
    server = devenv_sshd.start()
    yield server
    server.stop()


class OutageAfterFirstCommand:
    """A real connection to `server`, which goes down once the first command has run: an
    outage in the middle of an install, after its directories were made."""

    def __init__(self, server: devenv_sshd.Sshd) -> None:
        self.server = server
        self.inner = SshRemote(ssh_target(server.endpoint))
        self.commands = 0

    @property
    def username(self) -> str:
        return self.inner.username

    async def run(self, script: str, *, timeout: float = 120.0) -> CommandResult:
        return (await self.run_bytes(script, timeout=timeout)).as_text()

    async def run_bytes(self, script: str, *, timeout: float = 120.0) -> BytesResult:
        result = await self.inner.run_bytes(script, timeout=timeout)
        self.commands += 1
        if self.commands == 1:
            await asyncio.to_thread(self.server.go_down)
        return result

    async def read(self, remote: str, offset: int = 0, limit: int = 1 << 20) -> bytes:
        return await self.inner.read(remote, offset, limit)

    async def upload(self, local: Path | bytes, remote: str, *, mode: int = 0o600,
                     progress: Progress | None = None) -> int:
        return await self.inner.upload(local, remote, mode=mode, progress=progress)

    async def download(self, remote: str, local: Path, *,
                       progress: Progress | None = None) -> int:
        return await self.inner.download(remote, local, progress=progress)

    async def write(self, remote: str, data: bytes, mode: int = 0o600) -> None:
        await self.inner.write(remote, data, mode)

    async def close(self) -> None:
        await self.inner.close()


async def test_an_outage_while_copying_the_files_is_retried_not_a_failed_install(
    own_sshd: devenv_sshd.Sshd,
) -> None:
    """A lost connection is RemoteUnavailable (the installer tries again later), not an
    InstallError that would stand for the Specialisation's generation."""
    remote = OutageAfterFirstCommand(own_sshd)
    base = f"/tmp/cerise-outage-{uuid.uuid4().hex[:8]}"
    try:
        with pytest.raises(RemoteUnavailable):
            await install.install(remote, api=f"{base}/api", project="p", version="1.0.0",
                                  owner=OWNER, files=project("one"))
    finally:
        await remote.close()
        await asyncio.to_thread(own_sshd.come_back)
        cleaner = SshRemote(ssh_target(own_sshd.endpoint))  # the first one backs off now
        await cleaner.run(f"rm -rf {base}")
        await cleaner.close()
