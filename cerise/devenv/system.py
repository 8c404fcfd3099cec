"""What tools/install-system.sh puts on this machine for the remote side of the tests.

Keep the two in step: the script installs, these names find.
"""

from __future__ import annotations

import pwd
import shutil
from pathlib import Path

from cerise.devenv.process import StartupError

TEST_USER = "cerise-test"
"""The unprivileged account that compute-resource jobs run as (uid >= 1000, login shell)."""

PREFIX = Path("/opt/cerise-test")
TORQUE_WRAPPERS = PREFIX / "torque" / "usr" / "bin"
"""Slurm's Torque wrappers, unpacked (they conflict with gridengine-client), with sbatch & co."""

CWL_RUNNER = "cwltool"
"""The remote CWL runner, on the test user's default PATH (/usr/local/bin)."""

INSTALL_HINT = "run `sudo tools/install-system.sh` first"


def require_user(name: str = TEST_USER) -> pwd.struct_passwd:
    """The account entry of the test user, or StartupError if the install step was skipped."""
    try:
        return pwd.getpwnam(name)
    except KeyError:
        raise StartupError(f"user {name} does not exist; {INSTALL_HINT}") from None


def require_programs(*names: str) -> None:
    """Raise StartupError naming any program that is not on PATH."""
    missing = [name for name in names if shutil.which(name) is None]
    if missing:
        raise StartupError(f"not installed: {', '.join(missing)}; {INSTALL_HINT}")
