"""The chart's archive: the database URL from the site's Secret, or no archive at all."""

from __future__ import annotations

from typing import Any

import pytest

from tests.integration.test_helm import find, helm_env, render

pytestmark = pytest.mark.integration
__all__ = ["helm_env"]  # the fixture, shared with the chart's other tests


def env_of(objects: list[dict[str, Any]], component: str) -> dict[str, Any]:
    deployment = find(objects, "Deployment", f"demo-cerise-{component}")
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    return {e["name"]: e for e in container["env"]}


def test_without_a_secret_there_is_no_archive(helm_env: dict[str, str]) -> None:
    objects = render(helm_env)
    for component in ("operator", "apiserver"):
        assert "CERISE_ARCHIVE_URL" not in env_of(objects, component)
    assert "CERISE_ARCHIVE_AFTER" not in env_of(objects, "operator")


def test_the_database_url_comes_from_the_sites_secret(helm_env: dict[str, str]) -> None:
    objects = render(helm_env, "--set", "archive.existingSecret=site-db",
                     "--set", "archive.secretKey=dsn", "--set", "archive.after=1d")
    for component in ("operator", "apiserver"):
        url = env_of(objects, component)["CERISE_ARCHIVE_URL"]
        assert url == {"name": "CERISE_ARCHIVE_URL",
                       "valueFrom": {"secretKeyRef": {"name": "site-db", "key": "dsn"}}}
    assert env_of(objects, "operator")["CERISE_ARCHIVE_AFTER"]["value"] == "1d"
    assert "CERISE_ARCHIVE_AFTER" not in env_of(objects, "apiserver")
