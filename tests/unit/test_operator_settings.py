"""The operator's settings of the exchange and of project sources (`cerise.operator.settings`)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from cerise.operator import settings

SHARED = {"CERISE_EXCHANGE_DIR": "/srv/files", "CERISE_EXCHANGE_URL": "https://c.example/files"}
PER_NAMESPACE = {**SHARED, "CERISE_EXCHANGE_URL": "https://c.example/ns/{namespace}/files"}


@pytest.mark.parametrize(("clusterwide", "namespaces", "several"), [
    (True, (), True), (False, ("a",), False), (False, ("a", "b"), True),
    (False, ("team-*",), True), (False, ("a,b",), True), (False, ("!a",), True),
    (False, (), True),
])
def test_what_takes_in_several_namespaces(clusterwide: bool, namespaces: tuple[str, ...],
                                          several: bool) -> None:
    assert settings.several_namespaces(clusterwide, namespaces) is several


def test_one_exchange_directory_serves_one_namespace() -> None:
    with pytest.raises(settings.InvalidSettings, match=re.escape("put {namespace} in")):
        settings.exchange(SHARED, (True, ()))
    assert settings.exchange(SHARED, (False, ("a",))).root == Path("/srv/files")
    assert settings.exchange(PER_NAMESPACE, (True, ())).per_namespace
    assert settings.exchange({**SHARED, "CERISE_SHARED_EXCHANGE": "1"}, (True, ()))
    assert settings.exchange(SHARED, None)  # not started by kopf's command line: unknown


def test_path_sources_default_to_the_images_projects(tmp_path: Path) -> None:
    assert settings.project_paths({}) == Path(settings.DEFAULT_PROJECT_PATHS)
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    assert settings.project_paths({"CERISE_PROJECT_PATHS": str(tmp_path / "link")}) == \
        tmp_path / "real"
