"""What users ask of their WorkflowJobs: create one, cancel it, delete it.

Each call is made with the client it is given: the apiserver's own (single-user mode)
or one acting as the caller (cluster mode), so that Kubernetes decides what is allowed.
`Refused` carries the API server's own status code and message for the caller.
"""

from __future__ import annotations

from typing import Any

from lightkube import ApiError, AsyncClient, codecs
from lightkube.types import PatchType

from cerise.kube.jobs import WorkflowJob

Body = dict[str, Any]


class Refused(Exception):
    """The API server refused the request; `code` is its HTTP status."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


def _refused(error: ApiError) -> Refused:
    return Refused(error.status.code or 500, error.status.message or str(error))


async def create(client: AsyncClient, body: Body) -> Body:
    """Create the WorkflowJob `body`; return it as stored."""
    try:
        created = await client.create(codecs.from_dict(body))
    except ApiError as error:
        raise _refused(error) from None
    result: Body = created.to_dict()  # type: ignore[no-untyped-call]
    return result


async def cancel(client: AsyncClient, namespace: str, name: str) -> Body:
    """Ask for the job to be cancelled (the operator carries it out); return the job."""
    try:
        patched = await client.patch(WorkflowJob, name, {"spec": {"cancel": True}},
                                     namespace=namespace, patch_type=PatchType.MERGE)
    except ApiError as error:
        raise _refused(error) from None
    result: Body = patched.to_dict()  # type: ignore[no-untyped-call]
    return result


async def delete(client: AsyncClient, namespace: str, name: str) -> None:
    """Delete the job; its finalizer lets the operator stop it and remove its files first."""
    try:
        await client.delete(WorkflowJob, name, namespace=namespace)
    except ApiError as error:
        if error.status.code != 404:
            raise _refused(error) from None
