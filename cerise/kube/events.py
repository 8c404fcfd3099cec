"""Events posted outside kopf's handlers (kopf.event works only inside them)."""

from __future__ import annotations

import contextlib
import datetime
import uuid

from lightkube import ApiError, AsyncClient
from lightkube.models.core_v1 import EventSource, ObjectReference
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.core_v1 import Event

from cerise.kube.jobs import GROUP, VERSION

SOURCE = "cerise-operator"


async def about_resource(client: AsyncClient, namespace: str, name: str, *, kind: str,
                         reason: str, message: str) -> None:
    """Post an Event (`kind` Normal or Warning) about a ComputeResource; a refusal is
    ignored, as kopf ignores it (Events are a courtesy, not state)."""
    now = datetime.datetime.now(datetime.UTC)
    event = Event(
        metadata=ObjectMeta(name=f"{name}.{uuid.uuid4().hex[:16]}", namespace=namespace),
        involvedObject=ObjectReference(apiVersion=f"{GROUP}/{VERSION}", kind="ComputeResource",
                                       namespace=namespace, name=name),
        type=kind, reason=reason, message=message[:1024], source=EventSource(component=SOURCE),
        firstTimestamp=now, lastTimestamp=now, count=1, reportingComponent=SOURCE)
    with contextlib.suppress(ApiError):
        await client.create(event)
