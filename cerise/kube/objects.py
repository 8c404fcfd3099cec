"""Reading and writing the other objects Cerise uses: Secrets, ConfigMaps, jobs, resource
status."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable
from typing import Any

from lightkube import ApiError, AsyncClient, operators
from lightkube.resources.core_v1 import ConfigMap, Secret
from lightkube.types import PatchType

from cerise.kube.jobs import GROUP, VERSION, ComputeResource, Specialisation, WorkflowJob
from cerise.model.states import FINAL


class SecretUnavailable(LookupError):
    """The Secret a ComputeResource names is missing or unreadable; says which, never its data."""


async def secret_data(client: AsyncClient, namespace: str, name: str) -> dict[str, str]:
    """The Secret's data, decoded to text."""
    found = await optional_secret_data(client, namespace, name)
    if found is None:
        raise SecretUnavailable(f"Secret {namespace}/{name}: NotFound")
    return found


async def optional_secret_data(client: AsyncClient, namespace: str,
                               name: str) -> dict[str, str] | None:
    """The Secret's data, decoded to text; None if there is no such Secret."""
    try:
        secret = await client.get(Secret, name, namespace=namespace)
    except ApiError as error:
        if error.status.code == 404:
            return None
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


async def secrets_data(client: AsyncClient, namespace: str,
                       names: Iterable[str]) -> dict[str, dict[str, str]]:
    """Several Secrets' data (e.g. of a resource's jump hosts), by name."""
    return {name: await secret_data(client, namespace, name) for name in sorted(set(names))}


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


async def live_jobs(client: AsyncClient, namespace: str, resource: str) -> list[dict[str, Any]]:
    """The WorkflowJobs of one ComputeResource that are not final, as plain dicts: one LIST,
    in pages, that the API server filters (the CRD's selectable fields), so it costs the
    live jobs, not every job kept."""
    found = []
    live: dict[str, str | operators.BinaryOperator | operators.SequenceOperator] = {
        "spec.computeResource": resource,
        "status.phase": operators.not_in(sorted(phase.value for phase in FINAL))}
    async for item in client.list(WorkflowJob, namespace=namespace, fields=live,
                                  chunk_size=500):
        body: dict[str, Any] = item.to_dict()  # type: ignore[no-untyped-call]
        body.setdefault("apiVersion", f"{GROUP}/{VERSION}")
        body.setdefault("kind", "WorkflowJob")
        found.append(body)
    return found


async def get_resource(client: AsyncClient, namespace: str, name: str) -> dict[str, Any] | None:
    """The ComputeResource as a plain dict, or None if it does not exist."""
    try:
        resource = await client.get(ComputeResource, name, namespace=namespace)
    except ApiError as error:
        if error.status.code == 404:
            return None
        raise
    body: dict[str, Any] = resource.to_dict()  # type: ignore[no-untyped-call]
    return body


async def delete_job(client: AsyncClient, namespace: str, name: str) -> bool:
    """Ask the API server to delete a WorkflowJob (its finalizer then cleans up after it);
    False if it was already gone."""
    try:
        await client.delete(WorkflowJob, name, namespace=namespace)
    except ApiError as error:
        if error.status.code == 404:
            return False
        raise
    return True


async def patch_resource_status(
    client: AsyncClient, namespace: str, name: str, status: dict[str, Any]
) -> None:
    """Merge `status` into a ComputeResource's status (observed facts; no CAS needed)."""
    await client.patch(
        ComputeResource.Status, name, {"status": status},
        namespace=namespace, patch_type=PatchType.MERGE,
    )


class ConfigMapUnavailable(LookupError):
    """A ConfigMap a Specialisation names is missing or unreadable."""


async def configmap_files(client: AsyncClient, namespace: str, name: str) -> dict[str, bytes]:
    """A ConfigMap's `data` (as UTF-8) and `binaryData`, by key."""
    try:
        config_map = await client.get(ConfigMap, name, namespace=namespace)
    except ApiError as error:
        raise ConfigMapUnavailable(
            f"ConfigMap {namespace}/{name}: {error.status.reason or error.status.code}") from None
    files = {key: value.encode() for key, value in (config_map.data or {}).items()}
    for key, value in (config_map.binaryData or {}).items():
        try:
            files[key] = base64.b64decode(value)
        except binascii.Error:
            raise ConfigMapUnavailable(
                f"ConfigMap {namespace}/{name}: key {key!r} is not base64") from None
    return files


async def list_specialisations(client: AsyncClient, namespace: str) -> list[dict[str, Any]]:
    """Every Specialisation of a namespace, as plain dicts."""
    found = []
    async for item in client.list(Specialisation, namespace=namespace):
        body: dict[str, Any] = item.to_dict()  # type: ignore[no-untyped-call]
        body.setdefault("apiVersion", f"{GROUP}/{VERSION}")
        body.setdefault("kind", "Specialisation")
        found.append(body)
    return found


async def patch_specialisation_status(
    client: AsyncClient, namespace: str, name: str, status: dict[str, Any]
) -> dict[str, Any]:
    """Merge `status` into a Specialisation's status (lists replaced whole); the new body."""
    new = await client.patch(
        Specialisation.Status, name, {"status": status},
        namespace=namespace, patch_type=PatchType.MERGE,
    )
    body: dict[str, Any] = new.to_dict()  # type: ignore[no-untyped-call]
    return body
