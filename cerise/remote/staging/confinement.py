"""Whether a file named in the file exchange really lies in it, symbolic links followed.

`Exchange.source` decides lexically (no I/O), so a `LocalSource` may still leave the
exchange through a symbolic link. `confined` is the check that everyone who opens one
makes first (staging, and the operator reading a workflow): it resolves the path and
refuses it unless the result is inside the resolved root. It touches the file system, so
it sits with staging rather than beside `cerise.model.exchange`, which stays pure.
"""

from __future__ import annotations

import os
from pathlib import Path

from cerise.model.exchange import RefusedLocation, contains


def confined(shown: str, path: Path, real_root: Path) -> os.stat_result:
    """`path`'s status, if it exists and really lies under `real_root` (symlinks followed).

    `real_root` is the exchange's root already resolved (`os.path.realpath`); `shown`
    names the file in the messages of the `RefusedLocation` raised otherwise.
    """
    real = Path(os.path.realpath(path))
    if not contains(real_root, real):
        raise RefusedLocation(
            f"{shown} leads outside the file exchange (through a symbolic link)")
    try:
        return real.stat()
    except FileNotFoundError:
        raise RefusedLocation(f"{shown} does not exist in the file exchange") from None
