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


def pytest_configure(config: pytest.Config) -> None:
    """xdist hands out its units of work (groups, and single tests) in the order of the
    items below, not the biggest group first: each worker's first unit must be the one that
    needs a worker no test has started the session's operator on."""
    config.option.loadscopereorder = False


@pytest.hookimpl(tryfirst=True)  # before xdist reads the groups
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Order and group the tests for xdist (`loadgroup`), where each worker runs the units
    it receives in order.

    The tests of the test node form a group, handed out first: the chart's operators in its
    pods must be the only ones acting on their jobs, and the session's operator, which
    watches every namespace, is not started before them on their worker. The API-server tests
    come next, first in Grid Engine's group (with every test that uses Grid Engine, as a
    fixture or as the parameter that names the fixture it looks up), for the same reason:
    they write job phases themselves. Then every module marked `xdist_group` (one whose
    module fixture starts processes of its own), kept on one worker, which starts that
    fixture once; then the single tests."""
    items.sort(key=_rank)
    for item in items:
        marked = item.get_closest_marker("xdist_group")
        if marked is not None:
            if _uses_grid_engine(item) or _uses_node(item):
                raise pytest.UsageError(f"{item.nodeid}: a test of Grid Engine or of the test "
                                        "node must be in that fixture's group, not its own")
            _join_group(item, str(marked.args[0]))
        elif _is_api_server_test(item) or _uses_grid_engine(item):
            _join_group(item, GRID_ENGINE)
        elif _uses_node(item):
            _join_group(item, NODE)


def _rank(item: pytest.Item) -> int:
    if _uses_node(item):
        return 0
    if _is_api_server_test(item):
        return 1
    if _uses_grid_engine(item):
        return 2
    return 3 if item.get_closest_marker("xdist_group") is not None else 4


def _is_api_server_test(item: pytest.Item) -> bool:
    return item.path.name.startswith("test_kube_")


def _uses_node(item: pytest.Item) -> bool:
    return NODE in getattr(item, "fixturenames", ())


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
