"""Taking an archived job out of the Kubernetes API: mark it, then delete it by UID.

The mark (annotation `cerise.archive.records.ARCHIVED`) tells the job's finalizer that its
outputs and log stay in the exchange. The delete carries a UID precondition, so a new job
that has since taken the same name is never deleted in its place.
"""

from __future__ import annotations

from lightkube import ApiError, AsyncClient
from lightkube.types import PatchType

from cerise.kube.jobs import WorkflowJob


async def mark(client: AsyncClient, namespace: str, name: str, uid: str,
               annotation: str) -> bool:
    """Set `annotation` to "true" on the job of that name and UID; False if it is gone or
    the name now belongs to another job (metadata.uid is immutable: a patch naming another
    UID is refused)."""
    patch = {"metadata": {"uid": uid, "annotations": {annotation: "true"}}}
    try:
        await client.patch(WorkflowJob, name, patch, namespace=namespace,
                           patch_type=PatchType.MERGE)
    except ApiError as error:
        if error.status.code in (404, 422):
            return False
        raise
    return True


async def delete(client: AsyncClient, namespace: str, name: str, uid: str) -> bool:
    """Delete the job of that name only if it still has that UID; False if it is gone."""
    requests = client._client  # lightkube's delete() sends no DeleteOptions body
    request = requests.prepare_request("delete", res=WorkflowJob, name=name,
                                       namespace=namespace)
    request.data = {"apiVersion": "v1", "kind": "DeleteOptions",
                    "preconditions": {"uid": uid}}
    response = await requests.send(  # type: ignore[no-untyped-call]
        requests.build_adapter_request(request))
    try:
        requests.handle_response("delete", response, request)
    except ApiError as error:
        if error.status.code in (404, 409):  # gone, or the name is another job's now
            return False
        raise
    return True

