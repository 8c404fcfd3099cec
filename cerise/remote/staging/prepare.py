"""The one remote command that prepares a job's work directory before anything is sent,
and the parser of what it reports.

It creates the directories (0700), links the files that the input cache holds into place
(`cache.link_lines`), and reports the size-matching files already there with their
sha256, so that only those are hashed locally and an equal file is not sent again. The
script needs bash 4 and GNU coreutils (``sha256sum``, ``stat -c``).
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Sequence

from cerise.remote.staging.cache import Needed, link_lines

_SAME_MARK = "cerise-same:"


def prepare_script(dirs: Sequence[str], candidates: Sequence[tuple[str, int]],
                   cache_dir: str | None = None, cached: Sequence[Needed] = ()) -> str:
    """Make `dirs` (0700); link the `cached` files present in `cache_dir`; print
    size-matching candidates' indices, then their sha256 lines.

    Output: the ``cerise-linked:`` line of `link_lines` if anything is `cached`; then
    nothing, or ``cerise-same: i j …`` followed by one ``sha256sum`` line for each index
    in that order. Every path is quoted; long lists go through xargs.
    """
    q = shlex.quote
    paths = " ".join(q(path) for path, _ in candidates)
    sizes = " ".join(str(size) for _, size in candidates)
    linking = link_lines(cache_dir, cached) if cache_dir is not None and cached else ""
    return f"""umask 077
printf '%s\\0' {' '.join(q(d) for d in dirs)} | xargs -0 mkdir -p -- || return 1
{linking}paths=({paths})
sizes=({sizes})
present=()
for i in "${{!paths[@]}}"; do
    [ -f "${{paths[i]}}" ] && [ -r "${{paths[i]}}" ] && present+=("$i")
done
[ "${{#present[@]}}" -eq 0 ] && return 0
mapfile -t found < <(for i in "${{present[@]}}"; do printf '%s\\0' "${{paths[i]}}"; done \\
    | xargs -0 stat -L -c %s --)
[ "${{#found[@]}}" -eq "${{#present[@]}}" ] || return 0
same=()
for j in "${{!present[@]}}"; do
    i=${{present[j]}}
    [ "${{found[j]}}" = "${{sizes[i]}}" ] && same+=("$i")
done
[ "${{#same[@]}}" -eq 0 ] && return 0
echo "{_SAME_MARK} ${{same[*]}}"
for i in "${{same[@]}}"; do printf '%s\\0' "${{paths[i]}}"; done | xargs -0 sha256sum --
"""


def parse_checksums(output: str, paths: Sequence[str]) -> dict[str, str]:
    """The sha256 of each path the prepare script found with its expected size.

    Anything unexpected (a file vanished mid-way, a truncated reply) yields nothing, which
    only means that those files are sent again.
    """
    lines = output.split("\n")
    for number, line in enumerate(lines):
        if line.startswith(_SAME_MARK):
            try:
                indices = [int(word) for word in line[len(_SAME_MARK) :].split()]
            except ValueError:
                return {}
            sums = [entry.lstrip("\\")[:64] for entry in lines[number + 1 :] if entry]
            valid = all(re.fullmatch(r"[0-9a-f]{64}", value) for value in sums)
            if len(sums) != len(indices) or not valid or not all(
                0 <= i < len(paths) for i in indices
            ):
                return {}
            return {paths[i]: value for i, value in zip(indices, sums, strict=True)}
    return {}
