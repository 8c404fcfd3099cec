"""A job's limits against a resource's: requests that can never run, time-limit ends."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest

from cerise.model import admission, compute, limits

STARTED = 1_795_659_000


@dataclass(frozen=True)
class Run:
    """A run's end as the markers tell it (what `schedulers.Observation` carries)."""

    started: int | None = STARTED
    ended: int | None = None
    signal: str | None = None
    signalled_at: int | None = None
    timed_out: bool = False


@pytest.mark.parametrize(
    ("run", "limit", "expected"),
    [
        # scheduler `none`: the job script's own limit, certain
        (Run(signal="LIMIT", signalled_at=STARTED + 600), 600,
         "the job reached its time limit of 10 min after running 10 min and was stopped"),
        # Slurm: TERM ~23 s after a one-minute limit, and squeue still says TIMEOUT
        (Run(signal="TERM", signalled_at=STARTED + 83, ended=STARTED + 84, timed_out=True), 60,
         "the job reached its time limit of 1 min after running 1 min 23 s and was stopped; "
         "the scheduler reports a time-out"),
        # Slurm after MinJobAge, the Torque wrappers, Torque: the signal and the time tell
        (Run(signal="TERM", signalled_at=STARTED + 83, ended=STARTED + 84), 60,
         "the job reached its time limit of 1 min after running 1 min 23 s and the scheduler "
         "stopped it with SIGTERM"),
        # Grid Engine with -notify: USR2 at h_rt (its clock starts a little before ours)
        (Run(signal="USR2", signalled_at=STARTED + 3597), 3600,
         "the job reached its time limit of 1 h after running 59 min 57 s and the scheduler "
         "stopped it with SIGUSR2"),
        # the scheduler's default limit (none asked for), as Slurm reports it
        (Run(signal="TERM", signalled_at=STARTED + 7200, timed_out=True), 0,
         "the job reached the scheduler's default time limit after running 2 h and was "
         "stopped; the scheduler reports a time-out"),
        # a cancel well before the limit
        (Run(signal="TERM", signalled_at=STARTED + 30), 3600, None),
        (Run(signal="USR2", signalled_at=STARTED + 30), 3600, None),
        # a TERM without any limit asked for: the scheduler's limit or a cancel, unknown
        (Run(signal="TERM", signalled_at=STARTED + 30), 0, None),
        # the runner's own end, even after the limit (it got there first)
        (Run(ended=STARTED + 4000), 3600, None),
        # killed outright (SIGKILL, no marker of its end): judged by the time gone by
        (Run(), 3600, None),
        # never started
        (Run(started=None, signal="TERM", signalled_at=STARTED), 60, None),
    ],
)
def test_time_limit_message(run: Run, limit: int, expected: str | None) -> None:
    assert limits.time_limit_message(run, limit) == expected


def test_a_run_killed_outright_after_its_limit() -> None:
    assert limits.time_limit_message(Run(), 3600, now=STARTED + 1800) is None
    assert limits.time_limit_message(Run(), 3600, now=STARTED + 3700) == (
        "the job disappeared without recording how it ended, 1 h 1 min after it started and "
        "so past its time limit of 1 h: most likely the scheduler killed it at that limit")


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0, "0 s"), (45, "45 s"), (90, "1 min 30 s"), (3600, "1 h"), (7500, "2 h 5 min"),
     (97200, "1 d 3 h"), (-5, "0 s")],
)
def test_duration(seconds: int, text: str) -> None:
    assert limits.duration(seconds) == text


def spec(**jobs: Any) -> compute.ResourceSpec:
    return compute.parse_spec({"jobs": {"protocol": "local", **jobs}})


@pytest.mark.parametrize(
    ("jobs", "cores", "time_limit", "expected"),
    [
        ({"coresPerNode": 16, "maxNodes": 4}, 64, 0, None),
        ({"coresPerNode": 16, "maxNodes": 4}, 65, 0,
         "the job asks for 65 cores, but the compute resource offers at most 64 (4 nodes of "
         "16 cores: jobs.maxNodes x jobs.coresPerNode)"),
        ({"coresPerNode": 2, "maxNodes": 1}, 3, 0,
         "the job asks for 3 cores, but the compute resource offers at most 2 (1 node of 2 "
         "cores: jobs.maxNodes x jobs.coresPerNode)"),
        ({"coresPerNode": 2}, 1000, 0, None),  # maxNodes unknown: the scheduler decides
        ({"maxTime": 86400}, 1, 86400, None),
        ({"maxTime": 86400}, 1, 172800,
         "the job asks for a time limit of 2 d, but the compute resource allows at most 1 d "
         "(jobs.maxTime)"),
        ({}, 1000, 10**7, None),
    ],
)
def test_request_refusal(jobs: dict[str, Any], cores: int, time_limit: int,
                         expected: str | None) -> None:
    assert admission.request_refusal(spec(**jobs), cores, time_limit) == expected


def test_memory_beyond_a_node_is_refused_with_the_numbers() -> None:
    limited = spec(memoryPerNode=4096)
    assert admission.refusal(limited, 1, 0, 4096) is None
    assert admission.refusal(limited, 1, 0, 4097) == (
        "the job asks for 4097 MiB of memory, but a node of the compute resource has at most "
        "4096 MiB (jobs.memoryPerNode)")
    assert admission.refusal(spec(), 1, 0, 10**9) is None  # memoryPerNode unknown


def test_the_resources_own_limits_are_refused_before_pilot_modes() -> None:
    piloted = spec(coresPerNode=8, maxTime=3600, pilot={"cores": 4, "timeLimitSeconds": 600})
    assert "jobs.maxTime" in str(admission.refusal(piloted, 2, 7200))
    assert "jobs.pilot.cores" in str(admission.refusal(piloted, 6, 60))
    assert "jobs.pilot.timeLimitSeconds" in str(admission.refusal(piloted, 2, 1200))
    assert admission.refusal(piloted, 4, 60) is None
    assert admission.refusal(spec(coresPerNode=8), 6, 60) is None  # no pilot mode
