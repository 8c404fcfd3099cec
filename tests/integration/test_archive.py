"""The archive of finished jobs on the real stack: PostgreSQL, the operator, the apiserver,
the published cerise-client and wes-client, the CLI and the dashboard's fragments."""

from __future__ import annotations

import asyncio
import json
import os
import random
import shutil
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cerise_client
import httpx
import psycopg
import pytest

from cerise.archive.store import Archive
from cerise.devenv import specialisations
from cerise.devenv.apiserver import IDENTITY, ApiserverProcess
from cerise.devenv.controlplane import ControlPlane
from cerise.devenv.operator import OperatorProcess
from cerise.devenv.postgres import Postgres
from cerise.devenv.process import free_port
from cerise.kube.jobs import WorkflowJob
from tests.integration import http_calls
from tests.integration.api_fixtures import Api, poll_until
from tests.integration.kube_fixtures import TENANTS, admin_client, api_requests, as_dict
from tests.integration.operator_fixtures import EXCHANGE_URL, apply

pytestmark = pytest.mark.integration

WC = json.dumps({
    "cwlVersion": "v1.2", "class": "Workflow", "inputs": {"file": "File"},
    "outputs": {"output": {"type": "File", "outputSource": "wc/output"}},
    "steps": {"wc": {"run": "cerise/test/wc.cwl", "in": {"file": "file"}, "out": ["output"]}}})
NOT_CWL = "this is not a CWL workflow"
"""A workflow the operator refuses at once: its jobs end PermanentFailure without running."""
JOBS = int(os.environ.get("CERISE_TEST_ARCHIVE_JOBS", "100"))


@dataclass(frozen=True)
class Archiving:
    """A single-user apiserver for a namespace whose resource archives jobs 1 s after
    they end."""

    api: Api
    namespace: str


def resource(name: str, base: str, archive_after: str | None) -> dict[str, Any]:
    spec: dict[str, Any] = {"refreshSeconds": 0.2, "files": {"protocol": "local", "path": base},
                            "jobs": {"protocol": "local", "scheduler": "none"}}
    if archive_after is not None:
        spec["archiveAfter"] = archive_after
    return {"apiVersion": "cerise.dev/v1alpha1", "kind": "ComputeResource",
            "metadata": {"name": name}, "spec": spec}


@pytest.fixture(scope="module")
def archiving(
    control_plane: ControlPlane, single_user_api: Api, archive_db: Postgres,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Archiving]:
    """Namespace `archiving-<random>` with a `local` resource (archiveAfter 1s) and the
    example project, served in single-user mode; outputs are published under the
    session's exchange (served by `single_user_api`)."""
    namespace = f"archiving-{uuid.uuid4().hex[:6]}"
    base = tmp_path_factory.mktemp("archiving-resource") / "cerise"
    control_plane.kubectl("create", "namespace", namespace)
    apply(control_plane, namespace, resource("local", str(base), "1s"),
          specialisations.example(["local"]))
    port = free_port()
    process = ApiserverProcess(
        kubeconfig=control_plane.kubeconfig_for(IDENTITY[0]),
        exchange_dir=single_user_api.exchange_dir, exchange_url=EXCHANGE_URL, port=port,
        namespace=namespace, log=tmp_path_factory.mktemp("apiserver") / "archiving.log",
        extra_env={"CERISE_ARCHIVE_URL": archive_db.url})
    process.start()
    specialisations.wait_ready(control_plane, namespace, "example")
    try:
        yield Archiving(Api(process.url, single_user_api.exchange_dir, process), namespace)
    finally:
        process.stop()
        control_plane.kubectl("delete", "namespace", namespace, "--wait=false")


def archived_rows(db: Postgres, namespace: str) -> list[tuple[str, str, str]]:
    """(uid, name, phase) of every archived job of the namespace (none before the operator's
    first archiving has made the table)."""
    with psycopg.connect(db.url) as connection:
        try:
            return [(row[0], row[1], row[2]) for row in connection.execute(
                "SELECT uid, name, phase FROM archived_jobs WHERE namespace = %s", (namespace,))]
        except psycopg.errors.UndefinedTable:
            return []


def live_jobs(plane: ControlPlane, namespace: str) -> list[dict[str, Any]]:
    return [as_dict(job) for job in admin_client(plane).list(WorkflowJob, namespace=namespace)]


def wes_client(api: Api, *args: str) -> subprocess.CompletedProcess[str]:
    command = shutil.which("wes-client") or str(Path(sys.executable).parent / "wes-client")
    return subprocess.run([command, "--proto=http", f"--host={api.url.split('//')[1]}", *args],
                          capture_output=True, text=True, timeout=120)


def cli(api: Api, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(Path(sys.executable).parent / "cerise"), *args, "--url", api.url],
                          capture_output=True, text=True, timeout=120,
                          env={"PATH": "/usr/bin:/bin", "HOME": "/tmp"})


def test_a_finished_job_is_archived_pruned_and_still_served_by_every_door(
    archiving: Archiving, control_plane: ControlPlane, archive_db: Postgres, tmp_path: Path,
) -> None:
    api, namespace = archiving.api, archiving.namespace
    service = cerise_client.Service("http://localhost", int(api.url.rsplit(":", 1)[1]))
    source = tmp_path / "words.txt"
    source.write_text("one two three\nfour five\n")
    job = service.create_job(f"archived-{uuid.uuid4().hex[:6]}")
    job.set_workflow(WC.encode())
    job.add_input_file("file", str(source))
    job.run()
    poll_until(lambda: not job.is_running(), 60, "the job ending")

    def archived_and_pruned() -> bool:
        names = [row[1] for row in archived_rows(archive_db, namespace)]
        live = [j["metadata"]["name"] for j in live_jobs(control_plane, namespace)]
        return names == [job.id] and job.id not in live
    poll_until(archived_and_pruned, 60, "the job's archiving and pruning")
    row_uid, _, phase = archived_rows(archive_db, namespace)[0]
    assert phase == "Success"

    # the published cerise-client
    again = service.get_job_by_id(job.id)
    assert again.state == "Success"
    assert again.outputs["output"].text.split()[:3] == ["2", "5", "24"]
    assert "Final process status is success" in again.log
    assert job.id in [found.id for found in service.list_jobs()]
    # the jobs API
    listed = {found["id"]: found["state"] for found in http_calls.get(f"{api.url}/jobs").json()}
    assert listed[job.id] == "Success"
    assert http_calls.get(f"{api.url}/jobs/{job.id}").json()["state"] == "Success"
    assert "Final process status is success" in http_calls.get(f"{api.url}/jobs/{job.id}/log").text
    # WES, and the published wes-client
    wes = f"{api.url}/ga4gh/wes/v1"
    runs = {run["run_id"]: run["state"] for run in http_calls.get(f"{wes}/runs").json()["runs"]}
    assert runs[job.id] == "COMPLETE"
    run = http_calls.get(f"{wes}/runs/{job.id}").json()
    assert run["state"] == "COMPLETE" and run["outputs"]["output"]["location"]
    assert http_calls.get(f"{wes}/runs/{job.id}/status").json()["state"] == "COMPLETE"
    assert [task["name"] for task in http_calls.get(f"{wes}/runs/{job.id}/tasks").json()[
        "task_logs"]] == ["wc"]
    listed_by_client = json.loads(wes_client(api, "--list").stdout)
    assert job.id in [found["run_id"] for found in listed_by_client["runs"]]
    got = wes_client(api, f"--get={job.id}")
    assert got.returncode == 0, got.stderr
    assert json.loads(got.stdout)["state"] == "COMPLETE"
    # the CLI and the dashboard
    shown = json.loads(cli(api, "list", "--json").stdout)
    assert {"id": job.id, "state": "Success"}.items() <= next(
        found for found in shown if found["id"] == job.id).items()
    assert job.id in http_calls.get(f"{api.url}/ui/fragments/jobs").text
    assert "Success" in http_calls.get(f"{api.url}/ui/fragments/jobs/{job.id}").text

    # deleting an archived job removes its row and its files
    outputs = api.exchange_dir / "output" / row_uid
    log = api.exchange_dir / "logs" / f"{row_uid}.log"
    assert outputs.is_dir() and log.is_file()
    service.destroy_job(again)
    with pytest.raises(cerise_client.JobNotFound):
        service.get_job_by_id(job.id)
    assert archived_rows(archive_db, namespace) == []
    assert not outputs.exists() and not log.exists()
    assert http_calls.get(f"{wes}/runs/{job.id}").status_code == 404


def test_kill_9_during_archiving_loses_none_and_archives_none_twice(
    control_plane: ControlPlane, operator: OperatorProcess, archive_db: Postgres,
    namespace: str, tmp_path: Path,
) -> None:
    apply(control_plane, namespace, resource("local", str(tmp_path / "cerise"), "0"))
    jobs = {"apiVersion": "v1", "kind": "List", "items": [
        {"apiVersion": "cerise.dev/v1alpha1", "kind": "WorkflowJob",
         "metadata": {"name": f"job-{index:04d}"},
         "spec": {"computeResource": "local", "workflow": NOT_CWL}}
        for index in range(JOBS)]}
    created = control_plane.kubectl("create", "-n", namespace, "-f", "-",
                                    "-o", "jsonpath={.metadata.uid}{' '}",
                                    stdin=json.dumps(jobs))
    uids = set(created.stdout.split())
    assert len(uids) == JOBS
    def archived_at_least(count: int) -> Callable[[], bool]:
        return lambda: len(archived_rows(archive_db, namespace)) >= count
    for threshold in sorted(random.sample(range(1, JOBS), 5)):
        poll_until(archived_at_least(threshold), 120, f"{threshold} jobs archived")
        operator.kill()
        operator.start()

    def all_moved() -> bool:
        return (len(archived_rows(archive_db, namespace)) == JOBS
                and not live_jobs(control_plane, namespace))
    poll_until(all_moved, 180, "every job archived and pruned")
    rows = archived_rows(archive_db, namespace)
    assert sorted(uid for uid, _, _ in rows) == sorted(uids)
    assert len({name for _, name, _ in rows}) == JOBS
    assert {phase for _, _, phase in rows} == {"PermanentFailure"}


@pytest.fixture
def archiving_tenants(
    control_plane: ControlPlane, cluster_api: Api, operator: OperatorProcess,
) -> Iterator[dict[str, httpx.Client]]:
    """alice (team-a, whose `local` resource archives at once) and bob (team-b), with the
    session operator to archive."""
    for namespace, _ in TENANTS.values():
        apply(control_plane, namespace, resource("local", f"/tmp/cerise-{namespace}",
                                                 "0" if namespace == "team-a" else None))
    clients = {user: httpx.Client(base_url=f"{cluster_api.url}/ns/{namespace}", headers={
        "Authorization": f"Bearer {control_plane.identities[user].token}"}, timeout=30)
        for user, (namespace, _) in TENANTS.items()}
    try:
        yield clients
    finally:
        apply(control_plane, "team-a", resource("local", "/tmp/cerise-team-a", None))


def test_tenants_see_only_their_own_archived_jobs(
    archiving_tenants: dict[str, httpx.Client], control_plane: ControlPlane,
    archive_db: Postgres,
) -> None:
    alice, bob = archiving_tenants["alice"], archiving_tenants["bob"]
    created = alice.post("/jobs", json={"name": "alice's history", "workflow": NOT_CWL})
    assert created.status_code == 201, created.text
    job_id = created.json()["id"]
    poll_until(lambda: job_id in [row[1] for row in archived_rows(archive_db, "team-a")]
               and job_id not in [j["metadata"]["name"]
                                  for j in live_jobs(control_plane, "team-a")],
               60, "alice's job archived and pruned")
    assert alice.get(f"/jobs/{job_id}").json()["state"] == "PermanentFailure"
    assert job_id in [job["id"] for job in alice.get("/jobs").json()]
    assert job_id in [run["run_id"] for run in alice.get("/ga4gh/wes/v1/runs").json()["runs"]]
    # bob does not find it in his namespace, and may not look in alice's
    assert bob.get(f"/jobs/{job_id}").status_code == 404
    assert bob.get(f"/ga4gh/wes/v1/runs/{job_id}").status_code == 404
    assert job_id not in [job["id"] for job in bob.get("/jobs").json()]
    assert job_id not in [run["run_id"] for run in bob.get("/ga4gh/wes/v1/runs").json()["runs"]]
    alice_base = str(alice.base_url).rstrip("/")
    for method, path in (("GET", f"/jobs/{job_id}"), ("GET", f"/jobs/{job_id}/log"),
                         ("DELETE", f"/jobs/{job_id}"), ("GET", "/jobs"),
                         ("GET", f"/ga4gh/wes/v1/runs/{job_id}"), ("GET", "/ga4gh/wes/v1/runs")):
        answer = bob.request(method, alice_base + path)
        assert answer.status_code == 403, (method, path, answer.text)
    assert job_id in [row[1] for row in archived_rows(archive_db, "team-a")]
    assert alice.delete(f"/jobs/{job_id}").status_code == 204
    assert alice.get(f"/jobs/{job_id}").status_code == 404
    assert job_id not in [row[1] for row in archived_rows(archive_db, "team-a")]


def archive_condition(operator: OperatorProcess) -> dict[str, Any]:
    answer = http_calls.get(operator.health_url, timeout=5)
    found: dict[str, Any] = answer.json().get("archive") or {}
    return found


def test_with_the_archive_down_live_work_goes_on_and_archiving_resumes(
    archiving: Archiving, control_plane: ControlPlane, operator: OperatorProcess,
    archive_db: Postgres, tmp_path: Path,
) -> None:
    api, namespace = archiving.api, archiving.namespace
    poll_until(lambda: archive_condition(operator).get("status") == "True", 30,
               "the archive reached")
    earlier = http_calls.post(f"{api.url}/jobs", json={"name": "earlier", "workflow": NOT_CWL})
    earlier_id = earlier.json()["id"]
    poll_until(lambda: earlier_id in [row[1] for row in archived_rows(archive_db, namespace)]
               and earlier_id not in [j["metadata"]["name"]
                                      for j in live_jobs(control_plane, namespace)],
               60, "an earlier job archived")
    archive_db.stop()
    try:
        poll_until(lambda: archive_condition(operator).get("status") == "False", 60,
                   "the operator noticing the archive is down")
        assert "archive" in archive_condition(operator)["message"]
        # the apiserver: an archived job is late, not lost; lists hold the live jobs
        late = http_calls.get(f"{api.url}/jobs/{earlier_id}")
        assert late.status_code == 503 and "try again" in late.json()["detail"]
        assert http_calls.get(f"{api.url}/ga4gh/wes/v1/runs/{earlier_id}").status_code == 503
        (api.exchange_dir / "input" / "down.txt").write_text("a b c\n")
        created = http_calls.post(f"{api.url}/jobs", json={
            "name": "while the archive is down", "workflow": WC,
            "input": {"file": {"class": "File", "location": f"{EXCHANGE_URL}/input/down.txt"}}})
        assert created.status_code == 201, created.text
        job_id = created.json()["id"]
        poll_until(lambda: http_calls.get(f"{api.url}/jobs/{job_id}").json()["state"] == "Success",
                   60, "the job ending while the archive is down")

        def told() -> bool:
            events = json.loads(control_plane.kubectl(
                "get", "events", "-n", namespace, "-o", "json",
                "--field-selector", "involvedObject.name=local").stdout)["items"]
            return any(event["reason"] == "ArchiveUnavailable" for event in events)
        poll_until(told, 30, "an ArchiveUnavailable Event on the resource")
        assert job_id in [j["metadata"]["name"] for j in live_jobs(control_plane, namespace)]
        assert job_id in [job["id"] for job in http_calls.get(f"{api.url}/jobs").json()]
    finally:
        archive_db.start()
    poll_until(lambda: archive_condition(operator).get("status") == "True", 60,
               "the operator reaching the archive again")
    poll_until(lambda: job_id in [row[1] for row in archived_rows(archive_db, namespace)]
               and job_id not in [j["metadata"]["name"]
                                  for j in live_jobs(control_plane, namespace)],
               60, "the job archived once the archive is back")
    # the apiserver answers again once its own pause after a failure is over
    poll_until(lambda: http_calls.get(f"{api.url}/jobs/{job_id}").status_code == 200, 10,
               "the apiserver reading the archive again")
    assert http_calls.get(f"{api.url}/jobs/{job_id}").json()["state"] == "Success"
    assert http_calls.get(f"{api.url}/jobs/{earlier_id}").json()["state"] == "PermanentFailure"


def test_an_archived_job_goes_with_its_files_when_its_retention_ends(
    control_plane: ControlPlane, operator: OperatorProcess, archive_db: Postgres,
    exchange_dir: Path, namespace: str, tmp_path: Path,
) -> None:
    kept = resource("local", str(tmp_path / "cerise"), "0")
    kept["spec"]["jobRetention"] = "4s"
    apply(control_plane, namespace, kept)
    created = control_plane.kubectl("create", "-n", namespace, "-f", "-", "-o",
                                    "jsonpath={.metadata.uid}", stdin=json.dumps({
                                        "apiVersion": "cerise.dev/v1alpha1",
                                        "kind": "WorkflowJob", "metadata": {"name": "brief"},
                                        "spec": {"computeResource": "local",
                                                 "workflow": NOT_CWL}}))
    log = exchange_dir / "logs" / f"{created.stdout}.log"
    poll_until(lambda: [row[1] for row in archived_rows(archive_db, namespace)] == ["brief"]
               and not live_jobs(control_plane, namespace), 30, "the job archived")
    assert log.is_file(), "the archived job's log is gone before its retention ends"
    poll_until(lambda: not archived_rows(archive_db, namespace), 30,
               "the archived job removed when its retention ends")
    assert not log.exists()


def test_a_deleted_resource_with_archived_jobs_is_not_read_at_every_sweep(
    control_plane: ControlPlane, operator: OperatorProcess, archive_db: Postgres,
    namespace: str, tmp_path: Path,
) -> None:
    # Archived jobs outlive their resource (here for ever: the operator has no
    # CERISE_JOB_RETENTION), and the sweeps look up each archived job's resource.
    for name in ("gone", "kept"):
        apply(control_plane, namespace, resource(name, str(tmp_path / name), "0"))

    def archive(job: str, on: str) -> None:
        admin_client(control_plane).create(WorkflowJob.from_dict({
            "metadata": {"name": job, "namespace": namespace},
            "spec": {"computeResource": on, "workflow": NOT_CWL}}))
        poll_until(lambda: job in [row[1] for row in archived_rows(archive_db, namespace)]
                   and job not in [j["metadata"]["name"] for j in live_jobs(
                       control_plane, namespace)], 30, f"job {job} archived")

    archive("first", "gone")
    control_plane.kubectl("delete", "computeresource", "gone", "-n", namespace)
    archive("second", "kept")  # sweeps are sequential: the one that archived this ended,
    gone_reads = {"verb": "GET", "resource": "computeresources", "code": "404"}
    reads = api_requests(control_plane, **gone_reads)
    archive("third", "kept")  # and so did every sweep up to this one's
    assert api_requests(control_plane, **gone_reads) == reads, "the gone resource was read again"


async def test_after_a_restart_of_the_archive_the_first_request_is_answered(
    archive_db: Postgres,
) -> None:
    """The pool's connections from before a restart of PostgreSQL are replaced before use:
    the first read after the restart is answered, not refused as if the archive were down."""
    archive = Archive(archive_db.url)
    await archive.open()
    try:
        assert await archive.get("nowhere", "nothing") is None  # the pool holds a connection
        await asyncio.to_thread(archive_db.stop)
        await asyncio.to_thread(archive_db.start)
        assert await archive.get("nowhere", "nothing") is None
    finally:
        await archive.close()
