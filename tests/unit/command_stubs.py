"""Run scheduler shell text against stand-in commands that record their arguments.

The shell text is executed by bash, as on a compute resource; only the scheduler's
commands are replaced, so quoting is tested by what the command really receives.
"""

from __future__ import annotations

import shlex
import subprocess
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class StubRun:
    """The outcome of the shell text and the argv each stub call saw, in order."""

    result: subprocess.CompletedProcess[str]
    calls: list[list[str]]


def run_with_stub(
    tmp_path: Path, name: str, script: str, *, stdout: str = "", stderr: str = "",
    status: int = 0,
) -> StubRun:
    """Run `script` with a command `name` that prints `stdout`/`stderr` and exits `status`."""
    bin_dir, calls = tmp_path / "bin", tmp_path / f"{name}.calls"
    bin_dir.mkdir(exist_ok=True)
    calls.mkdir(exist_ok=True)
    stub = bin_dir / name
    stub.write_text(
        "#!/bin/bash\n"
        f"calls={shlex.quote(str(calls))}\n"
        'printf \'%s\\0\' "$@" > "$calls/$(ls "$calls" | wc -l)"\n'
        f"printf '%s' {shlex.quote(stdout)}\n"
        f"printf '%s' {shlex.quote(stderr)} >&2\n"
        f"exit {status}\n"
    )
    stub.chmod(0o755)
    result = subprocess.run(
        ["bash", "-c", f"export PATH={shlex.quote(str(bin_dir))}:\"$PATH\"\n{script}"],
        cwd=tmp_path, capture_output=True, text=True, timeout=30,
    )
    recorded = sorted(calls.iterdir(), key=lambda path: int(path.name))
    return StubRun(result, [path.read_text().split("\0")[:-1] for path in recorded])
