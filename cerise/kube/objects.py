"""Reading and writing the other objects Cerise uses: Secrets, jobs, resource status."""

from __future__ import annotations

import base64
import binascii
from typing import Any

from lightkube import ApiError, AsyncClient
from lightkube.resources.core_v1 import Secret
from lightkube.types import PatchType

from cerise.kube.jobs import ComputeResource, WorkflowJob


class SecretUnavailable(LookupError):
    """The Secret a ComputeResource names is missing or unreadable; says which, never its data."""


async def secret_data(client: AsyncClient, namespace: str, name: str) -> dict[str, str]:
    """The Secret's data, decoded to text."""
    try:
        secret = await client.get(Secret, name, namespace=namespace)
    except ApiError as error:
        raise SecretUnavailable(
            f"Secret {namespace}/{name}: {error.status.reason or error.status.code}") from None
    data: dict[str, str] = {}
    for key, value in (secret.data or {}).items():
        try:
            data[key] = base64.b64decode(value).decode()
        except (binascii.Error, UnicodeDecodeError):
            raise SecretUnavailable(f"Secret {namespace}/{name}: key {key!r} is not text") from None
    data.update(secret.stringData or {})
    return data


async def get_job(client: AsyncClient, namespace: str, name: str) -> dict[str, Any] | None:
    """The WorkflowJob as a plain dict, or None if it no longer exists."""
    try:
        job = await client.get(WorkflowJob, name, namespace=namespace)
    except ApiError as error:
        if error.status.code == 404:
            return None
        raise
    body: dict[str, Any] = job.to_dict()  # type: ignore[no-untyped-call]
    return body


async def patch_resource_status(
    client: AsyncClient, namespace: str, name: str, status: dict[str, Any]
) -> None:
    """Merge `status` into a ComputeResource's status (observed facts; no CAS needed)."""
    await client.patch(
        ComputeResource.Status, name, {"status": status},
        namespace=namespace, patch_type=PatchType.MERGE,
    )
