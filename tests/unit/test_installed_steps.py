"""Reading the installed steps' documents from a compute resource, in one command."""

from __future__ import annotations

import asyncio
import io
import tarfile
import time
from pathlib import Path

import pytest

from cerise.remote import installed
from cerise.remote.local import LocalRemote
from cerise.remote.protocol import BytesResult


def archive(*members: tuple[str, bytes | None]) -> bytes:
    data = io.BytesIO()
    with tarfile.open(fileobj=data, mode="w") as tar:
        for name, content in members:
            info = tarfile.TarInfo(name)
            if content is None:
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            else:
                info.size = len(content)
                tar.addfile(info, io.BytesIO(content))
    return data.getvalue()


def test_files_under_the_steps_trees_are_named_by_project_and_path() -> None:
    data = archive(
        ("./cerise/steps/cerise/test/wc.cwl", b"class: CommandLineTool\n"),
        ("./cerise/steps/cerise/test", None),
        ("./cerise/steps/cerise/types.yml", b"types: []\n"),
        ("./cerise/steps/cerise/blob.bin", b"\xff\xfe"),
        ("./cerise/version", b"1.0\n"),
        ("./other/files/tool.cwl", b"x"),
    )

    assert installed.parse_archive(data) == {
        "cerise/test/wc.cwl": "class: CommandLineTool\n",
        "cerise/types.yml": "types: []\n",
    }


def test_nothing_installed_is_an_empty_archive_or_none() -> None:
    assert installed.parse_archive(b"") == {}
    assert installed.parse_archive(archive()) == {}


async def test_projects_behind_links_are_read(tmp_path: Path) -> None:
    version = tmp_path / "api" / ".install" / "demo" / "1.0-x"
    (version / "steps" / "demo" / "sub").mkdir(parents=True)
    (version / "steps" / "demo" / "sub" / "hello.cwl").write_text("class: CommandLineTool\n")
    (version / "files").mkdir()
    (version / "files" / "data.txt").write_text("not a step\n")
    (tmp_path / "api" / "demo").symlink_to(".install/demo/1.0-x")

    documents = await installed.step_documents(LocalRemote(), str(tmp_path / "api"))

    assert documents == {"demo/sub/hello.cwl": "class: CommandLineTool\n"}
    assert await installed.step_documents(LocalRemote(), str(tmp_path / "none")) == {}


class PrintedBytes(LocalRemote):
    """This machine as a compute resource, counting the bytes its commands print."""

    printed = 0

    async def run_bytes(self, script: str, *, timeout: float = 120.0) -> BytesResult:
        result = await super().run_bytes(script, timeout=timeout)
        self.printed += len(result.stdout)
        return result


async def test_steps_read_again_unchanged_are_not_sent_again(tmp_path: Path) -> None:
    steps = tmp_path / "api" / "demo" / "steps" / "demo"
    steps.mkdir(parents=True)
    (steps / "hello.cwl").write_text("class: CommandLineTool\n")
    remote = PrintedBytes()
    first = await installed.step_documents(remote, str(tmp_path / "api"))
    printed = remote.printed
    assert await installed.step_documents(remote, str(tmp_path / "api")) == first
    assert remote.printed - printed < 100  # a fingerprint, not the archive again
    (steps / "hello.cwl").write_text("class: CommandLineTool\nid: changed\n")
    assert (await installed.step_documents(remote, str(tmp_path / "api"))) == {
        "demo/hello.cwl": "class: CommandLineTool\nid: changed\n"}


async def test_a_large_archive_is_parsed_beside_the_event_loop(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    steps = tmp_path / "api" / "demo" / "steps" / "demo"
    steps.mkdir(parents=True)
    for index in range(10_000):
        (steps / f"tool{index}.cwl").write_text("class: CommandLineTool\n")
    api = str(tmp_path / "api")
    parsing: list[float] = []
    parse = installed.parse_archive

    def timed(data: bytes) -> dict[str, str]:
        parsing.append(time.monotonic())
        try:
            return parse(data)
        finally:
            parsing.append(time.monotonic())

    monkeypatch.setattr(installed, "parse_archive", timed)
    ticks: list[float] = []

    async def tick() -> None:
        while True:
            await asyncio.sleep(0.001)
            ticks.append(time.monotonic())

    ticking = asyncio.ensure_future(tick())
    try:
        documents = await installed.step_documents(LocalRemote(), api)
    finally:
        ticking.cancel()
    assert len(documents) == 10_000
    began, ended = parsing
    # Parsed on the loop, no tick could end while it ran; beside it, the loop keeps ticking.
    assert sum(began < at < ended for at in ticks) >= 3, f"{ended - began:.3f} s of parsing"
