"""Staging in and out over real SSH (OpenSSH sshd) and locally, with a real HTTP server;
its progress written to a job on a real API server."""

from __future__ import annotations

import asyncio
import functools
import hashlib
import http.server
import json
import os
import re
import shlex
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote, urlsplit

import pytest
from lightkube import AsyncClient
from lightkube.models.meta_v1 import ObjectMeta

from cerise.devenv.controlplane import ControlPlane
from cerise.devenv.sshd import SshEndpoint
from cerise.kube.jobs import WorkflowJob
from cerise.model import cwl
from cerise.model.cwl import Origin
from cerise.model.exchange import Exchange
from cerise.model.webfence import Fence, WebInputs
from cerise.operator.progress import INTERVAL, ProgressWriter
from cerise.remote import staging
from cerise.remote.jobscript import JobFiles
from cerise.remote.protocol import Progress, Remote
from cerise.remote.ssh_remote import SshRemote
from cerise.remote.staging import InputRejected, OutputRejected
from cerise.remote.staging.hashes import HashMemo
from tests.integration.remote_fixtures import make_job_dir, ssh_target
from tests.integration.web import running

pytestmark = pytest.mark.integration

URL = "http://localhost:29593/files"
LOOPBACK = WebInputs(Fence().widened(["127.0.0.1"], "the test"))
"""The test web server's address allowed through the fence."""
HOSTILE = ["my data.txt", "it's \"quoted\".txt", "$(touch pwned).txt", "a;b&&c|d", "..x", "-rf"]


@pytest.fixture
def exchange(tmp_path: Path) -> Exchange:
    (tmp_path / "exchange" / "input" / "job").mkdir(parents=True)
    return Exchange(root=tmp_path / "exchange", url=URL)


@pytest.fixture(scope="module")
def web(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """A real HTTP server on 127.0.0.1 serving a directory: its base URL and the directory.
    ``/redirect/<percent-encoded URL>`` redirects there."""
    directory = tmp_path_factory.mktemp("web")

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path.startswith("/redirect/"):
                self.send_response(302)
                self.send_header("Location", unquote(self.path.removeprefix("/redirect/")))
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            super().do_GET()

        def log_message(self, format: str, *args: Any) -> None:
            return None

    handler = functools.partial(Quiet, directory=str(directory))
    with running(http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)) as url:
        yield url, directory


@pytest.fixture
async def files(remote: Remote) -> AsyncIterator[JobFiles]:
    """A new job directory on the remote side, removed afterwards."""
    base = (await remote.run("mktemp -d")).stdout.strip()
    job = JobFiles(f"{base}/jobs/{uuid.uuid4()}")
    await make_job_dir(remote, job)
    yield job
    await remote.run(f"rm -rf {shlex.quote(base)}")


def put(exchange: Exchange, relpath: str, data: bytes) -> str:
    """Write a file into the exchange's input area; its URL."""
    path = exchange.root / "input" / "job" / relpath
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return f"{URL}/input/job/{quote(relpath)}"


STEP = """\
cwlVersion: v1.2
class: CommandLineTool
baseCommand: wc
inputs: {extra: File?}
stdout: output.txt
outputs: {output: stdout}
"""
"""The installed step the workflows run (its one input is optional)."""


def parse(inputs: dict[str, Any]) -> cwl.Workflow:
    document = {
        "cwlVersion": "v1.2", "class": "Workflow", "inputs": inputs, "outputs": {},
        "steps": {"wc": {"run": "cerise/test/wc.cwl", "in": {}, "out": ["output"]}},
    }
    return cwl.parse_workflow(json.dumps(document), installed_steps={"cerise/test/wc.cwl": STEP})


def a_file(location: str, **more: Any) -> dict[str, Any]:
    return {"class": "File", "location": location, **more}


def remote_path(location: str) -> str:
    return unquote(urlsplit(location).path)


async def stat_mode(remote: Remote, path: str) -> str:
    return (await remote.run(f"stat -c %a {shlex.quote(path)}")).stdout.strip()


async def test_every_kind_of_input_arrives_where_the_rewritten_input_says(
    remote: Remote, files: JobFiles, exchange: Exchange, web: tuple[str, Path]
) -> None:
    web_url, web_dir = web
    (web_dir / "remote data.txt").write_bytes(b"from the web")
    big = os.urandom(20 << 20)  # several pipelined chunks
    inputs = {
        "bam": "File", "many": "File[]", "maybe": "File?", "dir": "Directory", "big": "File",
        "empty": "File",
        "table": {"type": "File", "default": a_file("defaults/table.csv")},
    }
    put(exchange, "defaults/table.csv", b"a,b\n")
    put(exchange, "dir/top.txt", b"top")
    put(exchange, "dir/sub dir/deep.txt", b"deep")
    (exchange.root / "input/job/dir/empty").mkdir()
    values = {
        "bam": a_file(put(exchange, "reads.bam", b"BAM"), secondaryFiles=[
            a_file(put(exchange, "reads.bam.bai", b"BAI"),
                   secondaryFiles=[a_file(put(exchange, "reads.md5", b"MD5"))])]),
        "many": [a_file(put(exchange, "one.txt", b"1")),
                 a_file(f"{web_url}/{quote('remote data.txt')}")],
        "dir": {"class": "Directory", "location": f"{URL}/input/job/dir",
                "listing": [a_file(f"{URL}/input/job/dir/top.txt")]},
        "big": a_file(put(exchange, "big.bin", big)),
        "empty": a_file(put(exchange, "empty", b"")),
    }
    workflow = parse(inputs)
    plan = staging.plan(cwl.check_inputs(workflow, values), exchange, files,
                        workflow_url=f"{URL}/input/job/workflow.cwl")

    report = await staging.stage_in(remote, files, plan.transfers, exchange, web_inputs=LOOPBACK)

    moved = plan.apply(values, Origin.INPUT_OBJECT)
    expected = {
        ("bam",): b"BAM", ("bam", "secondaryFiles", 0): b"BAI",
        ("bam", "secondaryFiles", 0, "secondaryFiles", 0): b"MD5",
        ("many", 0): b"1", ("many", 1): b"from the web", ("big",): big, ("empty",): b"",
    }
    for pointer, data in expected.items():
        value: Any = moved
        for part in pointer:
            value = value[part]
        path = remote_path(value["location"])
        assert path.startswith(files.work + "/")
        assert await remote.read(path, limit=len(big) + 1) == data, pointer
        assert await stat_mode(remote, path) == "600"
    assert moved["many"][1]["basename"] == "remote_data.txt"
    directory = remote_path(moved["dir"]["location"])
    assert await remote.read(f"{directory}/sub dir/deep.txt") == b"deep"
    assert remote_path(moved["dir"]["listing"][0]["location"]) == f"{directory}/top.txt"
    assert await stat_mode(remote, f"{directory}/empty") == "700"
    assert await stat_mode(remote, f"{directory}/sub dir") == "700"
    default = plan.apply(workflow.document, Origin.WORKFLOW)["inputs"]["table"]["default"]
    assert await remote.read(remote_path(default["location"])) == b"a,b\n"
    assert default["basename"] == "table.csv"
    assert report.files_sent == 10 and report.files_kept == 0
    assert report.bytes_sent == len(big) + len(b"BAMBAIMD51from the weba,b\ntopdeep")


async def test_hostile_names_arrive_intact_and_run_nothing(
    remote: Remote, files: JobFiles, exchange: Exchange
) -> None:
    values = {"many": [a_file(put(exchange, name, name.encode())) for name in HOSTILE]}
    plan = staging.plan(cwl.check_inputs(parse({"many": "File[]"}), values), exchange, files)

    await staging.stage_in(remote, files, plan.transfers, exchange)

    moved = plan.apply(values, Origin.INPUT_OBJECT)
    for name, value in zip(HOSTILE, moved["many"], strict=True):
        assert re.fullmatch(r"[\w.+,:@-]+", value["basename"]), "runners refuse the rest"
        assert await remote.read(remote_path(value["location"])) == name.encode()
    listing = await remote.run(f"ls -A {files.work}")
    assert all(line[:3].rstrip("_").isdigit() for line in listing.stdout.split())
    pwned = await remote.run(f"find {files.job_dir} ~ -maxdepth 3 -name pwned 2>/dev/null")
    assert pwned.stdout == ""


async def test_a_second_stage_in_sends_nothing_and_checksums_not_sizes_decide(
    remote: Remote, files: JobFiles, exchange: Exchange
) -> None:
    values = {"many": [a_file(put(exchange, f"f{i}.txt", f"content {i}".encode()))
                       for i in range(5)]}
    plan = staging.plan(cwl.check_inputs(parse({"many": "File[]"}), values), exchange, files)
    first = await staging.stage_in(remote, files, plan.transfers, exchange)

    again = await staging.stage_in(remote, files, plan.transfers, exchange)
    put(exchange, "f3.txt", b"CONTENT 3")  # same size, other content
    await remote.run(f"truncate -s 2 {files.work}/02_f1.txt")  # an interrupted upload
    third = await staging.stage_in(remote, files, plan.transfers, exchange)

    assert (first.files_sent, first.files_kept) == (5, 0)
    assert again == staging.StageInReport(files_sent=0, bytes_sent=0, files_kept=5)
    assert (third.files_sent, third.files_kept, third.bytes_sent) == (2, 3, 18)
    assert await remote.read(f"{files.work}/04_f3.txt") == b"CONTENT 3"
    assert await remote.read(f"{files.work}/02_f1.txt") == b"content 1"


async def test_inputs_the_user_got_wrong_are_rejected_with_a_reason(
    remote: Remote, files: JobFiles, exchange: Exchange, web: tuple[str, Path], tmp_path: Path
) -> None:
    web_url, _ = web
    secret = tmp_path / "secret.txt"
    secret.write_text("secret")
    (exchange.root / "input/job/link.txt").symlink_to(secret)
    workflow = parse({"f": "File"})

    async def rejection(location: str) -> str:
        references = cwl.check_inputs(workflow, {"f": a_file(location)})
        with pytest.raises(InputRejected) as info:
            plan = staging.plan(references, exchange, files)
            await staging.stage_in(remote, files, plan.transfers, exchange, web_inputs=LOOPBACK)
        return str(info.value)

    assert "outside the file exchange" in await rejection(f"file://{secret}")
    assert "does not exist in the file exchange" in await rejection(f"{URL}/input/job/nope.txt")
    assert "through a symbolic link" in await rejection(f"{URL}/input/job/link.txt")
    assert "HTTP 404" in await rejection(f"{web_url}/missing.txt")
    assert "contains '..'" in await rejection(f"{URL}/input/job/../../x")
    assert "is a directory" in await rejection(f"{URL}/input/job")


async def write_remote(remote: Remote, files: JobFiles) -> None:
    """A finished run's work directory (with hostile names) and its output object."""
    await remote.run(f"""cd {files.work} || exit 1
printf 'out' > 'my out.txt'; printf 'i' > 'my out.txt.idx'
mkdir -p 'res dir/sub' 'res dir/empty'; printf 'a' > 'res dir/a.txt'
printf 'bb' > 'res dir/sub/$(b);.txt'; printf '1' > one; printf '22' > two; : > empty
ln -s '../my out.txt' 'res dir/alias'; ln -s nowhere 'res dir/dangling'""")
    work = files.work
    outputs = {
        "text": {"class": "File", "location": f"file://{quote(work)}/my%20out.txt",
                 "path": f"{work}/my out.txt", "basename": "my out.txt", "size": 3,
                 "checksum": "sha1$x",
                 "secondaryFiles": [{"class": "File", "location": f"file://{work}/my%20out.txt.idx"}]},
        "array": [{"class": "File", "location": f"file://{work}/one"},
                  {"class": "File", "location": f"file://{work}/two"},
                  {"class": "File", "location": f"file://{work}/never-made"},
                  {"class": "File", "location": f"file://{work}/empty"}],
        "record": {"n": 3, "f": {"class": "File", "path": f"{work}/one"}},
        "dir": {"class": "Directory", "location": f"file://{work}/res%20dir",
                "listing": [{"class": "File", "location": f"file://{work}/res%20dir/a.txt"}]},
        "missing": {"class": "File", "location": f"file://{work}/absent.txt"},
        "words": ["x", "y"],
    }
    await remote.write(files.stdout, json.dumps(outputs).encode())


async def test_outputs_are_published_in_the_exchange_also_after_a_partial_run(
    remote: Remote, files: JobFiles, exchange: Exchange
) -> None:
    await write_remote(remote, files)

    published = await staging.stage_out(remote, files, exchange, "uid-1")

    out = f"{URL}/output/uid-1"
    assert published == {
        "text": {"class": "File", "location": f"{out}/my%20out.txt", "basename": "my out.txt",
                 "size": 3, "checksum": "sha1$x",
                 "secondaryFiles": [{"class": "File", "location": f"{out}/my%20out.txt.idx"}]},
        "array": [{"class": "File", "location": f"{out}/one"},
                  {"class": "File", "location": f"{out}/two"}, None,
                  {"class": "File", "location": f"{out}/empty"}],
        "record": {"n": 3, "f": {"class": "File", "location": f"{out}/one"}},
        "dir": {"class": "Directory", "location": f"{out}/res%20dir",
                "listing": [{"class": "File", "location": f"{out}/res%20dir/a.txt"}]},
        "missing": None,
        "words": ["x", "y"],
    }
    root = exchange.output_dir("uid-1")
    assert (root / "my out.txt").read_bytes() == b"out"
    assert (root / "my out.txt.idx").read_bytes() == b"i"
    assert (root / "res dir/sub/$(b);.txt").read_bytes() == b"bb"
    assert (root / "res dir/alias").read_bytes() == b"out"
    assert (root / "res dir/empty").is_dir()
    assert (root / "empty").read_bytes() == b""
    assert sorted(p.name for p in root.iterdir()) == ["empty", "my out.txt", "my out.txt.idx",
                                                      "one", "res dir", "two"]


async def test_stage_out_again_gives_the_same_result_without_copying(
    remote: Remote, files: JobFiles, exchange: Exchange
) -> None:
    await write_remote(remote, files)
    first = await staging.stage_out(remote, files, exchange, "uid-2")
    published = exchange.output_path("uid-2", "my out.txt")
    os.utime(published, (0, 0))
    (exchange.output_dir("uid-2") / "one").unlink()  # as if the operator died mid-way

    again = await staging.stage_out(remote, files, exchange, "uid-2")

    assert again == first
    assert published.stat().st_mtime == 0
    assert (exchange.output_dir("uid-2") / "one").read_bytes() == b"1"


async def test_large_outputs_round_trip(
    remote: Remote, files: JobFiles, exchange: Exchange
) -> None:
    data = os.urandom(20 << 20)
    url = put(exchange, "big.bin", data)
    plan = staging.plan(cwl.check_inputs(parse({"f": "File"}), {"f": a_file(url)}),
                        exchange, files)
    await staging.stage_in(remote, files, plan.transfers, exchange)
    location = plan.locations(Origin.INPUT_OBJECT)[("f",)]
    await remote.write(files.stdout, json.dumps({"o": a_file(location)}).encode())

    published = await staging.stage_out(remote, files, exchange, "uid-3")

    assert published == {"o": a_file(f"{URL}/output/uid-3/01_big.bin")}
    copied = exchange.output_path("uid-3", "01_big.bin").read_bytes()
    assert hashlib.sha256(copied).digest() == hashlib.sha256(data).digest()


async def test_outputs_leading_out_of_the_job_are_refused(
    remote: Remote, files: JobFiles, exchange: Exchange
) -> None:
    await remote.run(f"cd {files.work} && ln -s /etc/passwd leak && mkdir d && "
                     "ln -s ../../../ d/up")
    cases = {
        f"file://{files.work}/leak": "symbolic link to '/etc/passwd'",
        f"file://{files.job_dir}/input.json": "outside the job's work directory",
        f"file://{files.work}/d/up/x": "is not inside the job's work directory",
    }
    for location, reason in cases.items():
        await remote.write(files.stdout, json.dumps({"o": a_file(location)}).encode())
        with pytest.raises(OutputRejected, match=reason):
            await staging.stage_out(remote, files, exchange, "uid-4")
    await remote.write(files.stdout, json.dumps(
        {"o": {"class": "Directory", "location": f"file://{files.work}/d"}}).encode())
    with pytest.raises(OutputRejected, match="d/up is a symbolic link"):
        await staging.stage_out(remote, files, exchange, "uid-4")
    assert not any(exchange.output_dir("uid-4").rglob("*"))


async def test_a_run_that_wrote_no_output_publishes_nothing(
    remote: Remote, files: JobFiles, exchange: Exchange
) -> None:
    assert await staging.stage_out(remote, files, exchange, "uid-5") == {}
    await remote.write(files.stdout, b"Traceback (most recent call last):")
    with pytest.raises(OutputRejected, match="not valid JSON"):
        await staging.stage_out(remote, files, exchange, "uid-5")


# --- the web fence -----------------------------------------------------------------------


async def test_web_inputs_off_the_public_internet_are_refused_naming_the_rule(
    remote: Remote, files: JobFiles, exchange: Exchange, web: tuple[str, Path]
) -> None:
    web_url, web_dir = web
    (web_dir / "data.txt").write_bytes(b"served")
    port = urlsplit(web_url).port
    workflow = parse({"f": "File"})

    async def rejection(location: str, web_inputs: WebInputs | None = None) -> str:
        plan = staging.plan(cwl.check_inputs(workflow, {"f": a_file(location)}), exchange, files)
        with pytest.raises(InputRejected) as info:
            await staging.stage_in(remote, files, plan.transfers, exchange,
                                   web_inputs=web_inputs)
        return str(info.value)

    allow = "; allow it with spec.webInputs.allow of the ComputeResource or the operator's " \
            "CERISE_WEB_ALLOW"
    assert await rejection("http://10.0.0.5/x") == (
        f"File http://10.0.0.5/x: 10.0.0.5 is in a private range (10.0.0.0/8){allow}")
    cases = {
        f"{web_url}/data.txt": "127.0.0.1 is in the loopback range (127.0.0.0/8)",
        f"http://[::1]:{port}/data.txt": "::1 is in the loopback range (::1/128)",
        f"http://2130706433:{port}/data.txt":
            "2130706433 resolves to 127.0.0.1, which is in the loopback range",
        f"http://0x7f.1:{port}/data.txt": "0x7f.1 resolves to 127.0.0.1, which is in the loopback",
        f"http://localhost:{port}/data.txt": "localhost resolves to",
        "http://169.254.10.10/latest/meta-data/": "is in the link-local range (169.254.0.0/16)",
        "http://100.64.0.1/x": "the shared address space of carrier-grade NAT (100.64.0.0/10)",
        "http://[fd00::1]/x": "fd00::1 is in a unique local (private) range (fc00::/7)",
        "http://192.168.1.1/x": "192.168.1.1 is in a private range (192.168.0.0/16)",
    }
    for location, reason in cases.items():
        message = await rejection(location)
        assert reason in message and message.endswith(allow), (location, message)
    metadata = await rejection("http://169.254.169.254/latest/meta-data/")
    assert metadata.endswith("is in the cloud metadata endpoint (169.254.169.254/32); "
                             "no allow-list opens it"), metadata

    redirected = await rejection(
        f"{web_url}/redirect/{quote('http://10.255.255.1/secret', safe='')}", LOOPBACK)
    assert redirected == (
        f"File {web_url}/redirect/http%3A%2F%2F10.255.255.1%2Fsecret (redirected to "
        f"http://10.255.255.1/secret): 10.255.255.1 is in a private range (10.0.0.0/8){allow}")
    to_file = await rejection(f"{web_url}/redirect/{quote('file:///etc/passwd', safe='')}",
                              LOOPBACK)
    assert "(redirected to file:/etc/passwd): only http(s) URLs" in to_file
    capped = WebInputs(LOOPBACK.fence, max_bytes=5)
    assert await rejection(f"{web_url}/data.txt", capped) == (
        f"File {web_url}/data.txt is larger than 5 bytes (the compute resource's "
        "spec.webInputs.maxBytes)")


async def test_web_inputs_from_allowed_hosts_arrive(
    remote: Remote, files: JobFiles, exchange: Exchange, web: tuple[str, Path]
) -> None:
    web_url, web_dir = web
    (web_dir / "allowed.txt").write_bytes(b"allowed")
    port = urlsplit(web_url).port
    values = {"many": [a_file(f"http://localhost:{port}/allowed.txt"),
                       a_file(f"http://localhost:{port}/redirect/%2Fallowed.txt")]}
    plan = staging.plan(cwl.check_inputs(parse({"many": "File[]"}), values), exchange, files)
    by_name = WebInputs(Fence().widened(["localhost"], "the test"))  # not its address

    await staging.stage_in(remote, files, plan.transfers, exchange, web_inputs=by_name)

    for value in plan.apply(values, Origin.INPUT_OBJECT)["many"]:
        assert await remote.read(remote_path(value["location"])) == b"allowed"


# --- the input cache ---------------------------------------------------------------------


@pytest.fixture
async def base(remote: Remote) -> AsyncIterator[str]:
    """A new base directory on the remote side (for jobs and the cache), removed afterwards."""
    made = (await remote.run("mktemp -d")).stdout.strip()
    yield made
    await remote.run(f"rm -rf {shlex.quote(made)}")


class CountingSsh(SshRemote):
    """The real SSH remote, counting the bytes that its uploads send."""

    sent = 0

    async def upload(self, local: Path | bytes, remote: str, *, mode: int = 0o600,
                     progress: Progress | None = None) -> int:
        size = await super().upload(local, remote, mode=mode, progress=progress)
        self.sent += size
        return size


async def stage(remote: Remote, exchange: Exchange, job: JobFiles, url: str,
                **options: Any) -> tuple[staging.StageInReport, str]:
    """Stage one File input into `job`; the report and where the file is."""
    plan = staging.plan(cwl.check_inputs(parse({"f": "File"}), {"f": a_file(url)}),
                        exchange, job)
    report = await staging.stage_in(remote, job, plan.transfers, exchange, **options)
    return report, remote_path(plan.locations(Origin.INPUT_OBJECT)[("f",)])


async def test_an_input_of_twenty_jobs_is_sent_once(
    sshd: SshEndpoint, exchange: Exchange
) -> None:
    data = os.urandom(100 << 20)
    url = put(exchange, "shared.bin", data)
    remote = CountingSsh(ssh_target(sshd))
    base = (await remote.run("mktemp -d")).stdout.strip()
    cache = staging.InputCache(base, max_bytes=1 << 30)
    try:
        staged = await asyncio.gather(*(
            stage(remote, exchange, JobFiles(f"{base}/jobs/job-{i}"), url, cache=cache)
            for i in range(20)))  # at once: the first sends it, the others wait and link

        digest = hashlib.sha256(data).hexdigest()
        assert remote.sent == len(data)
        assert sum(report.bytes_sent for report, _ in staged) == len(data)
        assert sum(report.files_cached for report, _ in staged) == 19
        entry = f"{base}/cache/{digest}"
        links = await remote.run(f"stat -c '%h %a' {entry}; sha256sum < {entry}")
        assert links.stdout.split() == ["21", "400", digest, "-"]  # the cache and every job
        inodes = await remote.run(f"stat -c %i {entry} " + " ".join(p for _, p in staged))
        assert len(set(inodes.stdout.split())) == 1  # one file, linked into every job
        assert cache.status_fields() == {
            "limitBytes": 1 << 30, "hits": 19, "misses": 1, "bytes": len(data), "files": 1,
            "pinnedBytes": len(data), "hitRatio": 0.95}

        again, _ = await stage(remote, exchange, JobFiles(f"{base}/jobs/job-later"), url,
                               cache=cache)
        assert (again.files_cached, again.bytes_sent, remote.sent) == (1, 0, len(data))
    finally:
        await remote.run(f"rm -rf {shlex.quote(base)}")
        await remote.close()


async def test_a_file_changed_after_it_was_hashed_is_never_cached(
    remote: Remote, base: str, exchange: Exchange
) -> None:
    before, after = os.urandom(2 << 20), os.urandom(2 << 20)  # the same size
    url = put(exchange, "changing.bin", before)
    local = exchange.root / "input" / "job" / "changing.bin"
    cache = staging.InputCache(base, max_bytes=1 << 30)

    def change(done: int, total: int) -> None:  # told first once hashed and checked
        if local.read_bytes() == before:
            local.write_bytes(after)
            status = local.stat()  # (timestamps are coarse: a change has a later mtime)
            os.utime(local, ns=(status.st_atime_ns, status.st_mtime_ns + 10**9))

    with pytest.raises(OSError, match="changed while it was sent"):
        await stage(remote, exchange, JobFiles(f"{base}/jobs/first"), url, cache=cache,
                    progress=change, memo=HashMemo())
    assert (await remote.run(f"ls -A {shlex.quote(cache.directory)}")).stdout == ""

    report, path = await stage(remote, exchange, JobFiles(f"{base}/jobs/again"), url,
                               cache=cache, memo=HashMemo())
    assert report.files_sent == 1
    assert await remote.read(path, limit=3 << 20) == after
    entries = (await remote.run(f"ls -A {shlex.quote(cache.directory)}")).stdout.split()
    assert entries == [hashlib.sha256(after).hexdigest()]


async def test_eviction_keeps_what_jobs_link_to_and_removes_the_least_recently_used(
    remote: Remote, base: str, exchange: Exchange
) -> None:
    mib = 1 << 20
    content = {name: os.urandom(2 * mib) for name in "abcd"}
    urls = {name: put(exchange, f"{name}.bin", data) for name, data in content.items()}
    digest = {name: hashlib.sha256(data).hexdigest() for name, data in content.items()}
    cache = staging.InputCache(base, max_bytes=3 * mib)

    async def cached() -> set[str]:
        listing = await remote.run(f"ls {shlex.quote(cache.directory)}")
        return {name for name, value in digest.items() if value in listing.stdout.split()}

    waiting, _ = await stage(remote, exchange, JobFiles(f"{base}/jobs/waiting"), urls["a"],
                             cache=cache)
    await stage(remote, exchange, JobFiles(f"{base}/jobs/deleted"), urls["b"], cache=cache)
    await remote.run(f"rm -rf {base}/jobs/deleted")
    await stage(remote, exchange, JobFiles(f"{base}/jobs/running"), urls["c"], cache=cache)

    # a and c are linked from jobs; b, which no job needs now, went to make room
    assert await cached() == {"a", "c"}
    assert cache.counters.evicted == 1
    assert await remote.read(f"{base}/jobs/waiting/work/01_a.bin", limit=3 * mib) == content["a"]

    again, _ = await stage(remote, exchange, JobFiles(f"{base}/jobs/later"), urls["b"],
                           cache=cache)
    assert again.bytes_sent == 2 * mib  # sent anew: it had been evicted
    assert await cached() == {"a", "b", "c"}  # over the limit, as jobs hold all three
    assert cache.status_fields()["pinnedBytes"] == 6 * mib

    await remote.run(f"rm -rf {base}/jobs/waiting {base}/jobs/running")
    await stage(remote, exchange, JobFiles(f"{base}/jobs/last"), urls["d"], cache=cache)
    assert await cached() == {"b", "d"}  # a and c were used least recently
    assert waiting.files_sent == 1


# --- progress ----------------------------------------------------------------------------


async def test_progress_moves_during_a_large_staging_both_ways(
    ssh: SshRemote, exchange: Exchange
) -> None:
    data = os.urandom(64 << 20)
    base = (await ssh.run("mktemp -d")).stdout.strip()
    files = JobFiles(f"{base}/jobs/job")
    small = put(exchange, "small.txt", b"small")
    values = {"many": [a_file(put(exchange, "big.bin", data)), a_file(small)]}
    plan = staging.plan(cwl.check_inputs(parse({"many": "File[]"}), values), exchange, files)
    seen_in: list[tuple[int, int]] = []
    seen_out: list[tuple[int, int]] = []
    try:
        await staging.stage_in(ssh, files, plan.transfers, exchange,
                               progress=lambda done, total: seen_in.append((done, total)))
        moved = plan.apply(values, Origin.INPUT_OBJECT)
        await ssh.write(files.stdout, json.dumps({"o": moved["many"]}).encode())
        await staging.stage_out(ssh, files, exchange, "uid-progress",
                                progress=lambda done, total: seen_out.append((done, total)))
    finally:
        await ssh.run(f"rm -rf {shlex.quote(base)}")

    total = len(data) + len(b"small")
    for seen in (seen_in, seen_out):
        assert seen[0] == (0, total) and seen[-1] == (total, total)
        done = [value for value, _ in seen]
        assert done == sorted(done)
        assert len({value for value in done if 0 < value < total}) >= 4, seen


async def test_progress_reaches_the_jobs_status_throttled_and_kubectl_shows_it(
    ssh: SshRemote, exchange: Exchange, kube: AsyncClient, namespace: str,
    control_plane: ControlPlane,
) -> None:
    await kube.create(WorkflowJob(metadata=ObjectMeta(name="staged", namespace=namespace),
                                  spec={"workflow": "x.cwl", "computeResource": "none"}))
    data = os.urandom(64 << 20)
    base = (await ssh.run("mktemp -d")).stdout.strip()
    files = JobFiles(f"{base}/jobs/job")
    plan = staging.plan(cwl.check_inputs(parse({"f": "File"}), {
        "f": a_file(put(exchange, "big.bin", data))}), exchange, files)
    writes: list[dict[str, Any]] = []
    loop = asyncio.get_running_loop()
    started = loop.time()
    try:
        async with ProgressWriter(kube, namespace=namespace, name="staged", direction="in",
                                  written=lambda job: writes.append(job["status"])) as writer:
            await staging.stage_in(ssh, files, plan.transfers, exchange, progress=writer)
    finally:
        await ssh.run(f"rm -rf {shlex.quote(base)}")
    elapsed = loop.time() - started

    assert writes[-1]["progress"] == {"in": {"done": len(data), "total": len(data)}}
    assert writes[-1]["progressText"] == "in 100% of 67.1 MB"
    assert 1 <= len(writes) <= elapsed / INTERVAL + 1  # throttled ones, then the last
    shown = control_plane.kubectl("get", "wfj", "staged", "-n", namespace).stdout
    assert "STAGED" in shown and "in 100% of 67.1 MB" in shown
