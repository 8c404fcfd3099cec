"""Staging progress in a job's status (`cerise.operator.progress`), against the real API server."""

from __future__ import annotations

import asyncio
import logging

import pytest
from lightkube import AsyncClient
from lightkube.models.meta_v1 import ObjectMeta

from cerise.kube.jobs import WorkflowJob
from cerise.operator.progress import ProgressWriter

pytestmark = pytest.mark.integration


async def test_a_failed_progress_write_is_written_again_at_the_close(
    kube: AsyncClient, namespace: str,
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
    finally:
        logger.removeHandler(noticed)
    job = await kube.get(WorkflowJob, "late", namespace=namespace)
    status = job.to_dict().get("status") or {}  # type: ignore[no-untyped-call]
    assert status.get("progress") == {"out": {"done": 50, "total": 100}}
    assert status.get("progressText") == "out 50% of 100 B"


class _Noticed(logging.Handler):
    """Sets an event at the first warning (a handler of its own: pytest's caplog handler is
    shared by every test of the session)."""

    def __init__(self, event: asyncio.Event) -> None:
        super().__init__(logging.WARNING)
        self.event = event

    def emit(self, record: logging.LogRecord) -> None:
        self.event.set()
