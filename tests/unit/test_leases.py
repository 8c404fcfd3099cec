"""Sharing compute resources out by Leases: what a replica takes, keeps and hands over."""

from __future__ import annotations

import pytest

from cerise.model import leases
from cerise.model.leases import (
    Claim,
    FencingToken,
    Identity,
    LeaseRecord,
    LeaseSeen,
    ResourceKey,
    Timings,
)

TIMINGS = Timings()
A, B, C = Identity("replica-a"), Identity("replica-b"), Identity("replica-c")
RESOURCES = [ResourceKey("team-a", f"cluster-{index}") for index in range(8)]


def held(holder: Identity | None, at: float = 0.0, transitions: int = 0) -> LeaseSeen:
    return LeaseSeen(LeaseRecord(holder, f"renewed at {at}", 15, transitions), at)


def plan_for(me: Identity, seen: dict[ResourceKey, LeaseSeen], now: float = 1.0,
             replicas: tuple[Identity, ...] = (A, B), stopping: bool = False,
             resources: list[ResourceKey] = RESOURCES) -> leases.LeasePlan:
    return leases.plan(me=me, resources=resources, leases=seen, replicas=replicas, now=now,
                       timings=TIMINGS, stopping=stopping)


def settle(replicas: tuple[Identity, ...], seen: dict[ResourceKey, LeaseSeen],
           now: float) -> dict[ResourceKey, LeaseSeen]:
    """Let each replica in turn carry out its plan; a Lease taken earlier in the round is
    no longer free for the next one (the compare-and-swap)."""
    for _ in range(4):
        for me in replicas:
            decided = plan_for(me, seen, now=now, replicas=replicas)
            for key in decided.release:
                seen[key] = LeaseSeen(leases.released(seen[key].record, str(now)), now)
            for key in decided.acquire:
                seen[key] = LeaseSeen(leases.acquired(
                    seen[key].record if key in seen else None, me, str(now), 15), now)
    return seen


def holdings(seen: dict[ResourceKey, LeaseSeen]) -> dict[Identity | None, int]:
    counts: dict[Identity | None, int] = {}
    for lease in seen.values():
        counts[lease.record.holder] = counts.get(lease.record.holder, 0) + 1
    return counts


@pytest.mark.parametrize(("resources", "replicas", "share"),
                         [(8, 2, 4), (8, 3, 3), (7, 3, 3), (1, 3, 1), (0, 2, 0), (5, 1, 5)])
def test_fair_share_is_the_even_spread_rounded_up(resources: int, replicas: int,
                                                  share: int) -> None:
    assert leases.fair_share(resources, replicas) == share


def test_two_replicas_share_eight_free_resources_four_each() -> None:
    seen = settle((A, B), {}, now=0.0)
    assert holdings(seen) == {A: 4, B: 4}


def test_a_third_replica_joining_gets_its_share_handed_over() -> None:
    seen = settle((A, B), {}, now=0.0)
    seen = settle((A, B, C), seen, now=1.0)
    assert sorted(holdings(seen).values()) == [2, 3, 3]
    assert set(holdings(seen)) == {A, B, C}


def test_a_lone_replica_takes_everything_then_hands_half_to_a_newcomer() -> None:
    seen = settle((A,), {}, now=0.0)
    assert holdings(seen) == {A: 8}
    decided = plan_for(A, seen, now=1.0, replicas=(A, B))
    assert len(decided.release) == 4 and not decided.acquire
    assert len(decided.renew) + len(decided.keep) == 4
    assert not set(decided.release) & set(decided.renew + decided.keep)


def test_replicas_prefer_different_resources() -> None:
    first_a = plan_for(A, {}).acquire
    first_b = plan_for(B, {}).acquire
    assert len(first_a) == len(first_b) == 4
    assert set(first_a) != set(first_b)


def test_a_lease_held_by_another_is_not_taken_until_it_expires() -> None:
    seen = {key: held(B, at=0.0) for key in RESOURCES}
    assert plan_for(A, seen, now=14.9, replicas=(A,)).acquire == ()
    taken = plan_for(A, seen, now=15.0, replicas=(A,)).acquire
    assert set(taken) == set(RESOURCES)


def test_expiry_counts_from_when_this_replica_saw_the_change_not_renew_time() -> None:
    record = LeaseRecord(B, "2020-01-01T00:00:00Z", 15, 3)  # an old clock on B's machine
    first = leases.observe(None, record, now=100.0)
    assert first.observed_at == 100.0
    assert leases.observe(first, record, now=110.0) is first
    assert not leases.expired(leases.observe(first, record, now=110.0), 110.0)
    renewed = leases.renewed(record, "2020-01-01T00:00:02Z")
    assert leases.observe(first, renewed, now=112.0).observed_at == 112.0


def test_a_released_lease_is_taken_at_once() -> None:
    seen = {key: held(B, at=0.9) for key in RESOURCES}
    seen[RESOURCES[0]] = LeaseSeen(leases.released(seen[RESOURCES[0]].record, "now"), 0.9)
    assert plan_for(A, seen, now=1.0).acquire == (RESOURCES[0],)


def test_a_holder_that_missed_its_renew_deadline_stops_before_others_may_take_over() -> None:
    seen = {RESOURCES[0]: held(A, at=0.0)}
    assert plan_for(A, seen, now=9.9).renew == (RESOURCES[0],)
    late = plan_for(A, seen, now=10.0)
    assert late.drop == (RESOURCES[0],)
    assert RESOURCES[0] not in late.renew + late.keep + late.acquire
    assert TIMINGS.renew_deadline < TIMINGS.duration
    expired = plan_for(A, seen, now=15.0)
    assert expired.drop == (RESOURCES[0],) and RESOURCES[0] in expired.acquire


def test_renewals_wait_for_the_retry_period() -> None:
    seen = {RESOURCES[0]: held(A, at=0.0)}
    assert plan_for(A, seen, now=1.9).keep == (RESOURCES[0],)
    assert plan_for(A, seen, now=2.0).renew == (RESOURCES[0],)


def test_a_graceful_stop_releases_every_lease_at_once_and_takes_none() -> None:
    seen = {key: held(A, at=0.5) for key in RESOURCES[:4]}
    decided = plan_for(A, seen, now=1.0, stopping=True)
    assert decided.release == tuple(RESOURCES[:4])
    assert decided.acquire == decided.renew == decided.keep == ()


def test_the_holder_deletes_the_lease_of_a_deleted_resource() -> None:
    seen = {key: held(A, at=0.5) for key in RESOURCES[:2]}
    decided = plan_for(A, seen, resources=RESOURCES[1:])
    assert decided.delete == (RESOURCES[0],)
    assert RESOURCES[0] not in decided.acquire + decided.renew + decided.keep + decided.release
    assert decided.orphaned == ()


def test_any_replica_clears_away_free_or_expired_leases_of_resources_it_does_not_know() -> None:
    gone = [ResourceKey("team-b", f"deleted-{index}") for index in range(3)]
    seen = {gone[0]: held(None, at=0.5), gone[1]: held(B, at=0.0), gone[2]: held(B, at=0.5)}
    decided = plan_for(A, seen, now=15.2)
    assert decided.orphaned == (gone[0], gone[1])  # the third is alive: its holder's to delete
    assert not set(gone) & set(decided.acquire + decided.delete)


def test_each_acquisition_is_a_new_tenure_with_a_greater_token() -> None:
    created = leases.acquired(None, A, "t0", 15)
    assert leases.token(created) == FencingToken(A, 0)
    handed = leases.released(created, "t1")
    again = leases.acquired(handed, A, "t2", 15)
    assert leases.token(again) == FencingToken(A, 1)
    taken = leases.acquired(again, B, "t3", 15)
    assert leases.token(taken) == FencingToken(B, 2)
    assert leases.token(leases.renewed(taken, "t4")) == FencingToken(B, 2)
    with pytest.raises(ValueError, match="no fencing token"):
        leases.token(leases.released(taken, "t5"))


def test_live_replicas_are_those_whose_heartbeat_has_not_expired() -> None:
    heartbeats = {B: held(B, at=0.0), C: held(C, at=10.0)}
    assert leases.live_replicas(heartbeats, A, now=20.0) == {A, C}


def test_dead_replicas_leases_are_shared_out_by_the_survivors() -> None:
    seen = settle((A, B, C), {}, now=0.0)
    heartbeats = {A: held(A, at=15.0), B: held(B, at=15.0), C: held(C, at=0.0)}
    replicas = tuple(sorted(leases.live_replicas(heartbeats, A, now=15.0)))
    for key, lease in seen.items():  # A and B renewed; C fell silent at 0
        if lease.record.holder != C:
            seen[key] = LeaseSeen(leases.renewed(lease.record, "15"), 15.0)
    after = settle(replicas, seen, now=15.0)
    assert holdings(after) == {A: 4, B: 4}


@pytest.mark.parametrize(("fence", "outcome"), [
    (None, Claim.WRITE),
    (FencingToken(A, 2), Claim.WRITE),
    (FencingToken(B, 3), Claim.HELD),
    (FencingToken(A, 4), Claim.STALE),
    (FencingToken(A, 3), Claim.STALE),
])
def test_a_holder_writes_its_fence_only_over_an_older_one(fence: FencingToken | None,
                                                          outcome: Claim) -> None:
    assert leases.claim(fence, FencingToken(B, 3)) is outcome


def test_the_token_round_trips_through_a_job_status_and_rejects_junk() -> None:
    token = FencingToken(A, 7)
    assert FencingToken.from_status(token.as_status()) == token
    assert FencingToken.from_status(None) is None
    assert FencingToken.from_status({"holder": A}) is None
    assert FencingToken.from_status({"holder": A, "transitions": "7"}) is None


def test_a_fenced_write_tests_the_whole_token() -> None:
    assert leases.fence_test(FencingToken(A, 7)) == {
        "op": "test", "path": "/status/fence", "value": {"holder": A, "transitions": 7}}


def test_a_lease_created_again_counts_on_from_its_jobs_fences() -> None:
    assert leases.first_transitions([]) == 0
    assert leases.first_transitions([None, FencingToken(A, 4), FencingToken(B, 9)]) == 10
    created = leases.acquired(None, C, "t0", 15, first=10)
    assert leases.claim(FencingToken(B, 9), leases.token(created)) is Claim.WRITE


def test_a_heartbeat_silent_for_four_lease_durations_is_cleared_away() -> None:
    heartbeats = {A: held(A, at=0.0), B: held(B, at=0.0), C: held(C, at=1.0)}
    assert leases.departed(heartbeats, A, now=60.0, timings=TIMINGS) == {B}
    assert leases.departed(heartbeats, A, now=59.9, timings=TIMINGS) == frozenset()
