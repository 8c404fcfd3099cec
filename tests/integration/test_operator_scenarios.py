"""More of the original Cerise's scenarios, and failures of the compute resource's SSH side."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import asyncssh
import pytest

from cerise.devenv import sshd as devenv_sshd
from cerise.devenv.controlplane import ControlPlane
from cerise.devenv.operator import OperatorProcess
from cerise.devenv.sshd import Sshd, SshEndpoint
from tests.integration.api_fixtures import pause_after
from tests.integration.operator_fixtures import (
    EXCHANGE_URL,
    Resource,
    apply,
    install_example,
    remove,
    wait_for_job,
)
from tests.integration.remote_fixtures import kill_sessions, ssh_remote
from tests.integration.test_operator_jobs import (
    FINAL,
    WC,
    published,
    submit,
    upload,
    workflow,
)
from tests.integration.web import serving

pytestmark = pytest.mark.integration


def upload_many(exchange_dir: Path, files: dict[str, bytes]) -> str:
    """Upload files into one new input folder; the folder's URL."""
    folder = f"t-{uuid.uuid4().hex[:8]}"
    for name, content in files.items():
        path = exchange_dir / "input" / folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
    return f"{EXCHANGE_URL}/input/{folder}"


async def test_secondary_files_are_staged_beside_their_file(
    control_plane: ControlPlane, operator: OperatorProcess, resource: Resource,
    exchange_dir: Path,
) -> None:
    folder = upload_many(exchange_dir, {"data.txt": b"data\n", "data.txt.idx": b"index\n"})
    text = workflow(
        {"cat": {"run": "cerise/test/cat_with_index.cwl", "in": {"file": "file"},
                 "out": ["output"]}},
        {"file": {"type": "File", "secondaryFiles": [".idx"]}},
        {"both": {"type": "File", "outputSource": "cat/output"}})
    submit(control_plane, resource, text, {"file": {
        "class": "File", "location": f"{folder}/data.txt",
        "secondaryFiles": [{"class": "File", "location": f"{folder}/data.txt.idx"}]}})
    job = await wait_for_job(control_plane, resource.namespace, "job", FINAL)
    assert job["status"]["phase"] == "Success", job["status"]
    assert published(exchange_dir, job["status"]["output"]["both"]["location"]) == (
        b"data\nindex\n")


async def test_file_array(
    control_plane: ControlPlane, operator: OperatorProcess, resource: Resource,
    exchange_dir: Path,
) -> None:
    folder = upload_many(exchange_dir, {"one.txt": b"1\n", "two.txt": b"1\n2\n"})
    text = workflow(
        {"count": {"run": "cerise/test/count_files.cwl", "in": {"files": "files"},
                   "out": ["counts"]}},
        {"files": "File[]"}, {"counts": {"type": "File", "outputSource": "count/counts"}})
    files = [{"class": "File", "location": f"{folder}/{n}"} for n in ("one.txt", "two.txt")]
    submit(control_plane, resource, text, {"files": files})
    job = await wait_for_job(control_plane, resource.namespace, "job", FINAL)
    assert job["status"]["phase"] == "Success", job["status"]
    counts = published(exchange_dir, job["status"]["output"]["counts"]["location"]).decode()
    assert counts.split()[-2:] == ["3", "total"]
    assert "one.txt" in counts and "two.txt" in counts


async def test_directory_in_and_out(
    control_plane: ControlPlane, operator: OperatorProcess, resource: Resource,
    exchange_dir: Path,
) -> None:
    folder = upload_many(exchange_dir, {"dir/a.txt": b"A\n", "dir/b.txt": b"B\n"})
    text = workflow(
        {"list": {"run": "cerise/test/list_dir.cwl", "in": {"dir": "dir"},
                  "out": ["listing", "results"]}},
        {"dir": "Directory"},
        {"listing": {"type": "File", "outputSource": "list/listing"},
         "results": {"type": "Directory", "outputSource": "list/results"}})
    submit(control_plane, resource, text,
           {"dir": {"class": "Directory", "location": f"{folder}/dir"}})
    job = await wait_for_job(control_plane, resource.namespace, "job", FINAL)
    assert job["status"]["phase"] == "Success", job["status"]
    output = job["status"]["output"]
    assert published(exchange_dir, output["listing"]["location"]) == b"a.txt\nb.txt\n"
    results = output["results"]
    assert results["class"] == "Directory"
    assert results["location"].startswith(f"{EXCHANGE_URL}/output/")
    listed = {entry["basename"]: published(exchange_dir, entry["location"])
              for entry in results["listing"]}
    assert listed == {"a.txt": b"A\n", "b.txt": b"B\n"}


async def test_partially_failing_workflow_keeps_what_was_made(
    control_plane: ControlPlane, operator: OperatorProcess, resource: Resource,
    exchange_dir: Path,
) -> None:
    text = workflow(
        {"host": {"run": "cerise/test/hostname.cwl", "in": {}, "out": ["output"]},
         "fail": {"run": "cerise/test/fail.cwl", "in": {}, "out": ["never"]}},
        {}, {"host": {"type": "File", "outputSource": "host/output"},
             "never": {"type": "File?", "outputSource": "fail/never"}})
    submit(control_plane, resource, text)
    job = await wait_for_job(control_plane, resource.namespace, "job", FINAL)
    status = job["status"]
    assert status["phase"] == "PermanentFailure", status
    assert status["message"].startswith("the workflow failed: step fail failed: ")
    hostname = (await resource.remote.run("hostname")).stdout.encode()
    if status["output"].get("host") is not None:
        assert published(exchange_dir, status["output"]["host"]["location"]) == hostname
    assert status["output"].get("never") is None


async def test_workflow_url_that_does_not_exist(
    control_plane: ControlPlane, operator: OperatorProcess, resource: Resource,
) -> None:
    submit(control_plane, resource, f"{EXCHANGE_URL}/input/nowhere/workflow.cwl")
    job = await wait_for_job(control_plane, resource.namespace, "job", FINAL)
    assert job["status"]["phase"] == "PermanentFailure"
    assert "does not exist" in job["status"]["message"]


async def test_workflow_by_url_in_the_exchange(
    control_plane: ControlPlane, operator: OperatorProcess, resource: Resource,
    exchange_dir: Path,
) -> None:
    folder = upload_many(exchange_dir, {"workflow.cwl": WC.encode(), "in.txt": b"x y\n"})
    submit(control_plane, resource, f"{folder}/workflow.cwl",
           {"file": {"class": "File", "location": f"{folder}/in.txt"}})
    job = await wait_for_job(control_plane, resource.namespace, "job", FINAL)
    assert job["status"]["phase"] == "Success", job["status"]


async def test_file_url_outside_the_exchange_is_refused(
    control_plane: ControlPlane, operator: OperatorProcess, resource: Resource,
) -> None:
    submit(control_plane, resource, WC, {"file": {"class": "File", "location": "file:///etc/shadow"}})
    job = await wait_for_job(control_plane, resource.namespace, "job", FINAL)
    assert job["status"]["phase"] == "PermanentFailure"
    assert "outside the file exchange" in job["status"]["message"]


async def test_sessions_killed_right_after_submit(
    control_plane: ControlPlane, operator: OperatorProcess, resource: Resource,
    exchange_dir: Path, sshd: SshEndpoint,
) -> None:
    submit(control_plane, resource, WC, {"file": upload(exchange_dir, "w.txt", b"a b\n")})
    await wait_for_job(control_plane, resource.namespace, "job",
                       {"Waiting", "Running", "Finished", *FINAL})
    await asyncio.to_thread(kill_sessions, sshd)
    job = await wait_for_job(control_plane, resource.namespace, "job", FINAL)
    assert job["status"]["phase"] == "Success", job["status"]


async def test_operator_killed_during_staging(
    control_plane: ControlPlane, operator: OperatorProcess, resource: Resource,
    exchange_dir: Path,
) -> None:
    big = upload(exchange_dir, "big.txt", b"word " * 40_000_000)
    submit(control_plane, resource, WC, {"file": big})
    await wait_for_job(control_plane, resource.namespace, "job", {"StagingIn", *FINAL})
    operator.kill()
    await asyncio.to_thread(operator.start)
    job = await wait_for_job(control_plane, resource.namespace, "job", FINAL, timeout=120)
    assert job["status"]["phase"] == "Success", job["status"]
    counts = published(exchange_dir, job["status"]["output"]["counts"]["location"]).split()
    assert counts[1] == b"40000000"
    recorded = await resource.remote.run(f"cat '{job['status']['workDir']}/remote_id'")
    assert recorded.stdout.strip() == job["status"]["remoteJobId"]


async def test_operator_killed_right_after_submission(
    control_plane: ControlPlane, operator: OperatorProcess, resource: Resource,
    exchange_dir: Path,
) -> None:
    submit(control_plane, resource, WC, {"file": upload(exchange_dir, "w.txt", b"a b c\n")})
    await wait_for_job(control_plane, resource.namespace, "job", {"Waiting", "Running", *FINAL})
    operator.kill()
    await asyncio.to_thread(operator.start)
    job = await wait_for_job(control_plane, resource.namespace, "job", FINAL)
    assert job["status"]["phase"] == "Success", job["status"]
    recorded = await resource.remote.run(f"cat '{job['status']['workDir']}/remote_id'")
    assert recorded.stdout.splitlines() == [job["status"]["remoteJobId"]]


# --- the SSH side failing -----------------------------------------------------------------

@pytest.fixture
def own_sshd() -> Iterator[Sshd]:
    """An sshd of this test's own, which the test may take down and bring back."""
    server = devenv_sshd.start()
    yield server
    server.stop()


@pytest.fixture
async def flaky(
    control_plane: ControlPlane, namespace: str, own_sshd: Sshd,
) -> AsyncIterator[Resource]:
    """An ssh ComputeResource on `own_sshd`, with the example project installed."""
    endpoint = own_sshd.endpoint
    remote = ssh_remote(endpoint)
    suffix = uuid.uuid4().hex[:8]
    base = f"/home/{endpoint.username}/.cerise-{suffix}"
    apply(control_plane, namespace, *resource_objects(endpoint, suffix, endpoint.host_key))
    await install_example(control_plane, namespace, "flaky")
    yield Resource(namespace=namespace, name="flaky", base=base, remote=remote)
    await remove(remote, base)


def resource_objects(endpoint: SshEndpoint, suffix: str, host_key: str) -> list[dict[str, Any]]:
    return [
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "login"},
         "stringData": {"username": endpoint.username,
                        "privateKey": endpoint.client_key.read_text()}},
        {"apiVersion": "cerise.dev/v1alpha1", "kind": "ComputeResource",
         "metadata": {"name": "flaky"},
         "spec": {"credentialsSecret": "login", "hostKeys": [host_key], "refreshSeconds": 0.2,
                  "files": {"protocol": "sftp", "host": endpoint.host, "port": endpoint.port,
                            "path": "/home/$CERISE_USERNAME/.cerise-" + suffix},
                  "jobs": {"protocol": "ssh", "host": endpoint.host, "port": endpoint.port,
                           "scheduler": "none"}}},
    ]


async def stays(plane: ControlPlane, namespace: str, phase: str, seconds: float) -> None:
    """Watch the job for `seconds`; fail if it leaves `phase`."""
    loop = asyncio.get_running_loop()
    until = loop.time() + seconds
    while loop.time() < until:
        job = await wait_for_job(plane, namespace, "job", {phase, *FINAL, "Running", "Waiting",
                                                           "Submitted", "StagingIn", "Finished",
                                                           "StagingOut"})
        assert job["status"]["phase"] == phase, job["status"]
        await asyncio.sleep(0.2)


def resource_status(plane: ControlPlane, namespace: str, name: str) -> dict[str, Any]:
    out = plane.kubectl("get", "cres", name, "-n", namespace, "-o", "json").stdout
    status: dict[str, Any] = json.loads(out).get("status", {})
    return status


async def test_sshd_down_before_submit_then_back(
    control_plane: ControlPlane, operator: OperatorProcess, flaky: Resource, own_sshd: Sshd,
    exchange_dir: Path,
) -> None:
    own_sshd.go_down()
    submit(control_plane, flaky, WC, {"file": upload(exchange_dir, "w.txt", b"a\n")})
    await stays(control_plane, flaky.namespace, "Submitted", 3)
    status = resource_status(control_plane, flaky.namespace, "flaky")
    assert status.get("connected") is False
    assert status.get("lastError")
    own_sshd.come_back()
    job = await wait_for_job(control_plane, flaky.namespace, "job", FINAL, timeout=120)
    assert job["status"]["phase"] == "Success", job["status"]


async def test_sshd_down_while_running_then_back(
    control_plane: ControlPlane, operator: OperatorProcess, flaky: Resource, own_sshd: Sshd,
    exchange_dir: Path,
) -> None:
    text = workflow(
        {"sleep": {"run": "cerise/test/sleep.cwl", "in": {"delay": {"default": 4}}, "out": []},
         "wc": {"run": "cerise/test/wc.cwl", "in": {"file": "file"}, "out": ["output"]}},
        {"file": "File"}, {"counts": {"type": "File", "outputSource": "wc/output"}})
    submit(control_plane, flaky, text, {"file": upload(exchange_dir, "w.txt", b"a\n")})
    await wait_for_job(control_plane, flaky.namespace, "job", {"Running"})
    own_sshd.go_down()
    await stays(control_plane, flaky.namespace, "Running", 3)
    own_sshd.come_back()
    job = await wait_for_job(control_plane, flaky.namespace, "job", FINAL, timeout=120)
    assert job["status"]["phase"] == "Success", job["status"]


async def test_wrong_host_key_is_refused(
    control_plane: ControlPlane, operator: OperatorProcess, namespace: str, sshd: SshEndpoint,
) -> None:
    impostor = asyncssh.generate_private_key("ssh-ed25519").export_public_key().decode().strip()
    apply(control_plane, namespace, *resource_objects(sshd, "none", impostor))
    resource = Resource(namespace=namespace, name="flaky", base="", remote=ssh_remote(sshd))
    submit(control_plane, resource, WC, {})
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 30
    status: dict[str, Any] = {}
    while (started := loop.time()) < deadline:
        status = resource_status(control_plane, namespace, "flaky")
        if "host key" in status.get("lastError", ""):
            break
        await asyncio.sleep(pause_after(loop.time() - started))
    assert status.get("connected") is False
    assert "does not match the pinned key" in status["lastError"]
    job = await wait_for_job(control_plane, namespace, "job", {"Submitted", *FINAL})
    assert job["status"]["phase"] == "Submitted"
    await resource.remote.close()


@pytest.fixture
def flaky_web() -> Iterator[str]:
    """An HTTP server on 127.0.0.1 that fails the first request for a file, then serves it."""
    requests: list[str] = []

    def answer(path: str) -> tuple[int, bytes]:
        requests.append(path)
        return (503, b"") if len(requests) == 1 else (200, b"served on the second try\n")

    with serving(answer) as url:
        yield url


async def test_a_failed_download_is_retried(
    control_plane: ControlPlane, operator: OperatorProcess, resource: Resource,
    exchange_dir: Path, flaky_web: str,
) -> None:
    submit(control_plane, resource, WC,
           {"file": {"class": "File", "location": f"{flaky_web}/data.txt"}})
    job = await wait_for_job(control_plane, resource.namespace, "job", FINAL)
    assert job["status"]["phase"] == "Success", job["status"]
    counts = published(exchange_dir, job["status"]["output"]["counts"]["location"]).split()
    assert counts[:3] == [b"1", b"5", b"25"]


async def test_a_workflow_is_fetched_from_the_web_within_its_size_limit(
    control_plane: ControlPlane, operator: OperatorProcess, resource: Resource,
    exchange_dir: Path,
) -> None:
    documents = {"/wc.cwl": WC.encode(), "/huge.cwl": b"#" * (2 << 20)}
    with serving(lambda path: (200, documents[path]) if path in documents else (404, b"")) as url:
        submit(control_plane, resource, f"{url}/wc.cwl",
               {"file": upload(exchange_dir, "words.txt", b"a b\n")}, name="fetched")
        submit(control_plane, resource, f"{url}/huge.cwl", name="huge")
        submit(control_plane, resource, f"{url}/missing.cwl", name="missing")
        fetched = await wait_for_job(control_plane, resource.namespace, "fetched", FINAL)
        huge = await wait_for_job(control_plane, resource.namespace, "huge", FINAL)
        missing = await wait_for_job(control_plane, resource.namespace, "missing", FINAL)
    assert fetched["status"]["phase"] == "Success", fetched["status"]
    assert huge["status"]["phase"] == "PermanentFailure"
    assert "larger than 1024 KiB" in huge["status"]["message"]
    assert missing["status"]["phase"] == "PermanentFailure"
    assert "HTTP 404" in missing["status"]["message"]


async def test_a_web_input_inside_the_cluster_is_refused_with_the_rule(
    control_plane: ControlPlane, operator: OperatorProcess, resource: Resource,
) -> None:
    submit(control_plane, resource, WC, {"file": {
        "class": "File", "location": "http://169.254.10.10/latest/meta-data/iam"}})
    job = await wait_for_job(control_plane, resource.namespace, "job", FINAL)
    assert job["status"]["phase"] == "PermanentFailure"
    assert "169.254.10.10 is in" in job["status"]["message"]
    assert "webInputs.allow" in job["status"]["message"]


async def test_staging_progress_is_in_the_status_and_the_job_list(
    control_plane: ControlPlane, operator: OperatorProcess, resource: Resource,
    exchange_dir: Path,
) -> None:
    size = 5 << 20
    file = upload(exchange_dir, "big.txt", b"word " * (size // 5))
    submit(control_plane, resource, WC, {"file": file})
    job = await wait_for_job(control_plane, resource.namespace, "job", FINAL)
    assert job["status"]["phase"] == "Success", job["status"]
    assert job["status"]["progress"]["in"] == {"done": size, "total": size}
    out = job["status"]["progress"]["out"]
    assert out["done"] == out["total"] > 0
    listed = control_plane.kubectl("get", "wfj", "job", "-n", resource.namespace)
    assert job["status"]["progressText"] in listed.stdout
