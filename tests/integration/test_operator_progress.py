"""Staging progress in a job's status (`cerise.operator.progress`), against the real API server."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest
from lightkube import AsyncClient
from lightkube.models.meta_v1 import ObjectMeta

from cerise.devenv.controlplane import ControlPlane
from cerise.devenv.operator import OperatorProcess
from cerise.kube.jobs import WorkflowJob
from cerise.operator.progress import ProgressWriter
from tests.integration.operator_fixtures import wait_for_job

pytestmark = pytest.mark.integration


async def test_a_failed_progress_write_is_written_again_at_the_close(
    kube: AsyncClient, namespace: str, control_plane: ControlPlane, operator: OperatorProcess,
) -> None:
    failed = asyncio.Event()
    noticed = _Noticed(failed)
    logger = logging.getLogger("cerise.operator.progress")
    logger.addHandler(noticed)
    try:
        async with ProgressWriter(kube, namespace=namespace, name="late", direction="out",
                                  interval=0.01) as writer:
            writer(50, 100)  # the job does not exist yet: this write fails
            await asyncio.wait_for(failed.wait(), 10)
            await kube.create(WorkflowJob(
                metadata=ObjectMeta(name="late", namespace=namespace),
                spec={"workflow": "x.cwl", "computeResource": "none"}))
            # the operator's first write sets the whole status: the close comes after it
            await wait_for_job(control_plane, namespace, "late", {"Submitted"})
    finally:
        logger.removeHandler(noticed)
    job = await kube.get(WorkflowJob, "late", namespace=namespace)
    status = job.to_dict().get("status") or {}  # type: ignore[no-untyped-call]
    assert status.get("progress") == {"out": {"done": 50, "total": 100}}
    assert status.get("progressText") == "out 50% of 100 B"


async def test_a_short_staging_hands_its_last_progress_to_the_next_write(
    kube: AsyncClient, namespace: str,
) -> None:
    await kube.create(WorkflowJob(metadata=ObjectMeta(name="short", namespace=namespace),
                                  spec={"workflow": "x.cwl", "computeResource": "none"}))
    writes: list[dict[str, Any]] = []
    async with ProgressWriter(kube, namespace=namespace, name="short", direction="out",
                              written=writes.append) as writer:
        writer(0, 3)
        writer(3, 3)
        await asyncio.sleep(0)  # its writer's turn: before the interval, it writes nothing
        handed = await writer.hand_over({"progress": {"in": {"done": 7, "total": 7}}})
    assert writes == [], "a staging shorter than the interval writes no progress itself"
    assert handed == {"progress": {"in": {"done": 7, "total": 7}, "out": {"done": 3, "total": 3}},
                      "progressText": "out 100% of 3 B"}, "the inputs' progress is kept"


async def test_a_staging_with_nothing_to_move_writes_no_progress(
    kube: AsyncClient, namespace: str,
) -> None:
    writes: list[dict[str, Any]] = []
    async with ProgressWriter(kube, namespace=namespace, name="none", direction="in",
                              interval=0, written=writes.append) as writer:
        writer(0, 0)
    assert writes == []


class _Noticed(logging.Handler):
    """Sets an event at the first warning (a handler of its own: pytest's caplog handler is
    shared by every test of the session)."""

    def __init__(self, event: asyncio.Event) -> None:
        super().__init__(logging.WARNING)
        self.event = event

    def emit(self, record: logging.LogRecord) -> None:
        self.event.set()
