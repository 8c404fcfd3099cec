"""Shared pytest configuration: the session fixtures of the real test environment."""

from __future__ import annotations

import pytest

pytest_plugins = [
    "tests.integration.kube_fixtures",
    "tests.integration.remote_fixtures",
    "tests.integration.archive_fixtures",
    "tests.integration.operator_fixtures",
    "tests.integration.api_fixtures",
    "tests.integration.node_fixtures",
]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Run the API-server tests first: they write job phases themselves, and must not race
    the session's operator, which the later tests start and which acts on every job."""
    items.sort(key=lambda item: 0 if item.path.name.startswith("test_kube_") else 1)
