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
    kube: AsyncClient, namespace: str, caplog: pytest.LogCaptureFixture,
) -> None:
    failed = asyncio.Event()
    caplog.set_level(logging.WARNING, logger="cerise.operator.progress")
    caplog.handler.emit = lambda record: failed.set()  # type: ignore[method-assign]
    async with ProgressWriter(kube, namespace=namespace, name="late", direction="out",
                              interval=0.01) as writer:
        writer(50, 100)  # the job does not exist yet: this write fails
        await asyncio.wait_for(failed.wait(), 10)
        await kube.create(WorkflowJob(metadata=ObjectMeta(name="late", namespace=namespace),
                                      spec={"workflow": "x.cwl", "computeResource": "none"}))
    job = await kube.get(WorkflowJob, "late", namespace=namespace)
    status = job.to_dict().get("status") or {}  # type: ignore[no-untyped-call]
    assert status.get("progress") == {"out": {"done": 50, "total": 100}}
    assert status.get("progressText") == "out 50% of 100 B"
