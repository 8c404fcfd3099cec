"""A resource's credentials Secret is read again while its worker runs: a rotated Secret
restarts the worker, which connects with the new one."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import kopf
import pytest
from kopf._cogs.aiokits import aioenums
from lightkube import AsyncClient

from cerise.devenv.controlplane import ControlPlane
from cerise.model.exchange import Layout
from cerise.operator import worker
from cerise.operator.registry import Registry
from tests.integration.operator_fixtures import apply

pytestmark = pytest.mark.integration


def login(value: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "login"},
            "stringData": {"username": value}}


async def test_a_rotated_credentials_secret_restarts_the_resource_worker(
    control_plane: ControlPlane, kube: AsyncClient, namespace: str, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(worker, "CREDENTIALS_CHECK", 0.2, raising=False)
    apply(control_plane, namespace, login("before"))
    registry = Registry(kube=kube, exchange=Layout(root=tmp_path / "exchange",
                                                   url="http://localhost/files"))
    spec = {"refreshSeconds": 0.1, "credentialsSecret": "login",
            "files": {"protocol": "local", "path": str(tmp_path / "base")},
            "jobs": {"protocol": "local", "scheduler": "none"}}
    setter: aioenums.FlagSetter[kopf.DaemonStoppingReason] = aioenums.FlagSetter()
    running = asyncio.create_task(registry.run_worker(
        namespace, "here", spec, aioenums.FlagWaiter(setter)))
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 30
        while (namespace, "here") not in registry.workers:
            assert not running.done() and loop.time() < deadline, "the worker never started"
            await asyncio.sleep(0.05)
        apply(control_plane, namespace, login("after"))
        with pytest.raises(kopf.TemporaryError, match="credentials Secret changed"):
            await asyncio.wait_for(running, timeout=10)
    finally:
        setter.set(kopf.DaemonStoppingReason.OPERATOR_EXITING)
        await asyncio.gather(running, return_exceptions=True)
