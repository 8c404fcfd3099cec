"""What the batch schedulers share: node shapes, clock times, job names, settings."""

from __future__ import annotations

import pytest

from cerise.model import compute
from cerise.operator import resources
from cerise.remote.schedulers.batch import BatchSettings, NodeShape, clock, job_name, node_shape
from cerise.remote.schedulers.gridengine import GridEngineScheduler
from cerise.remote.schedulers.slurm import SlurmScheduler
from cerise.remote.schedulers.torque import TorqueScheduler


@pytest.mark.parametrize(
    ("cores", "cores_per_node", "slots_per_node", "expected"),
    [
        (0, 32, 1, NodeShape(1, 1, 1)),
        (1, 32, 1, NodeShape(1, 1, 1)),
        (4, 32, 1, NodeShape(1, 1, 4)),
        (32, 32, 1, NodeShape(1, 1, 32)),
        (33, 32, 1, NodeShape(2, 1, 17)),
        (64, 32, 32, NodeShape(2, 32, 1)),
        (64, 32, 4, NodeShape(2, 4, 8)),
        (4, 32, 32, NodeShape(1, 4, 1)),
        (10, 32, 4, NodeShape(1, 4, 3)),
    ],
)
def test_node_shape(cores: int, cores_per_node: int, slots_per_node: int,
                    expected: NodeShape) -> None:
    settings = BatchSettings(cores_per_node=cores_per_node, slots_per_node=slots_per_node)
    shape = node_shape(cores, settings)
    assert shape == expected
    assert shape.nodes * shape.cores_per_node >= max(1, cores)
    assert shape.cores_per_node <= cores_per_node


@pytest.mark.parametrize(
    ("seconds", "expected"), [(0, "00:00:00"), (59, "00:00:59"), (3661, "01:01:01"),
                              (360000, "100:00:00")]
)
def test_clock(seconds: int, expected: str) -> None:
    assert clock(seconds) == expected


@pytest.mark.parametrize(
    ("name", "keep", "limit", "expected"),
    [
        ("cerise-3f2a1b2c-4d5e", "A-Za-z0-9", 15, "cerise3f2a1b2c4"),
        ("1abc", "A-Za-z0-9", 15, "j1abc"),
        ("", "A-Za-z0-9", 15, "j"),
        ("cerise-uid:1 *", "A-Za-z0-9_.-", 255, "cerise-uid1"),
        ("é-x", "A-Za-z0-9_.-", 255, "j-x"),
    ],
)
def test_job_name(name: str, keep: str, limit: int, expected: str) -> None:
    assert job_name(name, keep=keep, limit=limit) == expected


def test_settings_from_spec() -> None:
    spec = compute.parse_spec({"jobs": {
        "scheduler": "gridengine", "queue": "all.q", "coresPerNode": 16, "slotsPerNode": 4,
        "parallelEnvironment": "smp", "schedulerOptions": ["-P", "proj"]}})
    assert BatchSettings.from_spec(spec) == BatchSettings(
        queue="all.q", cores_per_node=16, slots_per_node=4, parallel_environment="smp",
        options=("-P", "proj"))


@pytest.mark.parametrize("name", ["slurm", "torque", "gridengine"])
def test_registered_with_the_resource_settings(name: str) -> None:
    spec = compute.parse_spec({"jobs": {"scheduler": name, "queue": "q", "coresPerNode": 8}})
    scheduler = resources.scheduler_for(spec)
    assert isinstance(scheduler, SlurmScheduler | TorqueScheduler | GridEngineScheduler)
    assert scheduler.name == name
    assert scheduler.settings == BatchSettings(queue="q", cores_per_node=8)
