"""Job names: what every door accepts, and how a name that got in another way is shown."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from cerise.model import names

REFUSED = {
    "NUL": "\x00", "TAB": "\t", "LF": "\n", "CR": "\r", "VT": "\x0b", "FF": "\x0c",
    "FS": "\x1c", "GS": "\x1d", "RS": "\x1e", "ESC": "\x1b", "DEL": "\x7f",
    "NEL": "\x85", "C1 CSI": "\x9b", "LINE SEPARATOR": "\u2028",
    "PARAGRAPH SEPARATOR": "\u2029", "LRE": "\u202a", "RLE": "\u202b", "PDF": "\u202c",
    "LRO": "\u202d", "RLO": "\u202e", "LRI": "\u2066", "RLI": "\u2067", "FSI": "\u2068",
    "PDI": "\u2069", "LRM": "\u200e", "RLM": "\u200f", "ALM": "\u061c",
    "lone surrogate": "\ud800",
}
"""One character of every class a name may not hold (what `str.splitlines` splits at, the
other controls, the bidirectional controls)."""
ACCEPTED = ["", "demo", "Count words", "a/b/c", "It's \"quoted\"", "$(rm -rf /); `id`",
            "ünïcode ✓ 日本語 עברית مرحبا", "emoji 🧪", "x" * 256, "back\\slash",
            "zero\u200bwidth", "nbsp\u00a0here"]
"""Names the original Cerise took (any text), which must still work."""


@pytest.mark.parametrize("name", ACCEPTED)
def test_names_the_original_accepted_still_pass(name: str) -> None:
    assert names.problem(name) is None
    assert names.printable(name) == name


@pytest.mark.parametrize(("label", "char"), REFUSED.items())
def test_line_breaking_and_reordering_characters_are_refused_by_name(
        label: str, char: str) -> None:
    problem = names.problem(f"job{char}name")
    assert problem is not None
    assert f"U+{ord(char):04X}" in problem and "character 4" in problem


def test_every_character_splitlines_splits_at_is_refused() -> None:
    breaks = [chr(code) for code in range(0x110000)
              if len(f"a{chr(code)}b".splitlines()) > 1]
    assert breaks and all(names.problem(char) for char in breaks)


def test_a_long_name_is_refused_with_its_length() -> None:
    assert names.problem("n" * 257) == (
        "the job name is 257 characters long; at most 256 are allowed")
    assert names.problem("n" * 1000, "workflow_url", max_length=None) is None


@pytest.mark.parametrize(("label", "char"), REFUSED.items())
def test_printable_escapes_so_json_lines_stay_lines(label: str, char: str) -> None:
    text = f"before{char}after"
    shown = names.printable(text)
    assert len(shown.splitlines()) == 1 and names.problem(shown) is None
    if label != "lone surrogate":
        assert json.loads(names.printable(json.dumps(text, ensure_ascii=False))) == text


def test_the_crd_carries_the_same_rule() -> None:
    crd = yaml.safe_load((Path(__file__).parents[2] / "crds" / "workflowjobs.yaml").read_text())
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    name = schema["properties"]["spec"]["properties"]["name"]
    assert name["maxLength"] == names.MAX_LENGTH
    assert [rule["rule"] for rule in name["x-kubernetes-validations"]] == [names.CRD_RULE]
    # The RE2 class, read as a Python class, refuses exactly what `problem` refuses.
    match = re.fullmatch(r"!self\.matches\(r'\[(.*)\]'\)", names.CRD_RULE)
    assert match is not None
    python_class = re.sub(r"\\x\{([0-9A-F]{4})\}", r"\\u\1", match.group(1))
    python_class = python_class.replace(r"\p{Cc}", r"\x00-\x1f\x7f-\x9f")
    crd_refuses = re.compile(f"[{python_class}]")
    for code in range(0x10000):
        char = chr(code)
        if 0xD800 <= code <= 0xDFFF:
            continue
        assert bool(crd_refuses.search(char)) == (names.problem(char) is not None), hex(code)
