"""Specialisations end to end: the operator process installs projects from ConfigMaps,
directories and archives on real compute resources, with versions, failures, clashes,
reinstalls under running jobs, and jobs that wait for an install."""

from __future__ import annotations

import asyncio
import gzip
import io
import json
import tarfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from cerise.devenv.controlplane import ControlPlane
from cerise.devenv.operator import OperatorProcess
from cerise.remote.local import LocalRemote
from tests.integration.api_fixtures import pause_after
from tests.integration.operator_fixtures import Resource, apply, wait_for_job
from tests.integration.test_operator_jobs import (
    FINAL,
    events,
    published,
    submit,
    upload,
    workflow,
)
from tests.integration.web import serving

pytestmark = pytest.mark.integration

HOSTNAME = workflow({"hostname": {"run": "example/hostname.cwl", "in": {}, "out": ["output"]}},
                    {}, {"output": {"type": "File", "outputSource": "hostname/output"}})
"""The tutorial's test_workflow2."""
CUSTOM = workflow(
    {"custom": {"run": "example/custom_program.cwl", "in": {"in_text": "input_file"},
                "out": ["out_text"]}},
    {"input_file": "File"}, {"output": {"type": "File", "outputSource": "custom/out_text"}})
"""The tutorial's test_workflow3."""
SHOW = workflow({"show": {"run": "p/show.cwl", "in": {}, "out": ["output"]}},
                {}, {"output": {"type": "File", "outputSource": "show/output"}})
"""Prints the installed project's files/message.txt (after files/show.sh waits `DELAY` s)."""
DELAY = "0"
ALLOWED_PATHS = Path(__file__).resolve().parents[2] / "specialisations"
"""The directory `path` sources must lie in, as the test operator is set up."""


def project_files(message: str, *, delay: str = DELAY, install: str = "") -> dict[str, str]:
    """A project `p`: a step running a script of its own that prints its message file."""
    files = {
        "steps/p/show.cwl": (
            "cwlVersion: v1.2\nclass: CommandLineTool\n"
            "baseCommand: [bash, $CERISE_PROJECT_FILES/show.sh]\ninputs: []\n"
            "stdout: output.txt\noutputs: {output: {type: stdout}}\n"),
        "files/show.sh": f'sleep {delay}\ncat "$(dirname "$0")/message.txt"\n',
        "files/message.txt": message,
    }
    if install:
        files["install.sh"] = install
    return files


def config_map(plane: ControlPlane, namespace: str, name: str, files: dict[str, str]) -> None:
    apply(plane, namespace, {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name},
                             "data": {path.replace("/", "__"): text
                                      for path, text in files.items()}})


def specialisation(plane: ControlPlane, namespace: str, name: str, resources: list[str],
                   *projects: dict[str, Any]) -> None:
    apply(plane, namespace, {
        "apiVersion": "cerise.dev/v1alpha1", "kind": "Specialisation",
        "metadata": {"name": name},
        "spec": {"computeResources": resources, "projects": list(projects)}})


def p(version: str, config: str = "p-files", **more: Any) -> dict[str, Any]:
    return {"name": "p", "version": version, "source": {"configMap": config}, **more}


def local_resource(plane: ControlPlane, namespace: str, base: Path,
                   name: str = "local") -> Resource:
    apply(plane, namespace, {
        "apiVersion": "cerise.dev/v1alpha1", "kind": "ComputeResource",
        "metadata": {"name": name},
        "spec": {"refreshSeconds": 0.2, "files": {"protocol": "local", "path": str(base)},
                 "jobs": {"protocol": "local", "scheduler": "none"}}})
    return Resource(namespace=namespace, name=name, base=str(base), remote=LocalRemote())


def get(plane: ControlPlane, namespace: str, kind: str, name: str) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(
        plane.kubectl("get", kind, name, "-n", namespace, "-o", "json").stdout)
    return body


def project_status(body: dict[str, Any], resource: str, project: str) -> dict[str, Any]:
    for entry in body.get("status", {}).get("resources", []):
        if entry["computeResource"] == resource:
            for state in entry.get("projects", []):
                if state["name"] == project:
                    found: dict[str, Any] = state
                    return found
    return {}


async def until(plane: ControlPlane, namespace: str, name: str,
                check: Callable[[dict[str, Any]], bool], timeout: float = 60.0
                ) -> dict[str, Any]:
    """Poll a Specialisation until `check` holds for it (`pause_after` apart); return it."""
    deadline = time.monotonic() + timeout
    body: dict[str, Any] = {}
    while (started := time.monotonic()) < deadline:
        body = await asyncio.to_thread(get, plane, namespace, "specialisation", name)
        if body.get("status", {}).get("observedGeneration") == body["metadata"]["generation"] \
                and check(body):
            return body
        await asyncio.sleep(pause_after(time.monotonic() - started))
    raise AssertionError(f"Specialisation {name} did not get there: {body.get('status')}")


def state_is(resource: str, project: str, state: str, version: str | None = None
             ) -> Callable[[dict[str, Any]], bool]:
    def check(body: dict[str, Any]) -> bool:
        found = project_status(body, resource, project)
        return found.get("state") == state and (version is None or found.get("version") == version)
    return check


async def link_of(resource: Resource, project: str) -> str:
    return (await resource.remote.run(f"readlink '{resource.base}/api/{project}'")).stdout


async def message_of(resource: Resource) -> str:
    """The message file of the installed project `p`."""
    return (await resource.remote.run(f"cat '{resource.base}/api/p/files/message.txt'")).stdout


async def run_show(plane: ControlPlane, resource: Resource, exchange_dir: Path,
                   name: str) -> str:
    submit(plane, resource, SHOW, name=name)
    job = await wait_for_job(plane, resource.namespace, name, FINAL)
    assert job["status"]["phase"] == "Success", job["status"]
    return published(exchange_dir, job["status"]["output"]["output"]["location"]).decode()


# --- the tutorial -------------------------------------------------------------------------

async def test_the_tutorial_workflows_run_with_the_installed_project(
    control_plane: ControlPlane, operator: OperatorProcess, resource: Resource,
    exchange_dir: Path,
) -> None:
    body = get(control_plane, resource.namespace, "specialisation", "example")
    assert {p["name"]: (p["state"], p["version"]) for p in
            body["status"]["resources"][0]["projects"]} == {
        "cerise": ("Installed", "0.1.0"), "example": ("Installed", "0.1.0")}
    listed = get(control_plane, resource.namespace, "cres", resource.name)["status"]
    assert listed["installedProjects"] == [
        {"name": n, "version": "0.1.0", "specialisation": f"{resource.namespace}/example"}
        for n in ("cerise", "example")]
    assert events(control_plane, resource.namespace, "example").count("Installed") == 2

    message = upload(exchange_dir, "message.txt", b"Hello from the tutorial!\n")
    submit(control_plane, resource, CUSTOM, {"input_file": message}, name="custom")
    submit(control_plane, resource, HOSTNAME, name="hostname")
    custom = await wait_for_job(control_plane, resource.namespace, "custom", FINAL)
    assert custom["status"]["phase"] == "Success", custom["status"]
    output = published(exchange_dir, custom["status"]["output"]["output"]["location"])
    assert output == b"=== Here is a heading! ===\nHello from the tutorial!\n"
    host = await wait_for_job(control_plane, resource.namespace, "hostname", FINAL)
    assert host["status"]["phase"] == "Success", host["status"]
    hostname = (await resource.remote.run("hostname")).stdout.encode()
    assert published(exchange_dir, host["status"]["output"]["output"]["location"]) == hostname


async def test_an_unknown_project_is_named_with_the_closest_installed_ones(
    control_plane: ControlPlane, operator: OperatorProcess, resource: Resource,
) -> None:
    submit(control_plane, resource, HOSTNAME.replace("example/", "exampel/"))
    job = await wait_for_job(control_plane, resource.namespace, "job", FINAL)
    assert job["status"]["phase"] == "PermanentFailure"
    assert job["status"]["message"] == (
        f"step 'hostname' runs 'exampel/hostname.cwl', but there is no project 'exampel' on "
        f"compute resource '{resource.name}'; did you mean 'example'? "
        f"(installed: cerise, example)")


# --- versions -----------------------------------------------------------------------------

async def test_versions_are_compared_as_versions(
    control_plane: ControlPlane, operator: OperatorProcess, namespace: str, tmp_path: Path,
    exchange_dir: Path,
) -> None:
    resource = local_resource(control_plane, namespace, tmp_path / "cerise")
    for version in ("0.9.0", "0.10.0", "1.0.0-rc.1", "1.0.0"):
        config_map(control_plane, namespace, "p-files", project_files(f"version {version}"))
        specialisation(control_plane, namespace, "s", ["local"], p(version))
        await until(control_plane, namespace, "s", state_is("local", "p", "Installed", version))
        assert await message_of(resource) == f"version {version}"

    config_map(control_plane, namespace, "p-files", project_files("lower"))
    specialisation(control_plane, namespace, "s", ["local"], p("1.0.0-rc.2"))
    body = await until(control_plane, namespace, "s", state_is("local", "p", "Failed", "1.0.0"))
    refused = project_status(body, "local", "p")
    assert refused["reason"] == "DowngradeRefused"
    assert "1.0.0 is installed, which is newer than 1.0.0-rc.2" in refused["message"]
    assert "DowngradeRefused" in events(control_plane, namespace, "s")
    ready = body["status"]["conditions"][0]
    assert (ready["type"], ready["status"], ready["reason"]) == ("Ready", "False", "InstallFailed")
    assert await message_of(resource) == "version 1.0.0"

    specialisation(control_plane, namespace, "s", ["local"], p("1.0.0-rc.2",
                                                               allowDowngrade=True))
    await until(control_plane, namespace, "s", state_is("local", "p", "Installed", "1.0.0-rc.2"))
    assert await run_show(control_plane, resource, exchange_dir, "lowered") == "lower"


async def test_a_development_version_is_reinstalled_on_every_change_and_start(
    control_plane: ControlPlane, operator: OperatorProcess, namespace: str, tmp_path: Path,
) -> None:
    resource = local_resource(control_plane, namespace, tmp_path / "cerise")
    config_map(control_plane, namespace, "one", project_files("one"))
    config_map(control_plane, namespace, "two", project_files("two"))
    specialisation(control_plane, namespace, "s", ["local"], p("1.0.0", "one"))
    await until(control_plane, namespace, "s", state_is("local", "p", "Installed"))
    first = await link_of(resource, "p")
    # The same release from another source: nothing to do.
    specialisation(control_plane, namespace, "s", ["local"], p("1.0.0", "two"))
    await until(control_plane, namespace, "s", state_is("local", "p", "Installed"))
    assert await link_of(resource, "p") == first

    specialisation(control_plane, namespace, "s", ["local"], p("1.1.0.dev", "one"))
    await until(control_plane, namespace, "s", state_is("local", "p", "Installed", "1.1.0.dev"))
    dev = await link_of(resource, "p")
    specialisation(control_plane, namespace, "s", ["local"], p("1.1.0.dev", "two"))
    await until(control_plane, namespace, "s", state_is("local", "p", "Installed"))
    changed = await link_of(resource, "p")
    assert changed != dev
    assert await message_of(resource) == "two"

    await asyncio.to_thread(operator.kill)
    await asyncio.to_thread(operator.start)
    deadline = time.monotonic() + 60
    while True:
        if await link_of(resource, "p") != changed:
            break
        assert time.monotonic() < deadline, "not reinstalled after the operator started"
        await asyncio.sleep(0.1)
    await until(control_plane, namespace, "s", state_is("local", "p", "Installed", "1.1.0.dev"))


# --- failures ------------------------------------------------------------------------------

async def test_a_failing_install_script_fails_only_its_project(
    control_plane: ControlPlane, operator: OperatorProcess, namespace: str, tmp_path: Path,
    exchange_dir: Path,
) -> None:
    resource = local_resource(control_plane, namespace, tmp_path / "cerise")
    config_map(control_plane, namespace, "p-files", project_files("fine"))
    broken = project_files("never", install="echo building\necho 'no compiler' >&2\nexit 7\n")
    config_map(control_plane, namespace, "q-files", {
        path.replace("/p/", "/q/"): text for path, text in broken.items()})
    specialisation(control_plane, namespace, "s", ["local"], p("1.0.0"),
                   {"name": "q", "version": "1.0.0", "source": {"configMap": "q-files"}})
    # the two install side by side: wait for both to end
    body = await until(control_plane, namespace, "s", lambda body: state_is(
        "local", "q", "Failed")(body) and project_status(body, "local", "p").get("state") in {
            "Installed", "Failed"})
    failed = project_status(body, "local", "q")
    assert failed["reason"] == "InstallScriptFailed"
    assert failed["message"].startswith("install.sh exited with status 7")
    assert failed["log"] == "building\nno compiler\n"
    assert "version" not in failed
    assert project_status(body, "local", "p")["state"] == "Installed"
    assert body["status"]["resources"][0]["phase"] == "Failed"
    assert "InstallScriptFailed" in events(control_plane, namespace, "s")

    assert await run_show(control_plane, resource, exchange_dir, "served") == "fine"
    submit(control_plane, resource, SHOW.replace("p/show.cwl", "q/show.cwl"), name="broken")
    job = await wait_for_job(control_plane, namespace, "broken", FINAL)
    assert job["status"]["phase"] == "PermanentFailure"
    assert "project 'q' could not be installed on compute resource 'local': install.sh " \
           "exited with status 7" in job["status"]["message"]


async def test_projects_of_two_specialisations_share_a_resource_but_not_a_name(
    control_plane: ControlPlane, operator: OperatorProcess, namespace: str, tmp_path: Path,
    exchange_dir: Path,
) -> None:
    resource = local_resource(control_plane, namespace, tmp_path / "cerise")
    config_map(control_plane, namespace, "p-files", project_files("first"))
    config_map(control_plane, namespace, "r-files", {
        path.replace("/p/", "/r/"): text for path, text in project_files("other").items()})
    specialisation(control_plane, namespace, "first", ["local"], p("1.0.0"))
    await until(control_plane, namespace, "first", state_is("local", "p", "Installed"))
    config_map(control_plane, namespace, "p2-files", project_files("second"))
    specialisation(control_plane, namespace, "second", ["local"], p("2.0.0", "p2-files"),
                   {"name": "r", "version": "1.0.0", "source": {"configMap": "r-files"}})
    body = await until(control_plane, namespace, "second", state_is("local", "r", "Installed"))
    clash = project_status(body, "local", "p")
    assert (clash["state"], clash["reason"]) == ("Failed", "ProjectClash")
    assert f"belongs to Specialisation '{namespace}/first'" in clash["message"]
    assert await run_show(control_plane, resource, exchange_dir, "p") == "first"
    submit(control_plane, resource, SHOW.replace("p/show.cwl", "r/show.cwl"), name="r")
    job = await wait_for_job(control_plane, namespace, "r", FINAL)
    assert job["status"]["phase"] == "Success", job["status"]


# --- archives ------------------------------------------------------------------------------

def archive(entries: dict[str, bytes], links: dict[str, str] | None = None) -> bytes:
    data = io.BytesIO()
    with tarfile.open(fileobj=data, mode="w:gz") as tar:
        for name, content in entries.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(content), 0o755 if name.endswith(".sh") else 0o644
            tar.addfile(info, io.BytesIO(content))
        for name, target in (links or {}).items():
            info = tarfile.TarInfo(name)
            info.type, info.linkname = tarfile.SYMTYPE, target
            tar.addfile(info)
    return data.getvalue()


@pytest.fixture
def web() -> Iterator[tuple[str, dict[str, bytes]]]:
    """A real HTTP server on 127.0.0.1 serving the archives put in its dict."""
    served: dict[str, bytes] = {}
    with serving(lambda path: (200, served[path]) if path in served else (404, b"")) as url:
        yield url, served


async def test_archives_are_installed_and_hostile_ones_refused(
    control_plane: ControlPlane, operator: OperatorProcess, namespace: str, tmp_path: Path,
    exchange_dir: Path, web: tuple[str, dict[str, bytes]],
) -> None:
    url, served = web
    resource = local_resource(control_plane, namespace, tmp_path / "cerise")
    files = {f"p-1.0/{path}": text.encode() for path, text in project_files("packed").items()}
    served["/good.tar.gz"] = archive(files, {"p-1.0/files/alias.txt": "message.txt"})
    served["/evil.tar.gz"] = archive({**files, "p-1.0/../../escaped.txt": b"gotcha"})
    served["/link.tar.gz"] = archive(files, {"p-1.0/files/passwd": "../../../../etc/passwd"})
    specialisation(control_plane, namespace, "s", ["local"],
                   {"name": "p", "version": "1.0.0", "source": {"url": f"{url}/good.tar.gz"}})
    await until(control_plane, namespace, "s", state_is("local", "p", "Installed"))
    assert await run_show(control_plane, resource, exchange_dir, "packed") == "packed"
    alias = await resource.remote.run(f"cat '{resource.base}/api/p/files/alias.txt'")
    assert alias.stdout == "packed"

    for name, problem in (("evil", "leads out of the project ('..')"),
                          ("link", "links out of the project")):
        specialisation(control_plane, namespace, "s", ["local"], {
            "name": "p", "version": f"2.0.0-{name}", "source": {"url": f"{url}/{name}.tar.gz"}})
        body = await until(control_plane, namespace, "s", state_is("local", "p", "Failed"))
        refused = project_status(body, "local", "p")
        assert refused["reason"] == "InvalidProject", refused
        assert problem in refused["message"]
    escaped = await asyncio.to_thread(lambda: [*tmp_path.parent.rglob("escaped.txt"),
                                               *Path("/tmp").glob("escaped.txt")])
    assert escaped == []
    assert await run_show(control_plane, resource, exchange_dir, "kept") == "packed"


def bomb(project: dict[str, bytes], declared: int, zeros: int) -> bytes:
    """A tar.gz whose project files come first, then an entry whose header declares
    `declared` bytes, of which `zeros` bytes of zeros follow (gzip members of 64 MiB each,
    about a thousandth of that in the archive)."""
    blocks = b""
    for name, content in project.items():
        info = tarfile.TarInfo(name)
        info.size = len(content)
        blocks += info.tobuf(format=tarfile.GNU_FORMAT) + content + bytes(-len(content) % 512)
    huge = tarfile.TarInfo("p-1.0/files/zeros")
    huge.size = declared
    chunk = gzip.compress(bytes(64 << 20), compresslevel=9)
    return gzip.compress(blocks + huge.tobuf(format=tarfile.GNU_FORMAT)) + chunk * (
        zeros // (64 << 20))


async def test_an_archive_bomb_is_refused_while_it_is_read(
    control_plane: ControlPlane, operator: OperatorProcess, namespace: str, tmp_path: Path,
    web: tuple[str, dict[str, bytes]],
) -> None:
    """An entry of 1 TiB (256 MiB of it there, the archive itself 0.3 MB) is refused at its
    header, before a byte of it is unpacked or skipped, and nothing lands on the resource."""
    url, served = web
    resource = local_resource(control_plane, namespace, tmp_path / "cerise")
    files = {f"p-1.0/{path}": text.encode() for path, text in project_files("boom").items()}
    served["/bomb.tar.gz"] = await asyncio.to_thread(bomb, files, 1 << 40, 256 << 20)
    assert len(served["/bomb.tar.gz"]) < 1 << 20
    specialisation(control_plane, namespace, "s", ["local"],
                   {"name": "p", "version": "1.0.0", "source": {"url": f"{url}/bomb.tar.gz"}})
    body = await until(control_plane, namespace, "s", state_is("local", "p", "Failed"))
    refused = project_status(body, "local", "p")
    assert refused["reason"] == "InvalidProject", refused
    assert "more than 512 MiB unpacked" in refused["message"], refused["message"]
    assert (await resource.remote.run(f"ls -A '{resource.base}/api' 2>/dev/null")).stdout == ""


async def test_an_archive_that_is_not_there_is_tried_again(
    control_plane: ControlPlane, operator: OperatorProcess, namespace: str, tmp_path: Path,
    web: tuple[str, dict[str, bytes]],
) -> None:
    url, _ = web
    local_resource(control_plane, namespace, tmp_path / "cerise")
    specialisation(control_plane, namespace, "s", ["local"],
                   {"name": "p", "version": "1.0.0", "source": {"url": f"{url}/late.tar.gz"}})
    body = await until(control_plane, namespace, "s", state_is("local", "p", "Failed"))
    assert project_status(body, "local", "p")["reason"] == "SourceUnavailable"
    assert "HTTP 404; trying again in 30 s" in project_status(body, "local", "p")["message"]


# --- installs and jobs ---------------------------------------------------------------------

async def test_a_reinstall_does_not_disturb_a_running_job(
    control_plane: ControlPlane, operator: OperatorProcess, namespace: str, tmp_path: Path,
    exchange_dir: Path,
) -> None:
    resource = local_resource(control_plane, namespace, tmp_path / "cerise")
    config_map(control_plane, namespace, "one", project_files("one", delay="4"))
    config_map(control_plane, namespace, "two", project_files("two"))
    specialisation(control_plane, namespace, "s", ["local"], p("1.0.0", "one"))
    await until(control_plane, namespace, "s", state_is("local", "p", "Installed"))
    submit(control_plane, resource, SHOW, name="running")
    await step_running(control_plane, namespace, "running")
    specialisation(control_plane, namespace, "s", ["local"], p("2.0.0", "two"))
    await until(control_plane, namespace, "s", state_is("local", "p", "Installed", "2.0.0"))
    assert get(control_plane, namespace, "wfj", "running")["status"]["phase"] == "Running"
    job = await wait_for_job(control_plane, namespace, "running", FINAL)
    assert job["status"]["phase"] == "Success", job["status"]
    assert published(exchange_dir, job["status"]["output"]["output"]["location"]) == b"one"
    assert await run_show(control_plane, resource, exchange_dir, "after") == "two"


async def test_a_new_job_waits_for_the_install_of_its_project(
    control_plane: ControlPlane, operator: OperatorProcess, namespace: str, tmp_path: Path,
    exchange_dir: Path,
) -> None:
    resource = local_resource(control_plane, namespace, tmp_path / "cerise")
    flag = tmp_path / "go"
    slow = project_files("ready", install=f"until [ -e {flag} ]; do sleep 0.1; done\n")
    config_map(control_plane, namespace, "p-files", slow)
    specialisation(control_plane, namespace, "s", ["local"], p("1.0.0"))
    await until(control_plane, namespace, "s", state_is("local", "p", "Installing"))
    submit(control_plane, resource, SHOW, name="early")
    deadline = time.monotonic() + 30
    while True:
        status = get(control_plane, namespace, "wfj", "early").get("status", {})
        if "waiting" in status.get("message", ""):
            break
        assert time.monotonic() < deadline, status
        await asyncio.sleep(0.1)
    assert status["phase"] == "Submitted"
    assert status["message"] == (
        "waiting for project 'p' (installing 1.0.0) on compute resource 'local'")
    await asyncio.sleep(1)
    assert get(control_plane, namespace, "wfj", "early")["status"]["phase"] == "Submitted"
    await asyncio.to_thread(flag.touch)
    job = await wait_for_job(control_plane, namespace, "early", FINAL)
    assert job["status"]["phase"] == "Success", job["status"]
    assert published(exchange_dir, job["status"]["output"]["output"]["location"]) == b"ready"
    assert "WaitingForProject" in events(control_plane, namespace, "early")


# --- changes of sources, removals ---------------------------------------------------------

async def test_a_development_version_is_reinstalled_when_its_configmap_alone_changes(
    control_plane: ControlPlane, operator: OperatorProcess, namespace: str, tmp_path: Path,
    exchange_dir: Path,
) -> None:
    resource = local_resource(control_plane, namespace, tmp_path / "cerise")
    config_map(control_plane, namespace, "dev", project_files("before"))
    specialisation(control_plane, namespace, "s", ["local"], p("1.1.0.dev", "dev"))
    await until(control_plane, namespace, "s", state_is("local", "p", "Installed", "1.1.0.dev"))
    assert await message_of(resource) == "before"
    config_map(control_plane, namespace, "dev", project_files("after"))  # the spec stays
    deadline = time.monotonic() + 60
    while await message_of(resource) != "after":
        assert time.monotonic() < deadline, "the changed ConfigMap was not installed"
        await asyncio.sleep(0.2)
    assert "SourceChanged" in events(control_plane, namespace, "s")
    assert await run_show(control_plane, resource, exchange_dir, "changed") == "after"


async def test_a_deleted_specialisation_takes_along_the_projects_no_other_one_claims(
    control_plane: ControlPlane, operator: OperatorProcess, namespace: str, tmp_path: Path,
    exchange_dir: Path,
) -> None:
    """Its projects are removed, but not one that another Specialisation claims too, and a
    job running the removed project's step runs to its end."""
    resource = local_resource(control_plane, namespace, tmp_path / "cerise")
    config_map(control_plane, namespace, "p-files", project_files("slow", delay="4"))
    config_map(control_plane, namespace, "q-files", {
        path.replace("/p/", "/q/"): text for path, text in project_files("shared").items()})
    q = {"name": "q", "version": "1.0.0", "source": {"configMap": "q-files"}}
    specialisation(control_plane, namespace, "s", ["local"], p("1.0.0"), q)
    await until(control_plane, namespace, "s", state_is("local", "q", "Installed"))
    specialisation(control_plane, namespace, "t", ["local"], q)  # a clash: s has it
    await until(control_plane, namespace, "t", state_is("local", "q", "Failed"))
    submit(control_plane, resource, SHOW, name="running")
    await step_running(control_plane, namespace, "running")

    control_plane.kubectl("delete", "specialisation", "s", "-n", namespace)
    deadline = time.monotonic() + 60
    while await link_of(resource, "p"):
        assert time.monotonic() < deadline, "project p of the deleted Specialisation stayed"
        await asyncio.sleep(0.2)
    await until(control_plane, namespace, "t", state_is("local", "q", "Installed"))
    assert await link_of(resource, "q")
    job = await wait_for_job(control_plane, namespace, "running", FINAL)
    assert job["status"]["phase"] == "Success", job["status"]
    assert published(exchange_dir, job["status"]["output"]["output"]["location"]) == b"slow"
    submit(control_plane, resource, SHOW, name="after")
    job = await wait_for_job(control_plane, namespace, "after", FINAL)
    assert job["status"]["phase"] == "PermanentFailure"
    assert "there is no project 'p'" in job["status"]["message"]


async def test_a_path_source_outside_the_allowed_directory_is_refused(
    control_plane: ControlPlane, operator: OperatorProcess, namespace: str, tmp_path: Path,
) -> None:
    local_resource(control_plane, namespace, tmp_path / "cerise")
    outside = tmp_path / "project"
    for path, text in project_files("outside").items():
        (outside / path).parent.mkdir(parents=True, exist_ok=True)
        (outside / path).write_text(text)
    allowed = ALLOWED_PATHS  # what the test operator allows (cerise.devenv.operator)
    for source in (str(outside), f"{allowed}/../tests", "/etc"):
        specialisation(control_plane, namespace, "s", ["local"],
                       {"name": "p", "version": "1.0.0", "source": {"path": source}})
        body = await until(control_plane, namespace, "s", state_is("local", "p", "Failed"))
        refused = project_status(body, "local", "p")
        assert refused["reason"] == "InvalidProject", refused
        assert f"{source} is not inside {allowed}" in refused["message"], refused["message"]


async def step_running(plane: ControlPlane, namespace: str, name: str) -> None:
    """Wait until the job's runner has loaded its one step and started it."""
    while True:
        job = await wait_for_job(plane, namespace, name, {"Running", *FINAL})
        if [s["state"] for s in job["status"].get("steps", [])] == ["Running"]:
            return
        assert job["status"]["phase"] == "Running", job["status"]
        await asyncio.sleep(0.1)
