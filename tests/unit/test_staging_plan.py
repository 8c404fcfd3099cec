"""The pure half of staging: remote names and places, the prepare and listing scripts.

The scripts run in a real bash on local files, as on a compute resource.
"""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import pytest

from cerise.model import cwl
from cerise.model.cwl import FileKind, Origin
from cerise.model.exchange import DownloadSource, Exchange, LocalSource
from cerise.remote import staging
from cerise.remote.jobscript import JobFiles
from cerise.remote.protocol import wrap_script
from cerise.remote.staging import Entry, InputRejected, OutputRejected, WorkListing

ROOT = Path("/srv/exchange")
URL = "http://localhost:29593/files"
EXCHANGE = Exchange(root=ROOT, url=URL)
FILES = JobFiles("/home/u/.cerise/jobs/uid-1")
WORK = FILES.work
IN = f"{URL}/input/job"
HOSTILE = [
    "my data.txt",
    "it's.txt",
    'say "hi".txt',
    "$(touch pwned).txt",
    "a;b&&c|d`id`",
    "...",
    "..hidden",
    "-rf",
    "ünïcødé.txt",
    "x" * 200 + ".fastq",
]


def a_file(location: str, **more: Any) -> dict[str, Any]:
    return {"class": "File", "location": location, **more}


def a_dir(location: str | None, **more: Any) -> dict[str, Any]:
    value: dict[str, Any] = {"class": "Directory", **more}
    if location is not None:
        value["location"] = location
    return value


STEP = """\
cwlVersion: v1.2
class: CommandLineTool
baseCommand: wc
inputs: {extra: File?}
stdout: output.txt
outputs: {output: stdout}
"""
"""The installed step the workflows run (its one input is optional)."""


def workflow(inputs: dict[str, Any], steps_in: dict[str, Any] | None = None) -> cwl.Workflow:
    document = {
        "cwlVersion": "v1.2",
        "class": "Workflow",
        "inputs": inputs,
        "outputs": {},
        "steps": {
            "wc": {"run": "cerise/test/wc.cwl", "in": steps_in or {}, "out": ["output"]},
        },
    }
    return cwl.parse_workflow(json.dumps(document), installed_steps={"cerise/test/wc.cwl": STEP})


def plan_for(
    inputs: dict[str, Any], values: dict[str, Any], **more: Any
) -> tuple[staging.Plan, cwl.Workflow]:
    checked = workflow(inputs, more.pop("steps_in", None))
    references = cwl.check_inputs(checked, values)
    return staging.plan(references, EXCHANGE, FILES, **more), checked


def remote_path(location: str) -> str:
    parts = urlsplit(location)
    assert parts.scheme == "file" and not parts.netloc
    return unquote(parts.path)


def test_a_file_gets_a_counted_sanitised_name_and_keeps_its_basename() -> None:
    plan, _ = plan_for({"f": "File"}, {"f": a_file(f"{IN}/my%20data.txt")})

    (transfer,) = plan.transfers
    assert transfer == staging.Transfer(
        LocalSource(ROOT / "input/job/my data.txt"), FileKind.FILE, "01_my_data.txt",
        f"{IN}/my%20data.txt",
    )
    moved = plan.apply({"f": a_file(f"{IN}/my%20data.txt", path="/stale")}, Origin.INPUT_OBJECT)
    assert moved == {
        "f": {
            "class": "File",
            "location": f"file://{WORK}/01_my_data.txt",
            "basename": "my_data.txt",
        }
    }


@pytest.mark.parametrize("name", HOSTILE)
def test_hostile_names_become_safe_remote_names(name: str) -> None:
    location = f"{IN}/{name.replace('%', '%25').replace('#', '%23').replace('?', '%3F')}"
    plan, _ = plan_for({"f": "File"}, {"f": a_file(location)})

    (transfer,) = plan.transfers
    assert re.fullmatch(r"01_[A-Za-z0-9_.-]{1,48}", transfer.name)
    moved = plan.apply({"f": a_file(location)}, Origin.INPUT_OBJECT)
    assert remote_path(moved["f"]["location"]) == f"{WORK}/{transfer.name}"
    basename = moved["f"]["basename"]
    assert re.fullmatch(r"[\w.+,:@-]+", basename), "runners refuse other characters"
    if re.fullmatch(r"[\w.+,:@-]+", name):
        assert basename == name


def test_long_names_keep_their_start_and_end() -> None:
    plan, _ = plan_for({"f": "File"}, {"f": a_file(f"{IN}/{'a' * 100}_reads.fastq.gz")})
    assert plan.transfers[0].name == f"01_{'a' * 20}___{'a' * 10}_reads.fastq.gz"


def test_an_explicit_basename_names_the_file_and_is_kept() -> None:
    value = a_file(f"{IN}/upload-3", basename="reads.bam")
    plan, _ = plan_for({"f": "File"}, {"f": value})

    assert plan.transfers[0].name == "01_reads.bam"
    assert plan.placements[0].basename is None
    assert plan.apply({"f": value}, Origin.INPUT_OBJECT)["f"]["basename"] == "reads.bam"


@pytest.mark.parametrize(("given", "seen"), [
    ("my data (v2).txt", "my_data_v2_.txt"), ("$(touch x) it's.txt", "touch_x_it_s.txt"),
    ("naïve\u2029.txt", "na_ve_.txt"), ("$$$", "01__"),
])
def test_an_explicit_basename_runners_refuse_is_made_portable(given: str, seen: str) -> None:
    """cerise-client sends the uploaded file's own name: cwltool refuses spaces, quotes and
    shell characters in it ("Invalid filename"), so the tool sees the portable name."""
    value = a_file(f"{IN}/upload-3", basename=given)
    plan, _ = plan_for({"f": "File"}, {"f": value})

    basename = plan.apply({"f": value}, Origin.INPUT_OBJECT)["f"]["basename"]
    assert basename == seen
    assert re.fullmatch(r"[\w.+,:@-]+", basename), "runners refuse other characters"


def test_secondary_files_recursive_and_arrays_are_staged_depth_first() -> None:
    bam = a_file(
        f"{IN}/reads.bam",
        secondaryFiles=[a_file(f"{IN}/reads.bam.bai", secondaryFiles=[a_file(f"{IN}/x.md5")])],
    )
    values = {"bam": bam, "many": [a_file(f"{IN}/a.txt"), a_file("https://example.org/b.txt")]}
    plan, _ = plan_for({"bam": "File", "many": "File[]"}, values)

    assert [t.name for t in plan.transfers] == [
        "01_reads.bam", "02_reads.bam.bai", "03_x.md5", "04_a.txt", "05_b.txt",
    ]
    assert plan.transfers[4].source == DownloadSource("https://example.org/b.txt")
    moved = plan.apply(values, Origin.INPUT_OBJECT)
    secondary = moved["bam"]["secondaryFiles"][0]
    assert remote_path(secondary["location"]) == f"{WORK}/02_reads.bam.bai"
    assert secondary["basename"] == "reads.bam.bai"
    assert secondary["secondaryFiles"][0]["basename"] == "x.md5"
    assert [f["basename"] for f in moved["many"]] == ["a.txt", "b.txt"]


def test_the_same_source_twice_is_sent_once() -> None:
    values = {"a": a_file(f"{IN}/x.txt"), "b": a_file(f"{URL}/input/job/./x.txt")}
    plan, _ = plan_for({"a": "File", "b": "File"}, values)

    assert len(plan.transfers) == 1
    locations = plan.locations(Origin.INPUT_OBJECT)
    assert locations[("a",)] == locations[("b",)]


def test_optional_inputs_left_out_stage_nothing() -> None:
    plan, _ = plan_for({"f": "File?", "g": "File[]?"}, {"g": None})
    assert plan.transfers == () and plan.placements == ()


def test_defaults_resolve_against_the_workflow_url_and_rewrite_the_workflow() -> None:
    inputs = {"table": {"type": "File", "default": a_file("table%201.csv")}}
    steps_in = {"extra": {"default": a_file(f"{IN}/extra.txt")}}
    plan, checked = plan_for(
        inputs, {}, steps_in=steps_in, workflow_url=f"{IN}/workflow.cwl"
    )

    assert [t.source for t in plan.transfers] == [
        LocalSource(ROOT / "input/job/table 1.csv"), LocalSource(ROOT / "input/job/extra.txt"),
    ]
    moved = plan.apply(checked.document, Origin.WORKFLOW)
    table = moved["inputs"]["table"]["default"]
    assert remote_path(table["location"]) == f"{WORK}/01_table_1.csv"
    assert table["basename"] == "table_1.csv"
    assert remote_path(moved["steps"]["wc"]["in"]["extra"]["default"]["location"]).endswith(
        "/02_extra.txt"
    )
    assert plan.locations(Origin.INPUT_OBJECT) == {}


def test_a_relative_default_without_a_workflow_url_is_refused() -> None:
    inputs = {"table": {"type": "File", "default": a_file("table.csv")}}
    with pytest.raises(InputRejected, match="File at /inputs/table/default in the workflow"):
        plan_for(inputs, {})


def test_a_directory_is_one_transfer_and_its_listing_points_inside_the_copy() -> None:
    directory = a_dir(
        f"{IN}/my%20dir",
        listing=[
            a_file(f"{IN}/my%20dir/a%20b.txt"),
            a_dir(f"{IN}/my%20dir/sub", listing=[a_file(f"{IN}/my%20dir/sub/c%231.txt")]),
            a_file(f"{IN}/elsewhere.txt"),
        ],
    )
    plan, _ = plan_for({"d": "Directory"}, {"d": directory})

    assert [(t.name, t.kind) for t in plan.transfers] == [
        ("01_my_dir", FileKind.DIRECTORY), ("02_elsewhere.txt", FileKind.FILE),
    ]
    moved = plan.apply({"d": directory}, Origin.INPUT_OBJECT)["d"]
    assert moved["basename"] == "my_dir"
    assert remote_path(moved["listing"][0]["location"]) == f"{WORK}/01_my_dir/a b.txt"
    assert "basename" not in moved["listing"][0]
    sub = moved["listing"][1]
    assert remote_path(sub["listing"][0]["location"]) == f"{WORK}/01_my_dir/sub/c#1.txt"
    assert sub["listing"][0]["location"].endswith("/c%231.txt")
    assert remote_path(moved["listing"][2]["location"]) == f"{WORK}/02_elsewhere.txt"


def test_a_directory_literal_stages_its_entries() -> None:
    literal = a_dir(None, basename="made", listing=[a_file(f"{IN}/x.txt")])
    plan, _ = plan_for({"d": "Directory"}, {"d": literal})

    assert [t.name for t in plan.transfers] == ["01_x.txt"]
    moved = plan.apply({"d": literal}, Origin.INPUT_OBJECT)["d"]
    assert "location" not in moved and moved["basename"] == "made"
    assert remote_path(moved["listing"][0]["location"]) == f"{WORK}/01_x.txt"


def test_a_directory_from_the_web_is_refused() -> None:
    with pytest.raises(InputRejected, match="a Directory must be in the file exchange"):
        plan_for({"d": "Directory"}, {"d": a_dir("https://example.org/d/")})


@pytest.mark.parametrize(
    ("location", "reason"),
    [
        ("file:///etc/passwd", "is outside the file exchange"),
        ("/srv/exchange/input/x", "is not a URL"),
        (f"{IN}/../../../etc/passwd", "contains '..'"),
        ("ftp://example.org/x", "not supported"),
    ],
)
def test_refused_locations_are_the_users_fault_with_where_they_are(
    location: str, reason: str
) -> None:
    value = a_file(f"{IN}/ok.txt", secondaryFiles=[a_file(location)])
    with pytest.raises(InputRejected) as info:
        plan_for({"f": "File"}, {"f": value})
    assert str(info.value).startswith("File at /f/secondaryFiles/0 in the input object: ")
    assert reason in str(info.value)


# --- the prepare script ------------------------------------------------------------------


def bash(script: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", "-s"], input=wrap_script(script), capture_output=True, text=True, timeout=60
    )


def test_prepare_makes_private_dirs_and_reports_only_files_of_the_right_size(
    tmp_path: Path,
) -> None:
    hostile = tmp_path / "job 'x' $(touch pwned)"
    same = hostile / "work" / "01_same;rm -rf ~"
    other = hostile / "work" / "02_other\nline"
    tricky = hostile / "work" / "03_back\\slash"
    (hostile / "work").mkdir(parents=True)
    same.write_bytes(b"same")
    other.write_bytes(b"different size")
    tricky.write_bytes(b"xyz")
    candidates = [
        (str(same), 4), (str(other), 3), (str(hostile / "work/missing"), 1), (str(tricky), 3),
    ]
    dirs = [str(hostile / "work"), str(hostile / "work/04_dir/sub dir")]

    result = bash(staging.prepare_script(dirs, candidates))

    assert result.returncode == 0, result.stderr
    assert (hostile / "work/04_dir/sub dir").stat().st_mode & 0o777 == 0o700
    sums = staging.parse_checksums(result.stdout, [path for path, _ in candidates])
    assert sums == {
        str(same): hashlib.sha256(b"same").hexdigest(),
        str(tricky): hashlib.sha256(b"xyz").hexdigest(),
    }
    assert not list(tmp_path.rglob("pwned"))


def test_prepare_with_nothing_there_reports_nothing(tmp_path: Path) -> None:
    result = bash(staging.prepare_script([str(tmp_path / "w")], [(str(tmp_path / "w/x"), 0)]))
    assert result.returncode == 0 and result.stdout == ""
    assert staging.parse_checksums(result.stdout, [str(tmp_path / "w/x")]) == {}


@pytest.mark.parametrize(
    "output",
    [
        "cerise-same: 0 1\n" + "a" * 64 + "  x\n",  # one line missing
        "cerise-same: 0\nnot a checksum  x\n",
        "cerise-same: 7\n" + "a" * 64 + "  x\n",  # no such candidate
        "cerise-same: zero\n",
    ],
)
def test_a_garbled_checksum_reply_means_send_everything(output: str) -> None:
    assert staging.parse_checksums(output, ["x", "y"]) == {}


# --- the listing script and output planning ----------------------------------------------


def listing_of(work: Path) -> WorkListing:
    result = bash(staging.listing_script(str(work)))
    assert result.returncode == 0, result.stderr
    return staging.parse_listing(result.stdout)


def test_listing_sees_types_sizes_and_where_links_lead(tmp_path: Path) -> None:
    work = tmp_path / "job" / "work"
    (work / "d\nnew line").mkdir(parents=True)
    (work / "d\nnew line" / "f 1").write_bytes(b"12345")
    (work / "inside").symlink_to("d\nnew line/f 1")
    (work / "outside").symlink_to("/etc/passwd")
    (work / "dangling").symlink_to("nowhere")

    listing = listing_of(work)

    assert listing.real == str(work.resolve())
    assert listing.entries["d\nnew line"].kind == "d"
    assert listing.entries["d\nnew line/f 1"] == Entry("f", 5)
    target = f"{work}/d\nnew line/f 1"
    assert listing.entries["inside"] == Entry("l", len("d\nnew line/f 1"), target)
    assert listing.entries["outside"].target == "/etc/passwd"
    assert listing.resolve("inside", shown="x") == ("d\nnew line/f 1", Entry("f", 5))
    assert listing.resolve("dangling", shown="x") is None
    with pytest.raises(OutputRejected, match="symbolic link to '/etc/passwd'"):
        listing.resolve("outside", shown="x")


def test_listing_a_missing_work_dir_is_empty(tmp_path: Path) -> None:
    assert listing_of(tmp_path / "gone") == WorkListing(real="")


def published(outputs: dict[str, Any], listing: WorkListing) -> staging.OutputPlan:
    return staging.plan_outputs(outputs, listing, FILES, EXCHANGE, "uid-1")


LISTING = WorkListing(
    real="/export/home/u/.cerise/jobs/uid-1/work",
    entries={
        "out.txt": Entry("f", 3),
        "out.txt.idx": Entry("f", 1),
        "my dir": Entry("d"),
        "my dir/a.txt": Entry("f", 2),
        "my dir/sub": Entry("d"),
        "my dir/sub/b.txt": Entry("f", 4),
        "my dir/empty": Entry("d"),
        "my dir/link": Entry("l", 0, "/export/home/u/.cerise/jobs/uid-1/work/out.txt"),
        "escape": Entry("l", 0, "/etc/passwd"),
        "dirlink": Entry("l", 0, "/export/home/u/.cerise/jobs/uid-1/work/my dir/sub"),
    },
)
OUT = f"{URL}/output/uid-1"


def test_outputs_are_copied_and_point_to_the_exchange() -> None:
    outputs = {
        "text": {
            "class": "File",
            "location": f"file://{WORK}/out.txt",
            "path": f"{WORK}/out.txt",
            "dirname": WORK,
            "basename": "out.txt",
            "checksum": "sha1$abc",
            "size": 3,
            "format": "edam:format_1",
            "secondaryFiles": [
                {"class": "File", "location": f"file://{WORK}/out.txt.idx"},
                {"class": "File", "location": f"file://{WORK}/gone.idx"},
            ],
        },
        "count": 3,
        "words": ["a", "b"],
        "nothing": None,
    }

    result = published(outputs, LISTING)

    assert result.outputs == {
        "text": {
            "class": "File",
            "location": f"{OUT}/out.txt",
            "basename": "out.txt",
            "checksum": "sha1$abc",
            "size": 3,
            "format": "edam:format_1",
            "secondaryFiles": [{"class": "File", "location": f"{OUT}/out.txt.idx"}],
        },
        "count": 3,
        "words": ["a", "b"],
        "nothing": None,
    }
    assert {(c.remote, c.relpath, c.size) for c in result.copies} == {
        (f"{LISTING.real}/out.txt", "out.txt", 3),
        (f"{LISTING.real}/out.txt.idx", "out.txt.idx", 1),
    }


def test_arrays_records_and_missing_files() -> None:
    outputs = {
        "many": [
            {"class": "File", "location": f"{WORK}/out.txt"},
            {"class": "File", "location": f"file://{WORK}/missing.txt"},
        ],
        "record": {"inner": {"class": "File", "path": f"{LISTING.real}/my dir/a.txt"}},
        "lost": {"class": "File", "location": f"file://{WORK}/lost.txt"},
    }

    result = published(outputs, LISTING)

    assert result.outputs == {
        "many": [{"class": "File", "location": f"{OUT}/out.txt"}, None],
        "record": {"inner": {"class": "File", "location": f"{OUT}/my%20dir/a.txt"}},
        "lost": None,
    }


def test_a_directory_is_copied_whole_with_its_listing_rewritten() -> None:
    outputs = {
        "d": {
            "class": "Directory",
            "location": f"file://{WORK}/my%20dir",
            "basename": "my dir",
            "listing": [{"class": "File", "location": f"file://{WORK}/my%20dir/a.txt"}],
        },
        "via": {"class": "Directory", "location": f"file://{WORK}/dirlink"},
    }

    result = published(outputs, LISTING)

    assert result.outputs["d"] == {
        "class": "Directory",
        "location": f"{OUT}/my%20dir",
        "basename": "my dir",
        "listing": [{"class": "File", "location": f"{OUT}/my%20dir/a.txt"}],
    }
    assert result.outputs["via"] == {"class": "Directory", "location": f"{OUT}/dirlink"}
    assert {(c.relpath, c.remote.removeprefix(LISTING.real + "/")) for c in result.copies} == {
        ("my dir/a.txt", "my dir/a.txt"),
        ("my dir/sub/b.txt", "my dir/sub/b.txt"),
        ("my dir/link", "out.txt"),
        ("dirlink/b.txt", "my dir/sub/b.txt"),
    }
    assert set(result.dirs) == {"my dir", "my dir/sub", "my dir/empty", "dirlink"}


@pytest.mark.parametrize(
    ("location", "reason"),
    [
        ("file:///etc/passwd", "is outside the job's work directory"),
        (f"file://{WORK}/../stdout.txt", "is outside the job's work directory"),
        (f"{WORK}/../../uid-2/work/x", "is outside the job's work directory"),
        (f"file://{WORK}/escape", "symbolic link to '/etc/passwd'"),
        ("http://example.org/x", "is not a file on the compute resource"),
        ("file://otherhost/x", "is not a file on the compute resource"),
        ("_:literal", "is not a file on the compute resource"),
        (f"file://{WORK}/my%20dir", "is not a File"),
    ],
)
def test_outputs_outside_the_work_dir_are_refused(location: str, reason: str) -> None:
    with pytest.raises(OutputRejected) as info:
        published({"o": [{"class": "File", "location": location}]}, LISTING)
    assert str(info.value).startswith("output File at /o/0: ")
    assert reason in str(info.value)


def test_an_escaping_link_inside_an_output_directory_is_refused() -> None:
    listing = WorkListing(
        real=WORK, entries={"d": Entry("d"), "d/x": Entry("l", 0, "/home/u/.ssh/id_rsa")}
    )
    with pytest.raises(OutputRejected, match=r"d/x is a symbolic link to '/home/u/\.ssh/id_rsa'"):
        published({"d": {"class": "Directory", "location": f"file://{WORK}/d"}}, listing)


def test_nothing_at_all_when_the_work_dir_is_gone() -> None:
    outputs = {"f": {"class": "File", "location": f"file://{WORK}/x"}, "n": 1}
    result = published(outputs, WorkListing(real=""))
    assert result.outputs == {"f": None, "n": 1}
    assert result.copies == ()
