"""The shell examples of the documentation, run against the real apiserver and operator.

A fenced ``bash`` block whose first lines are ``# test: …`` is run (those lines are not
shown on the site). The blocks of one page run in order, in one directory, and keep the
shell variables they assign for the blocks after them, as a reader's terminal would:

* ``# test: run``: it must exit 0;
* ``# test: expect REGEX``: it must exit 0 and print something REGEX finds (multi-line);
* ``# test: until REGEX``: run again (`poll_until`) until it exits 0 and prints that.

``http://localhost:29593`` becomes the session apiserver's URL, ``.venv/bin/`` the test
environment's, and ``CERISE_URL`` points the ``cerise`` command at the same apiserver.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.integration.api_fixtures import Api, poll_until

pytestmark = pytest.mark.integration

DOCS = Path(__file__).resolve().parents[2] / "docs"
PAGES = ["getting-started.md", "rest-api.md", "writing-a-specialisation.md"]
BLOCK = re.compile(r"^```bash\n((?:# test:[^\n]*\n)+)(.*?)^```", re.MULTILINE | re.DOTALL)
ASSIGNED = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)=", re.MULTILINE)
VARIABLES = ".doc-variables"
POLL_TIMEOUT = 120.0


@dataclass(frozen=True)
class Example:
    """One tested block: what to check, and its commands."""

    line: int
    checks: tuple[tuple[str, str], ...]
    """(`run` | `expect` | `until`, regex)."""
    script: str


def examples(page: str) -> list[Example]:
    """The tested blocks of a page, in order."""
    text = (DOCS / page).read_text()
    found = []
    for match in BLOCK.finditer(text):
        checks = []
        for directive in match.group(1).splitlines():
            kind, _, argument = directive.removeprefix("# test:").strip().partition(" ")
            assert kind in ("run", "expect", "until"), f"{page}: unknown test line {directive!r}"
            checks.append((kind, argument))
        found.append(Example(text.count("\n", 0, match.start()) + 1, tuple(checks),
                             match.group(2)))
    return found


def test_the_pages_have_tested_examples() -> None:
    for page in PAGES:
        assert examples(page), f"{page} has no tested example"
    assert sum(len(examples(page)) for page in PAGES) >= 15


def localised(script: str, api: Api) -> str:
    bin_dir = Path(sys.executable).parent
    return script.replace("http://localhost:29593", api.url).replace(".venv/bin/",
                                                                     f"{bin_dir}/")


def run(example: Example, api: Api, cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run one block after the variables of the blocks before it; keep its own."""
    names = sorted(set(ASSIGNED.findall(example.script)))
    keep = f"declare -p {' '.join(names)} >> {VARIABLES}\n" if names else ""
    script = (f"set -euo pipefail\nif [ -f {VARIABLES} ]; then source {VARIABLES}; fi\n"
              f"{localised(example.script, api)}\n{keep}")
    env = {**os.environ, "CERISE_URL": api.url}
    return subprocess.run(["bash", "-c", script], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=POLL_TIMEOUT)


def printed(done: subprocess.CompletedProcess[str], patterns: list[str]) -> bool:
    """Whether a block exited 0 and printed a match for every pattern."""
    return done.returncode == 0 and all(
        re.search(pattern, done.stdout, re.MULTILINE) for pattern in patterns)


def check(example: Example, api: Api, cwd: Path, where: str) -> None:
    """Run a block once (or until it prints what it should) and check what it printed."""
    patterns = [pattern for kind, pattern in example.checks if kind != "run"]
    if any(kind == "until" for kind, _ in example.checks):
        poll_until(lambda: printed(run(example, api, cwd), patterns), POLL_TIMEOUT,
                   f"{where} printing {patterns}")
        return
    done = run(example, api, cwd)
    assert printed(done, patterns), (f"{where} exited {done.returncode}, expected output "
                                     f"matching {patterns}:\n{done.stdout}\n{done.stderr}")


@pytest.mark.parametrize("page", PAGES)
def test_the_examples_of_a_page_work(page: str, single_user_api: Api, tmp_path: Path) -> None:
    missing = [tool for tool in ("curl", "jq") if shutil.which(tool) is None]
    assert not missing, f"the documentation's examples need {', '.join(missing)}"
    for example in examples(page):
        check(example, single_user_api, tmp_path, f"{page}, block at line {example.line}")
