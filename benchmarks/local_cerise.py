"""A whole Cerise on this machine for benchmarks: control plane, operator, local resource."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lightkube import AsyncClient
from lightkube.config.kubeconfig import KubeConfig

from cerise.devenv import controlplane, specialisations
from cerise.devenv.controlplane import ControlPlane
from cerise.devenv.operator import OperatorProcess


@dataclass(frozen=True)
class LocalCerise:
    """What a benchmark drives: the control plane, the operator, an API client, the resource."""

    plane: ControlPlane
    operator: OperatorProcess
    client: AsyncClient
    base: Path
    """The local compute resource's base directory (jobs are in `base/jobs/<uid>`)."""


@contextlib.asynccontextmanager
async def local_cerise(
    work: Path, *, refresh: float, runner: str | None = None
) -> AsyncIterator[LocalCerise]:
    """Start everything under `work`, with ComputeResource `local` in namespace default."""
    plane = controlplane.start(work / "control-plane")
    operator = OperatorProcess(kubeconfig=plane.kubeconfig, exchange_dir=work / "files",
                               exchange_url="http://localhost:29593/files",
                               log=work / "operator.log")
    base = work / "resource"
    jobs: dict[str, Any] = {"protocol": "local", "scheduler": "none"}
    if runner:
        jobs["cwlRunner"] = runner
    try:
        plane.kubectl("apply", "-f", "-", stdin=json.dumps({
            "apiVersion": "cerise.dev/v1alpha1", "kind": "ComputeResource",
            "metadata": {"name": "local", "namespace": "default"},
            "spec": {"refreshSeconds": refresh, "jobs": jobs,
                     "files": {"protocol": "local", "path": str(base)}}}))
        plane.kubectl("apply", "-n", "default", "-f", "-",
                      stdin=json.dumps(specialisations.example(["local"])))
        operator.start()
        await asyncio.to_thread(specialisations.wait_ready, plane, "default", "example")
        config = KubeConfig.from_file(str(plane.kubeconfig)).get(context_name="admin")
        client = AsyncClient(config=config)
        try:
            yield LocalCerise(plane, operator, client, base)
        finally:
            await client.close()
    finally:
        operator.stop()
        plane.stop()
