"""Reading what ended runs cost for a resource: jobs that ask together share one command,
and a Slurm record not yet closed is asked about again, then given up on.

The remote side is a bash on local files with a stand-in `sacct`, as in the other
scheduler tests; only the clock of the settling is shortened.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import pytest

from cerise.operator import accounting as run_accounting
from cerise.operator.accounting import RunAccounting
from cerise.operator.context import ResourceContext
from cerise.remote.jobscript import JobFiles
from cerise.remote.protocol import CommandResult

CLOSED = "41|00:00:07|00:02.345||2|COMPLETED\n41.batch|00:00:07|00:02.300|20480K|2|COMPLETED\n"
OPEN = "42|00:00:03|00:00:00||1|RUNNING\n"


@dataclass
class LocalRemote:
    """Runs scripts with bash here, counting them."""

    path: str
    scripts: list[str] = field(default_factory=list)

    async def run(self, script: str, **_: Any) -> CommandResult:
        self.scripts.append(script)
        done = await asyncio.to_thread(subprocess.run, ["bash", "-c", script],
                                       capture_output=True, text=True,
                                       env={"PATH": self.path})
        return CommandResult(done.returncode, done.stdout, done.stderr)


@dataclass
class Scheduler:
    name: str


@dataclass
class Context:
    """What RunAccounting uses of a resource's context."""

    remote: LocalRemote
    scheduler: Scheduler
    base: Path
    namespace: str = "ns"
    name: str = "cluster"
    prologue: str = ""

    def files(self, body: dict[str, Any]) -> JobFiles:
        status = body["status"]
        return JobFiles(str(self.base / body["metadata"]["uid"]),
                        attempt=int(status.get("attempt") or 1))


def job(base: Path, uid: str, remote_id: str) -> dict[str, Any]:
    (base / uid).mkdir(parents=True)
    (base / uid / "accounting.json").write_text(json.dumps(
        {"elapsed": 5.0, "cpu": 1.0, "maxRss": 1 << 20, "env": {"SLURM_CPUS_ON_NODE": "1"}}))
    return {"metadata": {"uid": uid}, "status": {"remoteJobId": remote_id}}


def reader(tmp_path: Path, sacct: str) -> tuple[RunAccounting, LocalRemote]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "sacct").write_text(f"#!/bin/bash\nprintf '%s' '{sacct}'\n")
    (bin_dir / "sacct").chmod(0o755)
    remote = LocalRemote(f"{bin_dir}:/usr/bin:/bin")
    context = Context(remote, Scheduler("slurm"), tmp_path / "jobs")
    return RunAccounting(cast(ResourceContext, context)), remote


@pytest.fixture(autouse=True)
def quick(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(run_accounting, "SETTLE_INTERVAL", 0.05)
    monkeypatch.setattr(run_accounting, "SETTLE_LIMIT", 0.5)


def test_a_run_s_cost_is_read_without_waiting_long_for_others() -> None:
    # A job's final transition waits for its cost: not the 50 ms it used to.
    assert run_accounting.COALESCE <= 0.01


async def test_jobs_ending_together_share_one_read_and_sacct_wins(tmp_path: Path) -> None:
    accounts, remote = reader(tmp_path, CLOSED)
    base = tmp_path / "jobs"
    first, second = await asyncio.gather(accounts.measure(job(base, "a", "41")),
                                         accounts.measure(job(base, "b", "41")))
    assert len(remote.scripts) == 1, "one command for the jobs that ended together"
    assert first == second == {"source": "sacct", "elapsedSeconds": 7.0, "cpuSeconds": 2.345,
                               "maxRssBytes": 20480 * 1024, "cores": 2,
                               "coreHours": pytest.approx(14 / 3600)}


async def test_an_open_record_is_asked_again_then_the_jobs_own_figures_stand(
        tmp_path: Path) -> None:
    accounts, remote = reader(tmp_path, OPEN)
    cost = await accounts.measure(job(tmp_path / "jobs", "c", "42"))
    assert len(remote.scripts) > 2, "asked again while the record was open"
    assert cost is not None and cost["source"] == "jobscript" and cost["elapsedSeconds"] == 5


async def test_pilot_runs_are_their_own_measure_without_sacct(tmp_path: Path) -> None:
    accounts, remote = reader(tmp_path, CLOSED)
    cost = await accounts.measure(job(tmp_path / "jobs", "d", "pilot:d"))
    assert cost is not None and cost["source"] == "pilot" and cost["cores"] == 1
    assert "sacct" not in remote.scripts[0]
