"""The WebDAV file exchange router, against a real directory."""

from __future__ import annotations

import asyncio
import hashlib
import os
import tracemalloc
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast
from urllib.parse import quote, unquote

import pytest
from fastapi import FastAPI, Request
from fastapi.testclient import TestClient
from lightkube import AsyncClient
from starlette.types import Message

from cerise.apiserver import tenancy
from cerise.apiserver.app import install_error_handlers
from cerise.apiserver.routers import files
from cerise.apiserver.settings import Settings
from cerise.apiserver.tenancy import Services, Tenant
from cerise.model.exchange import Exchange, Layout

UID = "0f5c3a2e-1111-2222-3333-444455556666"
DAV = "{DAV:}"
CAP, QUOTA = 3000, 5000
"""The per-file cap and the input/ quota of the test exchange."""
ODD_NAMES = ["back\\slash", "it's \"quoted\"", "$(touch pwned)", "`id`", "a;b", " spaced ",
             "new\nline", "tab\there", "%41 per%cent", "?#&=+", "-dash", "\x01\x7f", "ünï ✓"]
"""Names POSIX allows (anything but '/' and NUL) that the exchange must keep unchanged."""


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """An exchange with a published output and a log, and no input/ yet."""
    root = tmp_path / "exchange"
    (root / "output" / UID).mkdir(parents=True)
    (root / "output" / UID / "result.txt").write_text("42\n")
    (root / "logs").mkdir()
    (root / "logs" / f"{UID}.log").write_text("Submitted job\n")
    (root / "secret").write_text("not served")
    return root


@pytest.fixture
def limits(request: pytest.FixtureRequest) -> tuple[int, int]:
    """The per-file cap and the quota: `CAP` and `QUOTA` unless a test asks for others."""
    found: tuple[int, int] = getattr(request, "param", (CAP, QUOTA))
    return found


@pytest.fixture
def app(root: Path, limits: tuple[int, int]) -> FastAPI:
    app = FastAPI()
    install_error_handlers(app)
    app.include_router(files.router)
    app.include_router(files.router, prefix="/ns/{namespace}")
    exchange = Exchange(root=root, url="http://testserver/files")
    settings = Settings(Layout(root, exchange.url), max_upload_bytes=limits[0],
                        quota_bytes=limits[1])
    services = Services(settings, cast(AsyncClient, None), cast(Any, None), cast(Any, None),
                        None)

    def tenant(request: Request) -> Tenant:
        namespace = request.path_params.get("namespace")
        prefix = f"/ns/{namespace}" if namespace else ""
        return Tenant(namespace or "default", exchange, f"http://testserver{prefix}", prefix,
                      kube=cast(AsyncClient, None), services=services)

    app.dependency_overrides[tenancy.reader] = tenant
    app.dependency_overrides[tenancy.writer] = tenant
    return app


@pytest.fixture
def client(app: FastAPI) -> Iterator[TestClient]:
    with TestClient(app) as client:
        yield client


def hrefs(body: bytes) -> list[str]:
    """The hrefs of a PROPFIND answer, parsed as cerise-client does (whatever the status)."""
    tree = ET.fromstring(body)  # noqa: S314 (our own answer)
    return [href.text or "" for href in tree.iter(f"{DAV}href")]


def props(body: bytes) -> dict[str, dict[str, str | None]]:
    """Each href's properties; a collection's resourcetype is 'collection'."""
    found = {}
    for item in ET.fromstring(body).iter(f"{DAV}response"):  # noqa: S314
        prop = item.find(f"{DAV}propstat/{DAV}prop")
        assert prop is not None
        values = {child.tag.removeprefix(DAV): child.text for child in prop}
        kind = prop.find(f"{DAV}resourcetype/{DAV}collection")
        values["resourcetype"] = "collection" if kind is not None else ""
        found[item.findtext(f"{DAV}href") or ""] = values
    return found


async def asgi(app: FastAPI, method: str, raw_path: bytes,
               body: Iterator[bytes] | None = None) -> tuple[int, bytes]:
    """Call `app` with exactly `raw_path` (unnormalised) and a streamed body."""
    sent: list[Message] = []
    done = False

    async def receive() -> Message:
        nonlocal done
        if done:  # the client stays connected until the answer is sent
            await asyncio.Event().wait()
        chunk = None if body is None else next(body, None)
        done = chunk is None
        return {"type": "http.request", "body": chunk or b"", "more_body": chunk is not None}

    async def send(message: Message) -> None:
        sent.append(message)

    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method,
        "scheme": "http", "path": unquote(raw_path.decode()), "raw_path": raw_path,
        "root_path": "", "query_string": b"", "headers": [(b"host", b"testserver")],
        "client": ("127.0.0.1", 1), "server": ("testserver", 80),
    }
    await app(scope, receive, send)
    return sent[0]["status"], b"".join(m.get("body", b"") for m in sent[1:])


def test_cerise_client_sequence(client: TestClient, root: Path) -> None:
    assert client.request("MKCOL", "/files/input/job1/").status_code == 201
    assert client.request("MKCOL", "/files/input/job1/").status_code == 405  # JobAlreadyExists
    assert client.put("/files/input/job1/workflow.cwl", content=b"cwlVersion: v1.2\n"
                      ).status_code == 201
    assert client.put("/files/input/job1/data.txt", content=b"some words").status_code == 201
    assert client.get("/files/input/job1/data.txt").content == b"some words"

    listing = client.request("PROPFIND", "/files/input/job1")
    assert listing.status_code == 207
    assert listing.headers["content-type"].startswith("application/xml")
    assert sorted(hrefs(listing.content)) == ["/files/input/job1/", "/files/input/job1/data.txt",
                                      "/files/input/job1/workflow.cwl"]
    for href in sorted(hrefs(listing.content), key=len, reverse=True):
        assert client.delete(href).status_code == 204

    gone = client.request("PROPFIND", "/files/input/job1")
    assert gone.status_code == 404
    assert hrefs(gone.content) == []
    assert list((root / "input").iterdir()) == []


def test_depth(client: TestClient) -> None:
    client.put("/files/input/job/sub/deep.txt", content=b"x")
    client.put("/files/input/job/top.txt", content=b"abc")

    zero = client.request("PROPFIND", "/files/input/job/", headers={"Depth": "0"})
    assert hrefs(zero.content) == ["/files/input/job/"]
    one = props(client.request("PROPFIND", "/files/input/job/", headers={"Depth": "1"}).content)
    assert sorted(one) == ["/files/input/job/", "/files/input/job/sub/",
                           "/files/input/job/top.txt"]
    assert one["/files/input/job/sub/"]["resourcetype"] == "collection"
    top = one["/files/input/job/top.txt"]
    assert top["resourcetype"] == ""
    assert top["getcontentlength"] == "3"
    assert top["displayname"] == "top.txt"
    assert (top["getlastmodified"] or "").endswith(" GMT")
    assert (top["creationdate"] or "").endswith("Z")
    assert top["getetag"] == client.get("/files/input/job/top.txt").headers["etag"]

    infinite = client.request("PROPFIND", "/files/input/job/", headers={"Depth": "infinity"})
    assert infinite.status_code == 403
    assert ET.fromstring(infinite.content).find(  # noqa: S314
        f"{DAV}propfind-finite-depth") is not None
    bad = client.request("PROPFIND", "/files/input/job/", headers={"Depth": "2"})
    assert bad.status_code == 400
    assert hrefs(bad.content) == []


def test_propfind_of_the_root_lists_only_the_served_collections(
        client: TestClient, root: Path) -> None:
    assert sorted(hrefs(client.request("PROPFIND", "/files").content)) == [
        "/files/", "/files/logs/", "/files/output/"]
    assert client.get("/files/secret").status_code == 404
    client.request("MKCOL", "/files/input/")
    assert "input/\n" in client.get("/files/").text


def test_hrefs_under_the_tenant_prefix(client: TestClient) -> None:
    client.put("/ns/team-a/files/input/j/a.txt", content=b"a")
    listing = client.request("PROPFIND", "/ns/team-a/files/input/j")
    assert sorted(hrefs(listing.content)) == ["/ns/team-a/files/input/j/",
                                      "/ns/team-a/files/input/j/a.txt"]
    for href in sorted(hrefs(listing.content), key=len, reverse=True):
        assert client.delete(href).status_code == 204


def test_spaces_and_unicode_round_trip(client: TestClient, root: Path) -> None:
    assert client.put("/files/input/my job/données é.txt", content=b"ok").status_code == 201
    assert (root / "input" / "my job" / "données é.txt").read_bytes() == b"ok"
    (href,) = [h for h in hrefs(client.request("PROPFIND", "/files/input/my job/").content)
               if not h.endswith("/")]
    assert href == "/files/input/my%20job/donn%C3%A9es%20%C3%A9.txt"
    assert client.get(href).content == b"ok"


def test_head_and_options(client: TestClient) -> None:
    client.put("/files/input/h.txt", content=b"hello")
    head = client.head("/files/input/h.txt")
    assert head.status_code == 200
    assert head.headers["content-length"] == "5"
    assert head.content == b""
    assert client.head("/files/input/missing").status_code == 404
    options = client.options("/files/input/")
    assert options.headers["dav"] == "1"
    assert "PROPFIND" in options.headers["allow"]


def test_put_overwrites_atomically(client: TestClient, root: Path) -> None:
    assert client.put("/files/input/f.txt", content=b"first").status_code == 201
    assert client.put("/files/input/f.txt", content=b"second").status_code == 204
    assert client.get("/files/input/f.txt").content == b"second"
    assert [p.name for p in (root / "input").iterdir()] == ["f.txt"]  # no temporary left


def test_collections(client: TestClient) -> None:
    assert client.request("MKCOL", "/files/input/a/b/").status_code == 409  # a/ missing
    assert client.request("MKCOL", "/files/input/a/", content=b"<x/>").status_code == 415
    assert client.request("MKCOL", "/files/input/a/").status_code == 201
    assert client.request("MKCOL", "/files/input/a/b/").status_code == 201
    assert client.put("/files/input/a", content=b"x").status_code == 405
    assert client.put("/files/input/a/f/", content=b"x").status_code == 400
    assert client.put("/files/input/a/f", content=b"x").status_code == 201
    assert client.request("MKCOL", "/files/input/a/f").status_code == 405
    assert client.put("/files/input/a/f/g", content=b"x").status_code == 409  # f is a file
    assert client.get("/files/input/a/").text == "b/\nf\n"
    assert client.delete("/files/input/a/").status_code == 204
    assert client.delete("/files/input/a/").status_code == 404


def test_operator_files_are_read_only(client: TestClient, root: Path) -> None:
    assert client.get(f"/files/output/{UID}/result.txt").text == "42\n"
    assert client.get(f"/files/logs/{UID}.log").text == "Submitted job\n"
    for method, path in [("PUT", f"/files/output/{UID}/x"), ("MKCOL", "/files/output/x/"),
                         ("DELETE", f"/files/output/{UID}/"), ("PUT", "/files/logs/x.log"),
                         ("DELETE", "/files/"), ("DELETE", "/files/input/")]:
        answer = client.request(method, path)
        assert answer.status_code == 403, (method, path)
        assert answer.json()["detail"]
    assert (root / "output" / UID / "result.txt").exists()


def test_outputs_answer_404_once_their_job_is_deleted(client: TestClient, root: Path) -> None:
    url = f"/files/output/{UID}/result.txt"
    assert client.get(url).status_code == 200
    (root / "output" / UID / "result.txt").unlink()
    (root / "output" / UID).rmdir()
    assert client.get(url).status_code == 404
    assert client.get(url).json() == {"detail": f"'output/{UID}/result.txt' does not exist"}


def test_an_output_deleted_while_its_get_is_answered_is_404_not_a_cut_off_body(
    client: TestClient, root: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The job is deleted between the GET's lookup and its answer (the race a client polling
    for the output's removal hits): a clear 404, not headers and then a closed connection."""
    output = root / "output" / UID / "result.txt"
    look_up = files._resources

    def then_deleted(*args: Any, **kwargs: Any) -> Any:
        found = look_up(*args, **kwargs)
        output.unlink()
        return found

    monkeypatch.setattr(files, "_resources", then_deleted)
    answer = client.get(f"/files/output/{UID}/result.txt")
    assert answer.status_code == 404
    assert answer.json() == {"detail": f"'output/{UID}/result.txt' does not exist"}


@pytest.mark.parametrize("replace", [False, True])
def test_a_file_deleted_or_replaced_once_opened_is_sent_whole_as_opened(
    client: TestClient, root: Path, monkeypatch: pytest.MonkeyPatch, replace: bool,
) -> None:
    """Deleted or replaced after the answer opened it, a file is still sent whole, with the
    length and ETag of what is sent; the descriptor is closed afterwards."""
    output = root / "output" / UID / "result.txt"
    output.write_bytes(b"x" * (3 * files.CHUNK + 5))
    opened: list[int] = []
    open_file = files._open

    def then_changed(path: Path) -> tuple[int, os.stat_result] | None:
        found = open_file(path)
        assert found is not None
        opened.append(found[0])
        output.unlink()
        if replace:
            output.write_bytes(b"new\n")
        return found

    monkeypatch.setattr(files, "_open", then_changed)
    answer = client.get(f"/files/output/{UID}/result.txt")
    assert answer.status_code == 200
    assert answer.content == b"x" * (3 * files.CHUNK + 5)
    assert answer.headers["content-length"] == str(3 * files.CHUNK + 5)
    assert answer.headers["etag"].endswith(f"-{3 * files.CHUNK + 5:x}\"")
    with pytest.raises(OSError):
        os.fstat(opened[0])
    monkeypatch.setattr(files, "_open", open_file)
    if replace:
        assert client.get(f"/files/output/{UID}/result.txt").content == b"new\n"
    else:
        assert client.get(f"/files/output/{UID}/result.txt").status_code == 404


def test_a_range_of_a_file_is_sent(client: TestClient, root: Path) -> None:
    (root / "output" / UID / "result.txt").write_bytes(b"0123456789")
    answer = client.get(f"/files/output/{UID}/result.txt", headers={"Range": "bytes=2-5"})
    assert (answer.status_code, answer.content) == (206, b"2345")
    assert answer.headers["content-range"] == "bytes 2-5/10"


@pytest.mark.parametrize("path", [
    "/files/input/%2e%2e/secret", "/files/input/%2E%2E/%2e%2e/x", "/files/input/a%2Fb",
    "/files/input/a%2fb", "/files/input/a%00b", "/files/input/%2e/a",
])
def test_traversal_is_refused(client: TestClient, path: str) -> None:
    for method in ("GET", "PUT", "DELETE", "MKCOL"):
        assert client.request(method, path).status_code == 400, method
    propfind = client.request("PROPFIND", path)
    assert propfind.status_code == 400
    assert hrefs(propfind.content) == []


async def test_literal_dot_dot_is_refused(app: FastAPI, root: Path) -> None:
    for method in ("GET", "PUT", "PROPFIND"):
        status, _ = await asgi(app, method, b"/files/input/../secret")
        assert status == 400
    assert (root / "secret").read_text() == "not served"


def test_symlinks_out_are_refused(client: TestClient, root: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside.txt"
    outside.write_text("private")
    (tmp_path / "outdir").mkdir()
    (root / "input").mkdir()
    (root / "input" / "link").symlink_to(outside)
    (root / "input" / "dirlink").symlink_to(tmp_path / "outdir")
    (root / "input" / "tooutput").symlink_to(root / "output")

    assert client.get("/files/input/link").status_code == 403
    assert client.put("/files/input/link", content=b"overwritten").status_code == 403
    assert client.put("/files/input/dirlink/new", content=b"x").status_code == 403
    assert client.request("MKCOL", "/files/input/dirlink/new/").status_code == 403
    assert client.put(f"/files/input/tooutput/{UID}/result.txt", content=b"x").status_code == 403
    assert client.get(f"/files/input/tooutput/{UID}/result.txt").text == "42\n"  # inside
    assert sorted(hrefs(client.request("PROPFIND", "/files/input/").content)) == [
        "/files/input/", "/files/input/tooutput/"]
    assert client.delete("/files/input/link").status_code == 204  # the link, not its target
    assert outside.read_text() == "private"
    assert list((tmp_path / "outdir").iterdir()) == []


@pytest.mark.parametrize("limits", [(1 << 30, 1 << 30)], indirect=True)
async def test_a_large_upload_streams_to_disk(app: FastAPI, root: Path) -> None:
    chunk, count = bytes(range(256)) * 256, 800  # 64 KiB * 800 = 50 MiB
    expected = hashlib.sha256(chunk * count).hexdigest()
    tracemalloc.start()
    try:
        status, _ = await asgi(app, "PUT", b"/files/input/big/data.bin",
                               (chunk for _ in range(count)))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert status == 201
    stored = root / "input" / "big" / "data.bin"
    assert stored.stat().st_size == len(chunk) * count
    assert hashlib.sha256(stored.read_bytes()).hexdigest() == expected
    assert peak < 8 << 20


async def test_every_name_posix_allows_round_trips(app: FastAPI, root: Path) -> None:
    # Raw paths, as a server gets them (TestClient would decode '%25' twice).
    for number, name in enumerate(ODD_NAMES):
        folder = f"/files/input/odd%20{quote(name, safe='')}/".encode()
        path = folder + quote(name, safe="").encode()
        content = f"{number}".encode()
        assert (await asgi(app, "PUT", path, iter([content])))[0] == 201, name
        assert (root / "input" / f"odd {name}" / name).read_bytes() == content
        assert await asgi(app, "GET", path) == (200, content)
        status, listing = await asgi(app, "PROPFIND", folder)
        assert status == 207
        (href,) = [unquote(h) for h in hrefs(listing) if not h.endswith("/")]
        assert href == f"/files/input/odd {name}/{name}"
        status, text = await asgi(app, "GET", folder)
        assert [unquote(line) for line in text.decode().splitlines()] == [name]
        assert (await asgi(app, "DELETE", path))[0] == 204


def test_a_file_over_the_cap_is_refused_and_leaves_nothing(app: FastAPI, client: TestClient,
                                                           root: Path) -> None:
    big = client.put("/files/input/cap/big.bin", content=b"x" * (CAP + 1))
    assert big.status_code == 413
    assert "at most 2.9" in big.json()["detail"]
    assert client.put("/files/input/cap/fits.bin", content=b"x" * CAP).status_code == 201
    assert sorted(p.name for p in (root / "input" / "cap").iterdir()) == ["fits.bin"]


async def test_a_streamed_file_over_the_cap_leaves_nothing(app: FastAPI, root: Path) -> None:
    status, body = await asgi(app, "PUT", b"/files/input/cap/streamed.bin",
                              (b"x" * 1000 for _ in range(4)))
    assert status == 413
    assert b"nothing was stored" in body
    assert list((root / "input" / "cap").iterdir()) == []


async def test_the_quota_answers_507_and_leaves_nothing(app: FastAPI, client: TestClient,
                                                        root: Path) -> None:
    assert client.put("/files/input/q/a.bin", content=b"a" * 2500).status_code == 201
    full = client.put("/files/input/q/b.bin", content=b"b" * 2501)  # Content-Length known
    assert full.status_code == 507
    assert "quota of 4.88281 KiB" in full.json()["detail"]
    status, _ = await asgi(app, "PUT", b"/files/input/q/c.bin", (b"c" * 1000 for _ in range(3)))
    assert status == 507
    assert sorted(p.name for p in (root / "input" / "q").iterdir()) == ["a.bin"]
    assert client.delete("/files/input/q/a.bin").status_code == 204
    assert client.put("/files/input/q/b.bin", content=b"b" * 2501).status_code == 201
