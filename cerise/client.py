"""A small client of Cerise's REST APIs, for the `cerise` command and scripts.

It speaks the Cerise jobs API (`/jobs`), reads steps from WES (`/ga4gh/wes/v1`) and
uploads through the WebDAV exchange (`/files`). Local files named in a CWL input object
(`path`, or a `location` without a scheme) are uploaded for the user and their locations
rewritten to the exchange's URLs. Every failure is a `ClientError` with a message for a
person and the exit code the command line uses.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import httpx

from cerise.model import locations

FINAL_STATES = frozenset({"Success", "Cancelled", "PermanentFailure", "TemporaryFailure",
                          "SystemError"})


class ExitCode:
    """What the `cerise` command exits with (documented in docs/cli.md)."""

    SUCCESS = 0
    JOB_FAILED = 1
    USAGE = 2
    CANCELLED = 3
    UNREACHABLE = 4
    REFUSED = 5
    NOT_FOUND = 6


def exit_code_for(state: str) -> int:
    """The exit code for a job that ended in `state`."""
    if state == "Success":
        return ExitCode.SUCCESS
    if state == "Cancelled":
        return ExitCode.CANCELLED
    return ExitCode.JOB_FAILED


class ClientError(Exception):
    """A request that did not work; the message says why, `code` is the exit code."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


@dataclass
class Client:
    """One Cerise service at `url` (its base: e.g. http://localhost:29593 or …/ns/team-a)."""

    url: str
    token: str | None = None
    timeout: float = 60.0

    def __post_init__(self) -> None:
        self.url = self.url.rstrip("/")
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        self._http = httpx.Client(base_url=self.url, headers=headers, timeout=self.timeout)

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    # --- jobs -----------------------------------------------------------------------------

    def jobs(self) -> list[dict[str, Any]]:
        """Every job the caller may see, oldest first."""
        found: list[dict[str, Any]] = self._json("GET", "/jobs")
        return found

    def job(self, job_id: str) -> dict[str, Any]:
        """One job."""
        found: dict[str, Any] = self._json("GET", f"/jobs/{quote(job_id, safe='')}")
        return found

    def submit(self, workflow: str, inputs: Mapping[str, Any], *, name: str | None = None,
               resource: str | None = None, callback: str | None = None) -> dict[str, Any]:
        """Submit a job; `workflow` is a URL or the document's text; `callback` a URL to
        POST its summary to when it ends."""
        body: dict[str, Any] = {"workflow": workflow, "input": dict(inputs)}
        if name is not None:
            body["name"] = name
        if resource is not None:
            body["compute_resource"] = resource
        if callback is not None:
            body["callback_url"] = callback
        created: dict[str, Any] = self._json("POST", "/jobs", json=body)
        return created

    def cancel(self, job_id: str) -> dict[str, Any]:
        """Ask for the job to be cancelled."""
        found: dict[str, Any] = self._json("POST", f"/jobs/{quote(job_id, safe='')}/cancel")
        return found

    def delete(self, job_id: str) -> None:
        """Delete the job, its remote files and its outputs."""
        self._request("DELETE", f"/jobs/{quote(job_id, safe='')}")

    def log(self, job_id: str) -> str:
        """The job's log."""
        return self._request("GET", f"/jobs/{quote(job_id, safe='')}/log").text

    def steps(self, job_id: str) -> list[dict[str, Any]]:
        """The job's workflow steps as WES tasks (name, times, exit code)."""
        found = self._json("GET", f"/ga4gh/wes/v1/runs/{quote(job_id, safe='')}/tasks")
        tasks: list[dict[str, Any]] = found.get("task_logs") or []
        return tasks

    def exchange_url(self) -> str:
        """The URL under which the service's operator knows this caller's file exchange."""
        info = self._json("GET", "/ga4gh/wes/v1/service-info")
        return str((info.get("tags") or {}).get("exchange") or f"{self.url}/files")

    # --- files ----------------------------------------------------------------------------

    def upload_inputs(self, inputs: Mapping[str, Any], base: Path) -> dict[str, Any]:
        """`inputs` with local Files and Directories uploaded and pointing at the exchange.

        Local means a `path`, or a `location` without a scheme, resolved against `base`.
        """
        folder = f"input/cli-{uuid.uuid4().hex[:12]}"
        exchange = self.exchange_url()
        uploaded: dict[Path, str] = {}

        def place(local: Path) -> str:
            if local not in uploaded:
                name = f"{len(uploaded):02d}-{local.name}"
                self._put_tree(local, f"{folder}/{name}")
                uploaded[local] = f"{exchange}/{folder}/{quote(name)}"
            return uploaded[local]

        self._mkcol(folder)
        rewritten: dict[str, Any] = _rewrite(dict(inputs), base, place)
        return rewritten

    def upload_workflow(self, path: Path) -> str:
        """Upload a workflow file; return the exchange URL the job should name."""
        folder = f"input/cli-{uuid.uuid4().hex[:12]}"
        self._mkcol(folder)
        self._put_file(path, f"{folder}/{path.name}")
        return f"{self.exchange_url()}/{folder}/{quote(path.name)}"

    def download(self, url: str, target: Path) -> int:
        """Save the file at `url` (an output location) to `target`; return its size."""
        target.parent.mkdir(parents=True, exist_ok=True)
        size = 0
        try:
            with self._http.stream("GET", url) as response:
                self._check(response, f"GET {url}")
                with target.open("wb") as out:
                    for chunk in response.iter_bytes(1 << 20):
                        out.write(chunk)
                        size += len(chunk)
        except httpx.TransportError as error:
            raise self._unreachable(error) from None
        return size

    def _mkcol(self, relative: str) -> None:
        response = self._send("MKCOL", f"/files/{quote(relative)}/")
        if response.status_code not in (201, 405):
            self._check(response, f"creating {relative}")

    def _put_tree(self, local: Path, relative: str) -> None:
        if local.is_dir():
            self._mkcol(relative)
            for child in sorted(local.iterdir()):
                self._put_tree(child, f"{relative}/{child.name}")
        else:
            self._put_file(local, relative)

    def _put_file(self, local: Path, relative: str) -> None:
        try:
            handle = local.open("rb")
        except OSError as error:
            raise ClientError(f"cannot read {local}: {error.strerror}", ExitCode.USAGE) from None
        with handle:
            response = self._send("PUT", f"/files/{quote(relative)}", content=_chunks(handle))
        self._check(response, f"uploading {local}")

    # --- plumbing -------------------------------------------------------------------------

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        return self._request(method, path, **kwargs).json()

    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        response = self._send(method, path, **kwargs)
        self._check(response, f"{method} {path}")
        return response

    def _send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            return self._http.request(method, path, **kwargs)
        except httpx.TransportError as error:
            raise self._unreachable(error) from None

    def _unreachable(self, error: httpx.TransportError) -> ClientError:
        return ClientError(f"cannot reach Cerise at {self.url}: {error or type(error).__name__}"
                           " (is it running? see --url)", ExitCode.UNREACHABLE)

    def _check(self, response: httpx.Response, what: str) -> None:
        if response.is_success:
            return
        try:
            response.read()
            body = response.json()
        except (ValueError, httpx.StreamError):
            body = {}
        if not isinstance(body, dict):
            body = {}
        detail = body.get("detail") or body.get("msg") or response.reason_phrase
        if isinstance(detail, list):
            detail = "; ".join(str(item) for item in detail)
        code = {401: ExitCode.REFUSED, 403: ExitCode.REFUSED,
                404: ExitCode.NOT_FOUND}.get(response.status_code, ExitCode.REFUSED)
        hint = " (give a token with --token or CERISE_TOKEN)" if response.status_code == 401 else ""
        raise ClientError(f"{what}: {response.status_code} {detail}{hint}", code)


def _chunks(handle: Any) -> Iterator[bytes]:
    while data := handle.read(1 << 20):
        yield data


def _rewrite(value: Any, base: Path, place: Callable[[Path], str]) -> Any:
    """Replace local File/Directory references in a CWL value by uploaded ones."""
    def move(where: str) -> str | None:
        if urlsplit(where).scheme:
            return None
        local = (base / os.path.expanduser(where)).resolve()
        if not local.exists():
            raise ClientError(f"the input {where} does not exist (looked at {local})",
                              ExitCode.USAGE)
        return place(local)

    return locations.moved(value, move)
