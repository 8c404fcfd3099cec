"""This replica's share of the compute resources: its settings, and a deleted job whose
resource another replica works for."""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

import kopf
import pytest
from lightkube import AsyncClient

from cerise.kube.leases import LeaseKeeper
from cerise.model.exchange import Layout
from cerise.model.leases import FencingToken, Identity, ResourceKey, Timings
from cerise.operator import sharing
from cerise.operator.registry import GIVE_UP_REMOTE_CLEANUP, HELD_ELSEWHERE_DELAY, Registry


def test_each_start_is_a_new_identity_named_after_the_pod() -> None:
    environ = {"POD_NAME": "cerise-operator-7f9c", "POD_NAMESPACE": "science"}
    first, second = sharing.settings(environ), sharing.settings(environ)
    assert first.identity.startswith("cerise-operator-7f9c-")
    assert first.identity != second.identity
    assert first.namespace == "science"
    assert first.timings == Timings()


def test_the_identity_and_namespace_can_be_set() -> None:
    chosen = sharing.settings({"CERISE_OPERATOR_IDENTITY": "a", "POD_NAME": "p",
                               "CERISE_LEASE_NAMESPACE": "leases", "POD_NAMESPACE": "x"})
    assert chosen.identity.startswith("a-") and chosen.namespace == "leases"


@pytest.mark.parametrize(("watched", "followed"), [
    ((False, ("science",)), "science"),  # the Helm chart's operator: its Role is namespaced
    ((False, ("science", "art")), None),
    ((False, ("other",)), None),
    ((True, ()), None),
    (None, None),
])
def test_the_leases_are_followed_in_the_one_namespace_watched_or_in_all(
        watched: tuple[bool, tuple[str, ...]] | None, followed: str | None) -> None:
    assert sharing.settings({"POD_NAMESPACE": "science"}, watched).watched == followed


@pytest.mark.parametrize("environ", [
    {"CERISE_LEASE_DURATION": "10", "CERISE_LEASE_RENEW_DEADLINE": "10"},
    {"CERISE_LEASE_RETRY": "12"},
])
def test_a_holder_must_stop_before_another_may_take_over(environ: dict[str, str]) -> None:
    with pytest.raises(ValueError, match="a holder must stop before another replica"):
        sharing.settings(environ)


def test_timings_must_be_positive_numbers() -> None:
    with pytest.raises(ValueError, match="CERISE_LEASE_RETRY must be a positive number"):
        sharing.settings({"CERISE_LEASE_RETRY": "soon"})


def body(resource: str) -> dict[str, Any]:
    return {"metadata": {"uid": "a", "namespace": "ns", "name": "a", "resourceVersion": "1"},
            "spec": {"computeResource": resource, "workflow": "w"},
            "status": {"phase": "Running"}}


@pytest.fixture
def registry(tmp_path: Path) -> Registry:
    # Sharing's Leases are never read or written here: `held` is set as a tick would.
    shares = sharing.Sharing(cast(LeaseKeeper, None), timings=Timings(),
                             resources=lambda: [], first=lambda _: 0)
    made = Registry(kube=cast(AsyncClient, None), sharing=shares,
                    exchange=Layout(root=tmp_path, url="http://localhost/files"))
    made.resource_event(None, "ns", "hpc", {})
    return made


async def test_the_replica_holding_the_resource_cleans_up_after_a_deleted_job(
        registry: Registry) -> None:
    with pytest.raises(kopf.TemporaryError, match="the replica holding") as raised:
        await registry.delete_job(body("hpc"), retry=0)
    assert raised.value.delay == HELD_ELSEWHERE_DELAY


async def test_without_any_replica_for_its_resource_a_deletion_goes_ahead_in_the_end(
        registry: Registry, monkeypatch: pytest.MonkeyPatch) -> None:
    events: list[str] = []
    monkeypatch.setattr(kopf, "event", lambda _, **event: events.append(event["message"]))
    await registry.delete_job(body("hpc"), retry=GIVE_UP_REMOTE_CLEANUP)
    assert events == ["remote files of the job were left behind: no replica of the operator "
                      "worked for its ComputeResource"]


async def test_a_job_of_a_resource_held_here_or_gone_is_cleaned_up_here(
        registry: Registry) -> None:
    assert registry.sharing is not None
    registry.sharing.held[ResourceKey("ns", "hpc")] = FencingToken(Identity("me"), 1)
    await registry.delete_job(body("hpc"), retry=0)  # no worker (it cannot start): no wait
    await registry.delete_job(body("gone"), retry=0)


async def test_a_replica_sweeps_the_jobs_of_its_own_resources_and_of_gone_ones(
        registry: Registry) -> None:
    assert registry.sharing is not None
    registry.resource_event(None, "ns", "theirs", {})
    registry.sharing.held[ResourceKey("ns", "hpc")] = FencingToken(Identity("me"), 1)
    for uid, resource in (("a", "hpc"), ("b", "theirs"), ("c", "gone")):
        await registry.job_event("ADDED", {**body(resource), "metadata": {
            "uid": uid, "namespace": "ns", "name": uid, "resourceVersion": "1"}})
    assert sorted(registry.own_jobs) == ["a", "c"]
