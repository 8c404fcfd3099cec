"""Shared pytest configuration: the session fixtures of the real test environment, and the
order and grouping of the tests.

Under pytest-xdist (`./dev test` runs the integration tests on five workers with
`--dist loadgroup`) every worker starts its own session fixtures: control plane, operator,
apiservers, sshd and Slurm, on free ports with private state directories. Grid Engine is one
installation for the whole host, so every test that uses it goes to one worker.
"""

from __future__ import annotations

import os

import pytest

pytest_plugins = [
    "tests.integration.kube_fixtures",
    "tests.integration.remote_fixtures",
    "tests.integration.archive_fixtures",
    "tests.integration.operator_fixtures",
    "tests.integration.api_fixtures",
    "tests.integration.node_fixtures",
]

if "PYTEST_XDIST_WORKER" in os.environ:
    # An xdist worker runs with COLUMNS=80 and LINES=24, which the daemons it starts would
    # inherit: `ps` then cuts its lines at 80 columns, and the session operator's `none`
    # scheduler no longer finds a job whose script path is longer.
    for name in ("COLUMNS", "LINES"):
        os.environ.pop(name, None)

GRID_ENGINE = "gridengine"
"""The session fixture of the host's one Grid Engine cell, and the xdist group of its tests."""
NODE = "node"
"""The session fixture of the test node (one per host: its bridge, address and iptables
rules are the host's), and the xdist group of its tests."""


@pytest.hookimpl(tryfirst=True)  # before xdist reads the groups
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Run the API-server tests first: they write job phases themselves, and must not race
    the session's operator, which the later tests start and which acts on every job. Each
    xdist worker receives its tests in this order, so the rule holds per worker.

    Put the tests that use Grid Engine, as a fixture or as the parameter that names the
    fixture they look up, and the API-server tests in one xdist group, and those of the test
    node in another. A module marked `xdist_group` (one whose module fixture starts a control
    plane of its own) keeps its tests on one worker, which starts that fixture once."""
    items.sort(key=lambda item: 0 if item.path.name.startswith("test_kube_") else 1)
    for item in items:
        marked = item.get_closest_marker("xdist_group")
        # xdist hands out its biggest group first, then single tests: the API-server tests
        # join Grid Engine's group, which keeps its order, so that they run first on the
        # worker they share and no test of that worker has started its operator before.
        if marked is not None:
            if _uses_grid_engine(item) or NODE in getattr(item, "fixturenames", ()):
                raise pytest.UsageError(f"{item.nodeid}: a test of Grid Engine or of the test "
                                        "node must be in that fixture's group, not its own")
            _join_group(item, str(marked.args[0]))
        elif item.path.name.startswith("test_kube_") or _uses_grid_engine(item):
            _join_group(item, GRID_ENGINE)
        elif NODE in getattr(item, "fixturenames", ()):
            _join_group(item, NODE)


def _uses_grid_engine(item: pytest.Item) -> bool:
    if GRID_ENGINE in getattr(item, "fixturenames", ()):
        return True
    callspec = getattr(item, "callspec", None)
    return callspec is not None and GRID_ENGINE in callspec.id.split("-")


def _join_group(item: pytest.Item, group: str) -> None:
    """Mark `item` for the xdist group; give its node id the group suffix that `loadgroup`
    schedules by. pytest 9.2 derives the node id from a structured id, and xdist 3.8 still
    rewrites only the old string (pytest-xdist#1386: the group is silently lost)."""
    if item.get_closest_marker("xdist_group") is None:
        item.add_marker(pytest.mark.xdist_group(group))
    if getattr(item.config.option, "loadgroup", False) and hasattr(item, "_id"):
        from _pytest.nodeid import NodeId  # only in pytest >= 9.2

        item._id = NodeId.parse(f"{item.nodeid}@{group}")
