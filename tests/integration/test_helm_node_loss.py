"""A node lost under the operator: the chart's two operator replicas on two real nodes
(cerise/devenv/node.py), four ComputeResources on the test sshd shared out by their Leases
(the chart's default timings: 15 s duration, 2 s retry), and jobs in flight.

The kubelet of the node that runs one replica is stopped first: its pods run on, so that
replica keeps its Leases and its work. Then the whole node hangs (SIGSTOP to its kubelet,
containerd and every process of its pods, as a machine that froze or lost its network):
the other replica takes its resources over within the Lease's duration and ends every job,
none lost, submitted twice or run twice. When the node comes back, the former holder finds
its Leases gone and stops their work; none of its writes lands.

`CERISE_NODE_LOSS_JOBS` (default 20) sets how many jobs are in flight.
"""

from __future__ import annotations

import datetime
import json
import os
import signal
import uuid
from pathlib import Path
from typing import Any

import pytest

from cerise.devenv import node as devenv_node
from cerise.devenv.controlplane import ControlPlane
from cerise.devenv.sshd import SshEndpoint
from tests.integration.api_fixtures import poll_until
from tests.integration.node_fixtures import Images
from tests.integration.operator_fixtures import apply, wait_for_job
from tests.integration.test_helm import helm_env, values_file
from tests.integration.test_helm_node import (
    HOME,
    free_local_port,
    install,
    ready_pods,
    ssh_values,
    uninstall_leaves_nothing,
    wait_specialisation,
)
from tests.integration.test_operator_jobs import FINAL, SLEEP
from tests.integration.test_operator_replicas import (
    follow_tenures,
    holder,
    leases,
    submissions,
    transition_events,
)

pytestmark = pytest.mark.integration
__all__ = ["helm_env"]  # the fixture, shared with the chart's other tests

RESOURCES = ("r0", "r1", "r2", "r3")
JOBS = int(os.environ.get("CERISE_NODE_LOSS_JOBS", "20"))
DELAY = 30
"""How long each job sleeps: long enough to be in flight through the kubelet's stop and the
takeover, short enough that some end while their holder hangs."""
LEASE_DURATION = 15
"""The chart's default (the operator's CERISE_LEASE_DURATION)."""
RETRY = 2
"""The default CERISE_LEASE_RETRY: the period between a replica's Lease ticks."""
TAKEOVER_WITHIN = LEASE_DURATION + 2 * RETRY + 3
"""From the hung holder's last renewal to the new holder's first: the duration, counted
from the tick that saw the renewal (up to a period after it), reached at a tick (up to a
period later), and 3 s for the ticks' own work on two busy cores (20 s was once 20.3)."""


def renewed(spec: dict[str, Any]) -> datetime.datetime:
    return datetime.datetime.fromisoformat(spec["renewTime"])


def operator_logs(plane: ControlPlane, namespace: str, pods: dict[str, str],
                  keep: Path) -> str:
    """Each operator pod's log, kept whole in `keep`; their ends, for a failure message."""
    ends = []
    for pod in pods:
        log = plane.kubectl("logs", "-n", namespace, pod, check=False).stdout
        (keep / f"{pod}.log").write_text(log)
        ends.append(f"--- {pod} (whole log: {keep / pod}.log):\n"
                    + "\n".join(log.splitlines()[-60:]))
    return "\n".join(ends)


async def test_a_lost_node_is_taken_over_with_nothing_lost_or_done_twice(
    node: devenv_node.Node, second_node: devenv_node.Node, node_sshd: SshEndpoint,
    images: Images, control_plane: ControlPlane, namespace: str, helm_env: dict[str, str],
    tmp_path: Path,
) -> None:
    plane = control_plane
    base = f".cerise-{uuid.uuid4().hex[:6]}"
    values = ssh_values(node_sshd, images, base, free_local_port(), names=RESOURCES)
    # ReadWriteMany, so that the replicas may run on different nodes. The chart's default
    # spread is a preference, which the scheduler's scores may outweigh (both replicas once
    # went to the second node); a site that counts on surviving a node requires it, as here.
    values["exchange"]["persistence"] = {"accessModes": ["ReadWriteMany"]}
    values.setdefault("operator", {})["affinity"] = {"podAntiAffinity": {
        "requiredDuringSchedulingIgnoredDuringExecution": [{
            "topologyKey": "kubernetes.io/hostname",
            "labelSelector": {"matchLabels": {"app.kubernetes.io/instance": "rel",
                                              "app.kubernetes.io/component": "operator"}}}]}}
    install(plane, helm_env, node, namespace, "-f", str(values_file(tmp_path, values)))
    placed = {pod["metadata"]["name"]: pod["spec"]["nodeName"]
              for pod in ready_pods(plane, namespace)["operator"]}
    assert sorted(placed.values()) == [devenv_node.FIRST.name, devenv_node.SECOND.name]
    [lost] = [pod for pod, name in placed.items() if name == devenv_node.SECOND.name]
    [other] = [pod for pod in placed if pod != lost]
    wait_specialisation(plane, namespace, "rel")
    poll_until(lambda: sorted(holder(s) for s in leases(plane, namespace).values())
               == sorted([lost, lost, other, other]), 60, "the resources shared two and two")
    held = {resource for resource, spec in leases(plane, namespace).items()
            if holder(spec) == lost}

    try:
        await lose_a_node(plane, namespace, second_node, lost, other, held)
    except AssertionError as failed:
        raise AssertionError(f"{failed}\nLeases: {leases(plane, namespace)}\n"
                             f"{operator_logs(plane, namespace, placed, tmp_path)}") from None
    home = HOME / node_sshd.username
    jobs = json.loads(plane.kubectl("get", "workflowjobs", "-n", namespace, "-o",
                                    "json").stdout)["items"]
    assert {j["metadata"]["name"]:
            submissions(home / f"{base}-{j['spec']['computeResource']}", j)
            for j in jobs} == {
        f"sleep-{i}": 1 for i in range(JOBS)}
    uninstall_leaves_nothing(plane, helm_env, namespace)


async def lose_a_node(plane: ControlPlane, namespace: str, second_node: devenv_node.Node,
                      lost: str, other: str, held: set[str]) -> None:
    """Jobs in flight; the kubelet of `lost`'s node stopped, then the whole node hung, and
    back: `other` took `held` over, and every job ended once, in Success."""
    names = [f"sleep-{i}" for i in range(JOBS)]
    apply(plane, namespace, *({
        "apiVersion": "cerise.dev/v1alpha1", "kind": "WorkflowJob", "metadata": {"name": name},
        "spec": {"workflow": SLEEP, "input": {"delay": DELAY},
                 "computeResource": RESOURCES[i % len(RESOURCES)]}}
        for i, name in enumerate(names)))
    for name in names:
        await wait_for_job(plane, namespace, name, {"Running"} | FINAL, timeout=180)

    # The kubelet stops: the replica's container runs on, and renews its Leases past their
    # duration; nothing is taken over.
    second_node.signal(signal.SIGSTOP)
    stopped = datetime.datetime.now(datetime.UTC)
    try:
        poll_until(lambda: all(
            holder(spec) == lost and renewed(spec) > stopped + datetime.timedelta(
                seconds=LEASE_DURATION)
            for resource, spec in leases(plane, namespace).items() if resource in held),
            LEASE_DURATION + 20,
            f"{lost} renewing its Leases with its kubelet stopped (at {stopped})")

        # The node hangs: the other replica takes over.
        seen = await follow_tenures(
            plane, len(RESOURCES), namespace=namespace,
            then=lambda: second_node.signal(signal.SIGSTOP, pods=True),
            until=lambda holders: set(holders.values()) == {other})
        taken_over = [(seen[r][-1].first - seen[r][-2].last).total_seconds() for r in held]
        print(f"\ntakeover of a hung node's resources (last renewal to the new holder's): "
              f"{', '.join(f'{t:.1f} s' for t in sorted(taken_over))}")
        assert {r: [t.holder for t in seen[r][-2:]] for r in held} == {
            r: [lost, other] for r in held}, seen
        assert max(taken_over) <= TAKEOVER_WITHIN, seen

        for name in names:
            await wait_for_job(plane, namespace, name, FINAL, timeout=240)
    finally:
        second_node.signal(signal.SIGCONT, pods=True)

    # Back: the former holder sees its tenure ended and stops that work, writing nothing.
    poll_until(lambda: "its work stopped" in plane.kubectl(
        "logs", "-n", namespace, lost, check=False).stdout, 90,
        f"{lost}, woken, stopping its former resources' work")
    jobs = json.loads(plane.kubectl("get", "workflowjobs", "-n", namespace, "-o",
                                    "json").stdout)["items"]
    assert {j["metadata"]["name"]: j["status"]["phase"] for j in jobs} == {
        name: "Success" for name in names}, leases(plane, namespace)
    for name in names:
        reasons = transition_events(plane, name, namespace)
        assert len(reasons) == len(set(reasons)), f"a transition of {name} landed twice: {reasons}"
