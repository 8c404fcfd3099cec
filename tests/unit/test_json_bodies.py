"""JSON request bodies: invalid or too deep is a 400 that says so, never a 500."""

from __future__ import annotations

import pytest

from cerise.apiserver import errors, json_bodies


def nested(levels: int) -> str:
    return "[" * levels + "]" * levels


def test_values_within_the_limit_parse() -> None:
    assert json_bodies.parse('{"a": [1, {"b": null}]}', "the body") == {"a": [1, {"b": None}]}
    assert json_bodies.depth(json_bodies.parse(nested(json_bodies.MAX_DEPTH), "x")) == 64


@pytest.mark.parametrize("levels", [json_bodies.MAX_DEPTH + 1, 5000, 200_000])
def test_deeper_nesting_is_a_bad_request(levels: int) -> None:
    with pytest.raises(errors.BadRequest, match="the body nests arrays and objects more than 64"):
        json_bodies.parse(nested(levels), "the body")


def test_invalid_json_is_a_bad_request() -> None:
    with pytest.raises(errors.BadRequest, match=r"^workflow_params is not valid JSON$"):
        json_bodies.parse(b"{", "workflow_params")
    with pytest.raises(errors.BadRequest, match="not valid JSON"):
        json_bodies.parse(b"\xff", "the body")
