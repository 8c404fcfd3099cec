"""A project's entries: what is installed, what is refused; $CERISE_PROJECT_FILES in steps."""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from cerise.model import project_files
from cerise.model.project_files import Entry, EntryKind, InvalidProject

FILE, DIR, LINK, HARD = EntryKind.FILE, EntryKind.DIRECTORY, EntryKind.SYMLINK, EntryKind.HARDLINK


def paths(*entries: Entry) -> list[str]:
    return [checked.path for checked in project_files.check_entries(entries)]


def test_only_the_project_parts_are_installed() -> None:
    assert paths(Entry("./version", FILE), Entry("./steps", DIR),
                 Entry("./steps/p/a.cwl", FILE), Entry("files/x.sh", FILE),
                 Entry("install.sh", FILE), Entry("README.md", FILE),
                 Entry("tests/t.py", FILE)) == [
        "version", "steps", "steps/p/a.cwl", "files/x.sh", "install.sh"]


def test_one_top_directory_is_the_project() -> None:
    assert paths(Entry("p-1.0/", DIR), Entry("p-1.0/steps/p/a.cwl", FILE),
                 Entry("p-1.0/files/b", FILE)) == ["steps/p/a.cwl", "files/b"]


def test_links_inside_the_project_are_kept() -> None:
    assert paths(Entry("files/tool", LINK, link="../files/bin/tool"),
                 Entry("files/bin/tool", FILE),
                 Entry("files/copy", HARD, link="files/bin/tool")) == [
        "files/tool", "files/bin/tool", "files/copy"]


@pytest.mark.parametrize(("entry", "problem"), [
    (Entry("../evil", FILE), "leads out of the project"),
    (Entry("files/../../evil", FILE), "leads out of the project"),
    (Entry("/etc/passwd", FILE), "is an absolute path"),
    (Entry("files/a\\b", FILE), "backslash"),
    (Entry("files/null", EntryKind.OTHER), "is a device or other special file"),
    (Entry("files/out", LINK, link="../../etc/passwd"), "links out of the project"),
    (Entry("files/abs", LINK, link="/etc/passwd"), "links to an absolute path"),
    (Entry("files/up", LINK, link="../.."), "links out of the project"),
    (Entry("files/hard", HARD, link="../outside"), "leads out of the project"),
    (Entry("files/hard", HARD, link="/etc/shadow"), "is an absolute path"),
])
def test_entries_leading_out_are_refused(entry: Entry, problem: str) -> None:
    with pytest.raises(InvalidProject, match=problem):
        project_files.check_entries([Entry("version", FILE), entry])


def test_a_hard_link_out_of_the_top_directory_is_refused() -> None:
    with pytest.raises(InvalidProject, match="links out of the project"):
        project_files.check_entries([Entry("p/files/a", FILE),
                                     Entry("p/files/b", HARD, link="q/secret")])


def test_sizes_and_counts_are_capped() -> None:
    with pytest.raises(InvalidProject, match="more than 3 entries"):
        project_files.check_entries([Entry(f"files/{i}", FILE) for i in range(4)], max_entries=3)
    with pytest.raises(InvalidProject, match="more than 1 MiB unpacked"):
        project_files.check_entries([Entry("files/a", FILE, size=600 << 10),
                                     Entry("files/b", FILE, size=600 << 10)],
                                    max_bytes=1 << 20)


def test_the_limits_hold_while_the_entries_are_read() -> None:
    """An archive's listing stops at the first entry past a limit: the rest is never read."""
    def endless(size: int) -> Iterator[Entry]:
        for index in itertools.count():
            assert index <= 3, "entries past the limit were read"
            yield Entry(f"files/{index}", FILE, size=size)

    with pytest.raises(InvalidProject, match="more than 3 entries"):
        project_files.check_entries(endless(0), max_entries=3)
    with pytest.raises(InvalidProject, match="more than 1 MiB unpacked"):
        project_files.check_entries(endless(1 << 20), max_bytes=(1 << 20) + 1)


def test_configmap_keys_are_paths() -> None:
    assert project_files.configmap_path("steps__p__wc.cwl") == "steps/p/wc.cwl"
    assert project_files.configmap_path("install.sh") == "install.sh"


FILES = "/home/u/.cerise/api/.install/p/1.0-ab/files"


def test_every_command_line_tool_has_the_files_directory_put_in() -> None:
    document: dict[str, Any] = {
        "class": "Workflow",
        "steps": {"inner": {"run": {
            "class": "CommandLineTool", "baseCommand": ["$CERISE_PROJECT_FILES/run.sh", "-v"],
            "arguments": ["$CERISE_PROJECT_FILES",
                          {"prefix": "--data", "valueFrom": "$CERISE_PROJECT_FILES/data"},
                          {"position": 2, "valueFrom": "x:$CERISE_PROJECT_FILES_OTHER"}],
            "inputs": {"x": {"type": "string", "default": "$CERISE_PROJECT_FILES"}}}}},
    }
    tool = project_files.substitute(document, FILES)["steps"]["inner"]["run"]
    assert tool["baseCommand"] == [f"{FILES}/run.sh", "-v"]
    assert tool["arguments"] == [
        FILES, {"prefix": "--data", "valueFrom": f"{FILES}/data"},
        {"position": 2, "valueFrom": "x:$CERISE_PROJECT_FILES_OTHER"}]
    assert tool["inputs"]["x"]["default"] == "$CERISE_PROJECT_FILES"  # only the command line
    assert document["steps"]["inner"]["run"]["arguments"][0] == "$CERISE_PROJECT_FILES"


def test_the_tutorial_step_is_substituted() -> None:
    text = (b"cwlVersion: v1.0\nclass: CommandLineTool\n"
            b"baseCommand: $CERISE_PROJECT_FILES/add_heading.sh\n"
            b"arguments: [$CERISE_PROJECT_FILES]\ninputs: {}\noutputs: {}\n")
    new = project_files.substitute_step(text, FILES, "steps/example/custom_program.cwl")
    assert new is not None
    tool = json.loads(new)
    assert (tool["baseCommand"], tool["arguments"]) == (f"{FILES}/add_heading.sh", [FILES])


def test_a_step_without_the_macro_is_left_as_it_is() -> None:
    text = yaml.safe_dump({"class": "CommandLineTool", "baseCommand": "hostname"}).encode()
    assert project_files.substitute_step(text, FILES, "steps/p/h.cwl") is None


def test_a_step_that_is_no_yaml_is_refused() -> None:
    with pytest.raises(InvalidProject, match=r"steps/p/h.cwl is not valid YAML"):
        project_files.substitute_step(b"a: [", FILES, "steps/p/h.cwl")
