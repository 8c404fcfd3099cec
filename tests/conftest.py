"""Shared pytest configuration: the session fixtures of the real test environment."""

pytest_plugins = [
    "tests.integration.kube_fixtures",
]
