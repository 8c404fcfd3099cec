"""Archiving finished jobs: throughput, its CPU cost, and kill -9 of the operator meanwhile.

Starts its own control plane, PostgreSQL and operator. Makes `--jobs` jobs that the
operator ends at once (PermanentFailure: their workflow is not CWL), waits until all are
final, then turns archiving on (`archiveAfter: "0"` on their ComputeResource) and prints:

    archiving throughput   jobs archived and pruned per second
    operator CPU           CPU seconds the operator spent, per 1,000 jobs archived
    etcd database          its size with the final jobs in it, and after archiving them
                           (history compacted and the file defragmented, as a site's
                           maintenance would)

Then the same again on a second resource while the operator is killed with SIGKILL at
`--kills` random points of the archiving, and prints jobs lost (neither live nor archived),
jobs archived twice, and jobs still live. Goal: 0, 0, 0.

    CERISE_BIN_DIR=... .venv/bin/python benchmarks/archiving.py [--jobs 500] [--kills 10]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import psycopg

from cerise.devenv import controlplane, postgres
from cerise.devenv.controlplane import ControlPlane
from cerise.devenv.operator import OperatorProcess

NAMESPACE = "default"
FINAL = {"Success", "Cancelled", "PermanentFailure", "TemporaryFailure", "SystemError"}


def resource(name: str, base: Path, archive_after: str | None) -> dict[str, Any]:
    spec: dict[str, Any] = {"refreshSeconds": 0.5, "jobs": {"protocol": "local",
                                                            "scheduler": "none"},
                            "files": {"protocol": "local", "path": str(base)}}
    if archive_after is not None:
        spec["archiveAfter"] = archive_after
    return {"apiVersion": "cerise.dev/v1alpha1", "kind": "ComputeResource",
            "metadata": {"name": name, "namespace": NAMESPACE}, "spec": spec}


def live(plane: ControlPlane, on: str) -> dict[str, str | None]:
    """Phase by uid of the live jobs on resource `on`."""
    items = json.loads(plane.kubectl("get", "wfj", "-n", NAMESPACE, "-o", "json").stdout)["items"]
    return {job["metadata"]["uid"]: (job.get("status") or {}).get("phase")
            for job in items if job["spec"]["computeResource"] == on}


def archived(url: str, on: str) -> list[str]:
    """The uids of the archived jobs of resource `on` (once per row)."""
    with psycopg.connect(url) as connection:
        return [row[0] for row in connection.execute(
            "SELECT uid FROM archived_jobs WHERE resource = %s", (on,))]


def etcd_size(plane: ControlPlane, compact: bool = False) -> int:
    """etcd's database file size in bytes, optionally after compacting its history to the
    current revision and defragmenting (through etcd's HTTP gateway)."""
    argv = plane.daemon("etcd").argv
    url = argv[argv.index("--listen-client-urls") + 1]
    status = httpx.post(f"{url}/v3/maintenance/status", json={}, timeout=30).json()
    if compact:
        revision = status["header"]["revision"]
        httpx.post(f"{url}/v3/kv/compaction", json={"revision": revision, "physical": True},
                   timeout=120).raise_for_status()
        httpx.post(f"{url}/v3/maintenance/defragment", json={}, timeout=120).raise_for_status()
        status = httpx.post(f"{url}/v3/maintenance/status", json={}, timeout=30).json()
    return int(status["dbSize"])


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wait(what: str, condition: Any, timeout: float = 900) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise SystemExit(f"{what}: not within {timeout:g} s")
        time.sleep(0.2)


def make_final_jobs(plane: ControlPlane, on: str, base: Path, jobs: int) -> set[str]:
    """`jobs` jobs on a new resource `on` (archiving off), all final; their uids."""
    plane.kubectl("apply", "-f", "-", stdin=json.dumps(resource(on, base, None)))
    items = [{"apiVersion": "cerise.dev/v1alpha1", "kind": "WorkflowJob",
              "metadata": {"name": f"{on}-{index:05d}", "namespace": NAMESPACE},
              "spec": {"computeResource": on, "workflow": "not a CWL workflow"}}
             for index in range(jobs)]
    for start in range(0, jobs, 100):
        plane.kubectl("apply", "-f", "-", stdin=json.dumps(
            {"apiVersion": "v1", "kind": "List", "items": items[start:start + 100]}))
    wait(f"{jobs} jobs final", lambda: (len(found := live(plane, on)) == jobs
                                        and all(p in FINAL for p in found.values())))
    return set(live(plane, on))


def run(jobs: int, kills: int, seed: int, work: Path) -> None:
    rng = random.Random(seed)  # noqa: S311 - reproducible chaos, not cryptography
    plane = controlplane.start(work / "control-plane")
    database = postgres.start(work / "archive")
    operator = OperatorProcess(
        kubeconfig=plane.kubeconfig, exchange_dir=work / "files",
        exchange_url="http://localhost:29593/files", log=work / "operator.log",
        extra_env={"CERISE_ARCHIVE_URL": database.url, "CERISE_ARCHIVE_SWEEP_SECONDS": "1"})
    try:
        operator.start()
        uids = make_final_jobs(plane, "quiet", work / "quiet", jobs)
        before = etcd_size(plane, compact=True)
        assert operator.daemon is not None
        cpu, began = cpu_seconds(operator.daemon.pid), time.monotonic()
        plane.kubectl("apply", "-f", "-", stdin=json.dumps(resource("quiet", work / "quiet",
                                                                    "0")))
        wait("archiving", lambda: not live(plane, "quiet")
             and len(archived(database.url, "quiet")) == jobs)
        took, spent = time.monotonic() - began, cpu_seconds(operator.daemon.pid) - cpu
        assert sorted(archived(database.url, "quiet")) == sorted(uids)
        print(f"jobs: {jobs}; archived and pruned in {took:.1f} s: "
              f"{jobs / took:.1f} jobs/s; operator CPU {spent:.2f} s "
              f"({1000 * spent / jobs:.2f} s per 1,000 jobs)")
        after = etcd_size(plane, compact=True)
        print(f"etcd database: {before / 2**20:.1f} MiB with the {jobs} final jobs, "
              f"{after / 2**20:.1f} MiB after archiving them (compacted and defragmented)")

        uids = make_final_jobs(plane, "chaos", work / "chaos", jobs)
        plane.kubectl("apply", "-f", "-", stdin=json.dumps(resource("chaos", work / "chaos",
                                                                    "0")))
        for threshold in sorted(rng.sample(range(1, jobs), kills)):
            wait(f"{threshold} archived",
                 lambda at=threshold: len(archived(database.url, "chaos")) >= at)
            operator.kill()
            operator.start()
        wait("every job archived", lambda: not live(plane, "chaos")
             and len(archived(database.url, "chaos")) >= jobs)
        rows = archived(database.url, "chaos")
        remaining = live(plane, "chaos")
        print(f"with {kills} SIGKILLs of the operator (seed {seed}): "
              f"jobs lost {len(uids - set(rows) - set(remaining))}, "
              f"archived twice {len(rows) - len(set(rows))}, still live {len(remaining)}")
    finally:
        operator.stop()
        database.stop()
        plane.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=500)
    parser.add_argument("--kills", type=int, default=10)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="cerise-archiving-") as work:
        run(args.jobs, args.kills, args.seed, Path(work))


if __name__ == "__main__":
    main()
