"""Slurm's Torque/PBS wrappers (qsub, qstat, qdel…) as a compute resource sees them.

tools/install-system.sh unpacks them instead of installing them (slurm-wlm-torque conflicts
with gridengine-client), so only a compute resource whose remote environment puts their
directory first on PATH sees them. They drive the Slurm cluster that SLURM_CONF names.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cerise.devenv.process import StartupError
from cerise.devenv.slurm import SlurmCluster
from cerise.devenv.system import INSTALL_HINT, TORQUE_WRAPPERS

WRAPPED_TOOLS = ("qsub", "qstat", "qdel")
SLURM_TOOLS = ("sbatch", "squeue", "scancel", "scontrol")
"""The wrappers run these from their own directory, where the install links them."""


@dataclass(frozen=True)
class TorqueWrappers:
    """A Torque-flavoured view of a Slurm cluster."""

    bindir: Path
    slurm: SlurmCluster

    @property
    def environment(self) -> tuple[tuple[str, str], ...]:
        """Slurm's client environment plus the wrappers first on PATH, as spec pairs.

        The PATH value is shell text: `$PATH` expands on the remote side.
        """
        return (*self.slurm.environment, ("PATH", f"{self.bindir}:$PATH"))


def wrappers(slurm: SlurmCluster, *, bindir: Path = TORQUE_WRAPPERS) -> TorqueWrappers:
    """The wrappers in `bindir` in front of `slurm`; StartupError if they are not unpacked."""
    missing = [tool for tool in WRAPPED_TOOLS + SLURM_TOOLS if not (bindir / tool).exists()]
    if missing:
        raise StartupError(
            f"torque wrappers: {', '.join(missing)} missing in {bindir}; {INSTALL_HINT}"
        )
    return TorqueWrappers(bindir=bindir, slurm=slurm)
