"""Waiting on the compute resource for the first of some runs to end, to see it at once.

A poll (`cerise.remote.executor.poll`) sees a run's end only at the next refresh. Between
polls the worker may wait on the resource for the first of its runs' `exit_code` markers
to appear (`cerise.remote.jobscript`): one command that looks for them every fiftieth of a
second or so with shell builtins only (no process started per look), and ends as soon as
one is there, or after `timeout` seconds. It only says that a poll is worth making now;
what the run's end means is still the poll's to say.
"""

from __future__ import annotations

import math
import shlex
from collections.abc import Sequence

from cerise.remote.failures import RemoteCommandFailed
from cerise.remote.protocol import Remote

LOOKS_PER_SECOND = 1_000
"""Most markers looked for per second (a look is a `stat`, which on a login node's shared
file system may reach its metadata server): with many runs, looks are further apart."""
MIN_INTERVAL = 0.02
"""Least seconds between two looks for the markers."""
FOUND = "--cerise-ended--"


def interval(count: int) -> float:
    """Seconds between two looks for `count` markers."""
    return max(MIN_INTERVAL, count / LOOKS_PER_SECOND)


def wait_script(markers: Sequence[str], timeout: float) -> str:
    """Print `FOUND` and the first of `markers` (paths) that exists, as soon as one does;
    nothing if none does within `timeout` seconds."""
    pause = interval(len(markers))
    looks = max(1, math.ceil(timeout / pause))
    paths = " ".join(shlex.quote(path) for path in markers)
    # `read -t` on a pipe no one writes to is a sleep without a process.
    return f"""exec 3<> <(:) || exit 1
__cerise_looks={looks}
while [ "$__cerise_looks" -gt 0 ]; do
    for __cerise_marker in {paths}; do
        [ -e "$__cerise_marker" ] && {{ printf '%s\\n%s\\n' {FOUND} "$__cerise_marker"; exit 0; }}
    done
    read -r -t {pause:.3f} -u 3 _
    __cerise_looks=$((__cerise_looks - 1))
done
"""


def parse_end(output: str) -> str | None:
    """The marker `wait_script` found, or None."""
    found, _, marker = output.partition(f"{FOUND}\n")
    return marker.rstrip("\n") if _ and not found else None


async def first_end(remote: Remote, markers: Sequence[str], timeout: float) -> str | None:
    """Wait on the resource up to `timeout` seconds for one of `markers` to exist; the
    first found, or None. RemoteCommandFailed if the shell could not wait."""
    if not markers:
        return None
    result = await remote.run(wait_script(markers, timeout), timeout=timeout + 30)
    if result.exit_status != 0:
        detail = result.stderr.strip()[-1000:] or f"exit status {result.exit_status}"
        raise RemoteCommandFailed(f"waiting for runs to end: {detail}")
    return parse_end(result.stdout)
