"""Shared pytest configuration: the session fixtures of the real test environment."""

pytest_plugins = [
    "tests.integration.kube_fixtures",
    "tests.integration.remote_fixtures",
    "tests.integration.operator_fixtures",
    "tests.integration.api_fixtures",
]
