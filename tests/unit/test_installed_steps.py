"""Reading the installed steps' documents from a compute resource, in one command."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

from cerise.remote import installed
from cerise.remote.connection import LocalRemote


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
