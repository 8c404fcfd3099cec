"""Project versions: numeric release order, pre-releases, development versions."""

from __future__ import annotations

import pytest

from cerise.model import versions

ASCENDING = [
    "0.0.1", "0.1.0.dev", "0.1.0", "0.9.0", "0.10.0", "1.0.0.dev", "1.0.0-alpha",
    "1.0.0-alpha.1", "1.0.0-alpha.beta", "1.0.0-beta", "1.0.0-beta.2", "1.0.0-beta.11",
    "1.0.0-rc.1", "1.0.0", "1.0.1", "1.2.0", "2.0.0rc9", "2.0.0rc10", "2.0.0", "10.0.0",
]


def test_versions_sort_in_semantic_order() -> None:
    shuffled = sorted(ASCENDING, key=lambda text: text[::-1])
    assert [v.text for v in sorted(versions.parse(t) for t in shuffled)] == ASCENDING


@pytest.mark.parametrize(("lower", "higher"), [
    ("0.9.0", "0.10.0"),  # the original compared these as strings, and got it wrong
    ("1.9", "1.10"),
    ("1.0.0-rc.1", "1.0.0"),
    ("1.3.0.dev", "1.3.0-alpha"),
    ("1.3.0.dev", "1.3.0"),
    ("1.2.9", "1.3.0.dev"),
])
def test_order(lower: str, higher: str) -> None:
    assert versions.parse(lower) < versions.parse(higher)
    assert versions.parse(higher) > versions.parse(lower)


@pytest.mark.parametrize(("one", "other"), [
    ("1.0", "1.0.0"), ("1.0.0+build.1", "1.0.0+build.2"), ("1", "1.0.0+x"),
])
def test_equal_versions(one: str, other: str) -> None:
    assert versions.parse(one) == versions.parse(other)
    assert versions.parse(one) >= versions.parse(other)
    assert not versions.parse(one) < versions.parse(other)


@pytest.mark.parametrize(("text", "dev"), [
    ("1.3.0.dev", True), ("1.3.0-dev", True), ("1.3.0.dev2", True), ("0.0.0.DEV", True),
    ("1.3.0", False), ("1.3.0-rc.1", False), ("1.3.0-devel", False), ("1.0.0+dev", False),
])
def test_development_versions(text: str, dev: bool) -> None:
    assert versions.parse(text).dev is dev


@pytest.mark.parametrize("text", ["", "v1.0", "x", ".1", "1.0_rc", "1.0 "])
def test_not_versions(text: str) -> None:
    with pytest.raises(versions.InvalidVersion, match="is not a version"):
        versions.parse(text)
