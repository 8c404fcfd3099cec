"""A job's workflow and input, fetched and checked before anything touches the remote side.

`spec.workflow` is either the CWL document itself or its URL: a single line with a scheme
(`http://…`, `https://…`, `file://…`) is a URL, resolved through the file exchange (its
own URLs and `file://` inside it are read locally; other http(s) URLs are downloaded,
behind the web fence of `cerise.remote.web`);
anything else is the document. Documents are limited to `MAX_WORKFLOW_BYTES`. A workflow
that passed is remembered by its text (`Checked`): the same workflow submitted again, as a
sweep over inputs does, is not validated again while the installed steps stay the same.
"""

from __future__ import annotations

import asyncio
import collections
import hashlib
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
CHECKED_LIMIT = 32
"""Most checked workflows remembered (the least recently used go first)."""
CHECKED_MAX_BYTES = 64 << 10
"""Largest workflow text remembered once checked."""
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


class Checked:
    """Workflows that passed `cwl.parse_workflow`, by their text, against one set of
    installed steps (forgotten when another set is given)."""

    def __init__(self, limit: int = CHECKED_LIMIT) -> None:
        self._limit = limit
        self._steps: Mapping[str, str] | None = None
        self._workflows: collections.OrderedDict[bytes, cwl.Workflow] = (
            collections.OrderedDict())

    async def parse(self, text: str, installed_steps: Mapping[str, str]) -> cwl.Workflow:
        """`cwl.parse_workflow` of `text`, in a thread (it takes milliseconds of CPU), unless
        it passed against the same `installed_steps` before."""
        if installed_steps is not self._steps:
            self._steps = installed_steps
            self._workflows.clear()
        key = hashlib.sha256(text.encode()).digest()
        workflow = self._workflows.get(key)
        if workflow is not None:
            self._workflows.move_to_end(key)
            return workflow
        workflow = await asyncio.to_thread(cwl.parse_workflow, text,
                                           installed_steps=installed_steps)
        if len(text) <= CHECKED_MAX_BYTES and installed_steps is self._steps:
            self._workflows[key] = workflow
            while len(self._workflows) > self._limit:
                self._workflows.popitem(last=False)
        return workflow


async def load_job(
    spec: Mapping[str, Any], exchange: Exchange, installed_steps: Mapping[str, str],
    fence: Fence | None = None, checked: Checked | None = None,
) -> JobInput:
    """Fetch, check and validate a job's workflow and input, against the installed steps'
    documents (`<project>/<path>.cwl` → text); InvalidWorkflow says what is wrong. A
    workflow on the web is fetched behind `fence` (by default the operator's, from its
    environment); one `checked` knows is not validated again."""
    value = (spec.get("workflow") or "").strip()
    text = await workflow_text(value, exchange, fence)
    workflow = await (checked or Checked()).parse(text, installed_steps)
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
