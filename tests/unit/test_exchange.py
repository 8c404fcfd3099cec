"""The file exchange: which input locations it reads from where, and where outputs go."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import quote

import pytest

from cerise.model.exchange import DownloadSource, Exchange, LocalSource, RefusedLocation

ROOT = Path("/srv/exchange")
URL = "http://localhost:29593/files"
EXCHANGE = Exchange(root=ROOT, url=URL)


def local(location: str, base: str | None = None) -> Path:
    source = EXCHANGE.source(location, base=base)
    assert isinstance(source, LocalSource)
    return source.path


def refusal(location: str, base: str | None = None) -> str:
    with pytest.raises(RefusedLocation) as info:
        EXCHANGE.source(location, base=base)
    return str(info.value)


@pytest.mark.parametrize(
    ("location", "path"),
    [
        (f"{URL}/input/job/data.txt", "input/job/data.txt"),
        (f"{URL}/input/job/my%20data.txt", "input/job/my data.txt"),
        (f"{URL}/input/job/%24%28id%29%3Bx", "input/job/$(id);x"),
        (f"{URL}/input/job/it's.txt", "input/job/it's.txt"),
        (f"{URL}/input/j%C3%BCb/%C3%BC.txt", "input/jüb/ü.txt"),
        (f"{URL}/input/job/dir/", "input/job/dir"),
        (f"{URL}/input//job/./x", "input/job/x"),
        ("HTTP://LocalHost:29593/files/input/x", "input/x"),
        ("file:///srv/exchange/input/job/data.txt", "input/job/data.txt"),
        ("file://localhost/srv/exchange/input/a%20b", "input/a b"),
    ],
)
def test_locations_in_the_exchange_map_to_its_directory(location: str, path: str) -> None:
    assert local(location) == ROOT / path


def test_default_port_is_the_same_origin() -> None:
    exchange = Exchange(root=ROOT, url="https://cerise.example.org/files/")
    assert exchange.source("https://cerise.example.org:443/files/in/x") == LocalSource(
        ROOT / "in/x"
    )
    assert exchange.url == "https://cerise.example.org/files"


@pytest.mark.parametrize(
    "location",
    [
        "http://example.org/data/reads.fastq",
        "https://example.org/data/reads.fastq?token=abc",
        "http://localhost:29594/files/input/x",  # another port
        "http://localhost:29593/filesystem/x",  # only a prefix of the path
        "https://localhost:29593/files/input/x",  # another scheme
    ],
)
def test_other_http_urls_are_downloads(location: str) -> None:
    assert EXCHANGE.source(location) == DownloadSource(location)


@pytest.mark.parametrize(
    ("location", "reason"),
    [
        ("", "the location is empty"),
        ("/srv/exchange/input/x", "is not a URL"),
        ("data.txt", "is not a URL"),
        ("ftp://example.org/x", "'ftp' scheme, which is not supported"),
        ("s3://bucket/x", "'s3' scheme"),
        ("file:///etc/passwd", "is outside the file exchange"),
        ("file:///srv/exchange-other/x", "is outside the file exchange"),
        ("file:///srv/exchange", "names the file exchange itself"),
        ("file://otherhost/srv/exchange/x", "names a file on another host"),
        ("file:///srv/exchange/input/../../../etc/passwd", "contains '..'"),
        (f"{URL}/input/../../etc/passwd", "contains '..'"),
        (f"{URL}/input/%2E%2E/%2e%2e/etc/passwd", "contains '..'"),
        (f"{URL}/input/a%2F..%2F..%2Fb", "contains '..'"),
        (f"{URL}/input/x%00y", "NUL"),
        (f"{URL}/input/%ff", "not valid UTF-8"),
        (f"{URL}/input/x?version=2", "query or fragment"),
        (f"{URL}/input/x#part", "query or fragment"),
        (URL, "names the file exchange itself"),
        (f"{URL}/", "names the file exchange itself"),
        ("http:///nohost", "has no host name"),
        ("http://localhost:99999999/files/x", "invalid port"),
    ],
)
def test_refused_locations_say_why(location: str, reason: str) -> None:
    assert reason in refusal(location)


def test_refusals_tell_the_user_what_to_do_instead() -> None:
    message = refusal("file:///home/me/data.txt")
    assert f"upload the file to {URL}/input/" in message
    assert "http(s) URL" in message


def test_relative_locations_resolve_against_a_base() -> None:
    base = f"{URL}/input/job/workflow.cwl"
    assert local("table.csv", base=base) == ROOT / "input/job/table.csv"
    assert local("data/t%201.csv", base=base) == ROOT / "input/job/data/t 1.csv"
    assert EXCHANGE.source("t.csv", base="http://example.org/wf/w.cwl") == DownloadSource(
        "http://example.org/wf/t.csv"
    )
    assert local("../other/x", base=base) == ROOT / "input/other/x"
    assert "is not a URL" in refusal("table.csv")


def test_relative_locations_cannot_climb_out_of_the_exchange() -> None:
    base = f"{URL}/input/job/workflow.cwl"
    # urljoin removes the dot segments: what is left is outside the prefix, a download
    # from the same server, never a local path outside the root.
    source = EXCHANGE.source("../../../../etc/passwd", base=base)
    assert source == DownloadSource("http://localhost:29593/etc/passwd")


def test_outputs_are_placed_under_the_job_key_and_percent_encoded() -> None:
    assert EXCHANGE.output_dir("uid-1") == ROOT / "output/uid-1"
    assert EXCHANGE.output_path("uid-1", "dir/my file.txt") == ROOT / "output/uid-1/dir/my file.txt"
    assert (
        EXCHANGE.output_url("uid-1", "dir/my file #1?.txt")
        == f"{URL}/output/uid-1/dir/my%20file%20%231%3F.txt"
    )
    assert EXCHANGE.output_url("uid-1", "ü.txt") == f"{URL}/output/uid-1/%C3%BC.txt"
    assert EXCHANGE.log_path("uid-1") == ROOT / "logs/uid-1.log"


@pytest.mark.parametrize("relpath", ["", "/etc/passwd", "../x", "a/../../x", "a\x00b"])
def test_output_paths_stay_inside_the_job(relpath: str) -> None:
    with pytest.raises(ValueError, match="not a relative path"):
        EXCHANGE.output_path("uid-1", relpath)


@pytest.mark.parametrize("key", ["", "..", "a/b", "-x", "a b", "x" * 300])
def test_job_keys_are_single_safe_components(key: str) -> None:
    with pytest.raises(ValueError, match="not a job key"):
        EXCHANGE.log_path(key)


@pytest.mark.parametrize(
    ("root", "url"),
    [
        (Path("relative"), URL),
        (ROOT, "ftp://host/files"),
        (ROOT, "http:///files"),
        (ROOT, "http://host/files?x=1"),
    ],
)
def test_a_misconfigured_exchange_is_refused(root: Path, url: str) -> None:
    with pytest.raises(ValueError):
        Exchange(root=root, url=url)


ODD_NAMES = ["back\\slash", "it's \"quoted\"", "$(touch pwned)", "`id`", "a;b", " spaced ",
             "new\nline", "%41 per%cent", "?#&=+", "-dash", "\x01\x7f", "ünï ✓"]


@pytest.mark.parametrize("name", ODD_NAMES)
def test_every_name_posix_allows_is_an_input_and_an_output_unchanged(name: str) -> None:
    source = EXCHANGE.source(f"{URL}/input/job/{quote(name, safe='')}")
    assert source == LocalSource(ROOT / "input" / "job" / name)
    assert EXCHANGE.source(f"file://{quote(str(ROOT / 'input' / name))}") == LocalSource(
        ROOT / "input" / name)
    assert EXCHANGE.output_path("uid-1", f"dir/{name}") == ROOT / "output/uid-1/dir" / name
    url = EXCHANGE.output_url("uid-1", f"dir/{name}")
    assert EXCHANGE.source(url) == LocalSource(ROOT / "output/uid-1/dir" / name)
