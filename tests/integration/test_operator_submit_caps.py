"""Gentle on the scheduler: the caps on submissions per minute and on queued batch jobs."""

from __future__ import annotations

import asyncio
import datetime
from collections import Counter
from typing import Any

import pytest

from cerise.devenv.controlplane import ControlPlane
from cerise.devenv.operator import OperatorProcess
from cerise.devenv.sshd import SshEndpoint
from cerise.kube.jobs import WorkflowJob
from tests.integration.kube_fixtures import admin_client, as_dict
from tests.integration.operator_fixtures import apply
from tests.integration.test_operator_batch import scheduler_resource
from tests.integration.test_operator_jobs import HOSTNAME

pytestmark = pytest.mark.integration

RUNS = 200
PER_MINUTE = 5


def jobs(plane: ControlPlane, namespace: str) -> list[dict[str, Any]]:
    return [as_dict(job) for job in admin_client(plane).list(WorkflowJob, namespace=namespace)]


async def test_the_submission_cap_holds_under_200_waiting_runs(
    request: pytest.FixtureRequest, control_plane: ControlPlane, operator: OperatorProcess,
    namespace: str, sshd: SshEndpoint,
) -> None:
    async with scheduler_resource(request, control_plane, namespace, sshd, "slurm",
                                  jobs_spec={"maxSubmitsPerMinute": PER_MINUTE}) as resource:
        runs = [{"apiVersion": "cerise.dev/v1alpha1", "kind": "WorkflowJob",
                 "metadata": {"name": f"run-{number}"},
                 "spec": {"workflow": HOSTNAME, "computeResource": resource.name}}
                for number in range(RUNS)]
        apply(control_plane, namespace, *runs)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 200
        restarted = False
        held_at_once = 0
        # Until the second minute's submissions: a worker started again (by a change of
        # the resource) after the first ones must count them, not open a new minute.
        while True:
            current = jobs(control_plane, namespace)
            submitted = [j for j in current if j.get("status", {}).get("remoteJobId")]
            held = [j for j in current if "submissions a minute" in
                    j.get("status", {}).get("message", "")
                    and j["status"]["phase"] == "StagingIn"]
            if len(submitted) + len(held) == RUNS:
                held_at_once = max(held_at_once, len(held))
            if submitted and not restarted:
                control_plane.kubectl("patch", "computeresource", resource.name, "-n",
                                      namespace, "--type=merge", "-p",
                                      '{"spec": {"refreshSeconds": 0.6}}')
                restarted = True
            if len(submitted) > PER_MINUTE or loop.time() > deadline:
                break
            await asyncio.sleep(1)
        seen = Counter((j.get("status", {}).get("phase"), j.get("status", {}).get("message"))
                       for j in current)
        assert held_at_once >= RUNS - PER_MINUTE, \
            f"the runs beyond the cap were not all held: {seen.most_common(5)}"
        stamps = sorted(datetime.datetime.fromisoformat(j["status"]["submittedAt"]).timestamp()
                        for j in submitted)
        assert len(stamps) > PER_MINUTE, stamps
        for index, first in enumerate(stamps):  # never more than the cap in any minute
            in_minute = [s for s in stamps[index:] if s < first + 60 - 1]  # 1 s resolution
            assert len(in_minute) <= PER_MINUTE, stamps
        control_plane.kubectl("delete", "wfj", "--all", "-n", namespace, "--wait=false")
