"""A job's workflow and input, fetched and checked before anything touches the remote side.

`spec.workflow` is either the CWL document itself or its URL: a single line with a scheme
(`http://…`, `https://…`, `file://…`) is a URL, resolved through the file exchange (its
own URLs and `file://` inside it are read locally; other http(s) URLs are downloaded,
behind the web fence of `cerise.remote.web`);
anything else is the document. Documents are limited to `MAX_WORKFLOW_BYTES`.
"""

from __future__ import annotations

import asyncio
import os
import re
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cerise.model import cwl, webfence
from cerise.model.exchange import DownloadSource, Exchange, RefusedLocation
from cerise.model.webfence import Fence
from cerise.remote import web
from cerise.remote.staging.confinement import confined

MAX_WORKFLOW_BYTES = 1 << 20
DOWNLOAD_TIMEOUT = 60.0
_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://\S*")


@dataclass(frozen=True)
class JobInput:
    """A checked workflow, its input object and every File/Directory to stage."""

    workflow: cwl.Workflow
    input_object: Mapping[str, Any]
    references: tuple[cwl.FileReference, ...]
    workflow_url: str | None
    """Where the workflow came from, to resolve its relative locations; None if inline."""


async def load_job(
    spec: Mapping[str, Any], exchange: Exchange, installed_steps: Mapping[str, str],
    fence: Fence | None = None,
) -> JobInput:
    """Fetch, check and validate a job's workflow and input, against the installed steps'
    documents (`<project>/<path>.cwl` → text); InvalidWorkflow says what is wrong. The
    validation runs in a thread: it takes milliseconds of CPU. A workflow on the web is
    fetched behind `fence` (by default the operator's, from its environment)."""
    value = (spec.get("workflow") or "").strip()
    text = await workflow_text(value, exchange, fence)
    workflow = await asyncio.to_thread(cwl.parse_workflow, text, installed_steps=installed_steps)
    input_object = spec.get("input") or {}
    return JobInput(workflow, input_object, cwl.check_inputs(workflow, input_object),
                    value if _URL.fullmatch(value) else None)


async def workflow_text(value: str, exchange: Exchange, fence: Fence | None = None) -> str:
    """The workflow document named (or given) by `spec.workflow`."""
    value = value.strip()
    if not _URL.fullmatch(value):
        return value
    try:
        source = exchange.source(value)
    except RefusedLocation as error:
        raise cwl.InvalidWorkflow(f"the workflow cannot be read: {error}") from None
    if isinstance(source, DownloadSource):
        return await _download(source.url, fence or webfence.operator_fence(os.environ))
    return await asyncio.to_thread(_read_local, source.path, exchange.root, value)


def _read_local(path: Path, root: Path, shown: str) -> str:
    try:
        status = confined(f"the workflow {shown}", path, Path(os.path.realpath(root)))
    except RefusedLocation as error:
        raise cwl.InvalidWorkflow(str(error)) from None
    if not stat.S_ISREG(status.st_mode):
        raise cwl.InvalidWorkflow(f"the workflow {shown} is not a file")
    with Path(os.path.realpath(path)).open("rb") as handle:
        return _decoded(handle.read(MAX_WORKFLOW_BYTES + 1), shown)


async def _download(url: str, fence: Fence) -> str:
    try:
        data = await web.fetch_bytes(url, fence=fence, limit=MAX_WORKFLOW_BYTES,
                                     timeout=DOWNLOAD_TIMEOUT)
    except web.FetchFailed as error:
        raise cwl.InvalidWorkflow(f"the workflow could not be downloaded: {error}") from None
    return _decoded(data, url)


def _decoded(data: bytes, shown: str) -> str:
    if len(data) > MAX_WORKFLOW_BYTES:
        raise cwl.InvalidWorkflow(
            f"the workflow {shown} is larger than {MAX_WORKFLOW_BYTES // 1024} KiB")
    try:
        return data.decode()
    except UnicodeDecodeError:
        raise cwl.InvalidWorkflow(f"the workflow {shown} is not UTF-8 text") from None
