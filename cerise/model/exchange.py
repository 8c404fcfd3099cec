"""The file exchange: a directory on the operator's side that clients see under a URL.

Clients upload inputs to `<url>/input/…` and read outputs from `<url>/output/<job key>/…`;
the operator reads and writes the same files under `root`. This module maps between the
two (pure: no I/O):

* `Exchange.source` decides where an input location comes from. A URL under `url`, or a
  ``file://`` URL inside `root`, is a `LocalSource` (a path under `root`, percent-decoded);
  any other ``http(s)://`` URL is a `DownloadSource`. Everything else is refused with a
  `RefusedLocation` whose message tells the user what to give instead: other schemes,
  ``file://`` outside the exchange or on another host, bare paths (unless a `base` URL
  resolves them, as CWL does for a workflow's relative defaults), queries and fragments
  on exchange URLs, ``..`` components (also when percent-encoded) and the exchange itself.
* `Exchange.output_path` / `output_url` place a job's outputs at
  ``root/output/<job key>/<relpath>``, advertised as ``<url>/output/<job key>/<relpath>``
  (percent-encoded); `log_path` is the job log, ``root/logs/<job key>.log``.

`Layout` is the exchange as configured for a whole service: one directory and one URL,
shared by every namespace (single-user), or, when the URL holds ``{namespace}``, one
subdirectory and one URL per namespace, so that tenants never share files.

Limits: the checks here are lexical. A `LocalSource` may still leave `root` through a
symbolic link; whoever opens it first checks it with
`cerise.remote.staging.confinement.confined`, which resolves the link and refuses it unless
`contains` holds for the resolved path and resolved root.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path, PurePath, PurePosixPath
from urllib.parse import quote, unquote, urljoin, urlsplit

_DEFAULT_PORTS = {"http": 80, "https": 443}
_JOB_KEY = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,252}")


class RefusedLocation(ValueError):
    """An input location that Cerise will not read; the message says why, for a person."""


@dataclass(frozen=True)
class LocalSource:
    """An input inside the exchange: `path` is absolute and lexically under the root."""

    path: Path


@dataclass(frozen=True)
class DownloadSource:
    """An input to download from an http(s) URL outside the exchange."""

    url: str


Source = LocalSource | DownloadSource


@dataclass(frozen=True)
class Exchange:
    """The exchange directory `root` and the URL prefix `url` under which clients see it."""

    root: Path
    url: str

    def __post_init__(self) -> None:
        if not self.root.is_absolute():
            raise ValueError(f"the file exchange root {str(self.root)!r} is not absolute")
        parts = urlsplit(self.url)
        if parts.scheme not in _DEFAULT_PORTS or not parts.hostname:
            raise ValueError(f"the file exchange URL {self.url!r} is not an http(s) URL")
        if parts.query or parts.fragment:
            raise ValueError(f"the file exchange URL {self.url!r} has a query or fragment")
        object.__setattr__(self, "url", self.url.rstrip("/"))

    def source(self, location: str, *, base: str | None = None) -> Source:
        """Where the input at `location` comes from; relative locations resolve against `base`."""
        if not location:
            raise RefusedLocation(f"the location is empty; {self._advice()}")
        parts = urlsplit(location)
        scheme = parts.scheme.lower()
        if not scheme:
            if base is None:
                raise RefusedLocation(f"{_show(location)} is not a URL; {self._advice()}")
            return self.source(urljoin(base, location))
        if scheme == "file":
            return self._file_source(location)
        if scheme not in _DEFAULT_PORTS:
            raise RefusedLocation(
                f"{_show(location)} uses the {scheme!r} scheme, which is not supported; "
                f"{self._advice()}"
            )
        if not parts.hostname:
            raise RefusedLocation(f"{_show(location)} has no host name")
        relative = self._under_prefix(location)
        if relative is None:
            return DownloadSource(location)
        return LocalSource(self._inside(location, _decode(location, relative)))

    def output_dir(self, job_key: str) -> Path:
        """The directory that holds all published outputs of a job."""
        return self.root / "output" / _checked_key(job_key)

    def output_path(self, job_key: str, relpath: str) -> Path:
        """Where an output at `relpath` (relative to the work directory) is published."""
        return self.output_dir(job_key).joinpath(*_relative_parts(relpath))

    def output_url(self, job_key: str, relpath: str) -> str:
        """The URL under which clients read the output at `relpath`."""
        path = "/".join(_relative_parts(relpath))
        return f"{self.url}/output/{_checked_key(job_key)}/{quote(path, safe='/')}"

    def log_path(self, job_key: str) -> Path:
        """The job log a user reads."""
        return self.root / "logs" / f"{_checked_key(job_key)}.log"

    def _under_prefix(self, location: str) -> str | None:
        """The percent-encoded path below `url`, or None if `location` is not under it."""
        prefix, parts = urlsplit(self.url), urlsplit(location)
        if _origin(parts.scheme, parts.hostname, _port(location)) != _origin(
            prefix.scheme, prefix.hostname, _port(self.url)
        ):
            return None
        if parts.path == prefix.path or parts.path == prefix.path + "/":
            return ""
        if not parts.path.startswith(prefix.path + "/"):
            return None
        return parts.path[len(prefix.path) + 1 :]

    def _file_source(self, location: str) -> Source:
        parts = urlsplit(location)
        if parts.netloc not in ("", "localhost"):
            raise RefusedLocation(
                f"{_show(location)} names a file on another host; {self._advice()}"
            )
        _refuse_query(location)
        path = PurePosixPath(_decode(location, parts.path))
        root = PurePosixPath(self.root)
        if ".." in path.parts:
            raise RefusedLocation(f"{_show(location)} contains '..'")
        if not contains(root, path):
            raise RefusedLocation(
                f"{_show(location)} is outside the file exchange, and file:// locations are "
                f"accepted only inside it; {self._advice()}"
            )
        return LocalSource(self._inside(location, str(path.relative_to(root))))

    def _inside(self, location: str, relative: str) -> Path:
        """The local path of `relative` (decoded), a path below the root."""
        _refuse_query(location)
        parts = [part for part in relative.split("/") if part not in ("", ".")]
        if ".." in parts:
            raise RefusedLocation(f"{_show(location)} contains '..'")
        if not parts:
            raise RefusedLocation(
                f"{_show(location)} names the file exchange itself, not a file in it"
            )
        return self.root.joinpath(*parts)

    def _advice(self) -> str:
        return f"upload the file to {self.url}/input/ and give its URL, or give an http(s) URL"


NAMESPACE_FIELD = "{namespace}"


@dataclass(frozen=True)
class Layout:
    """The exchange of a service: `root`, and `url`, which may contain ``{namespace}``."""

    root: Path
    url: str

    @property
    def per_namespace(self) -> bool:
        """Whether each namespace has an exchange of its own."""
        return NAMESPACE_FIELD in self.url

    def for_namespace(self, namespace: str) -> Exchange:
        """The exchange that the jobs and users of `namespace` see."""
        if not self.per_namespace:
            return Exchange(root=self.root, url=self.url)
        if not _JOB_KEY.fullmatch(namespace):
            raise ValueError(f"{namespace!r} is not a namespace name")
        return Exchange(root=self.root / namespace,
                        url=self.url.replace(NAMESPACE_FIELD, namespace))


def contains(root: PurePath, path: PurePath) -> bool:
    """Whether `path` is `root` or below it (lexically: resolve both first for symlinks)."""
    return path == root or root in path.parents


def _refuse_query(location: str) -> None:
    parts = urlsplit(location)
    if parts.query or parts.fragment:
        raise RefusedLocation(
            f"{_show(location)} has a query or fragment; a file in the exchange is named by "
            "its path alone"
        )


def _decode(location: str, encoded: str) -> str:
    try:
        decoded = unquote(encoded, errors="strict")
    except UnicodeDecodeError:
        raise RefusedLocation(f"{_show(location)} is not valid UTF-8 once decoded") from None
    if "\x00" in decoded:
        raise RefusedLocation(f"{_show(location)} contains a NUL character")
    return decoded


def _port(url: str) -> int | None:
    try:
        return urlsplit(url).port
    except ValueError:
        raise RefusedLocation(f"{_show(url)} has an invalid port") from None


def _origin(scheme: str, host: str | None, port: int | None) -> tuple[str, str, int | None]:
    scheme = scheme.lower()
    return scheme, (host or "").lower(), port or _DEFAULT_PORTS.get(scheme)


def _relative_parts(relpath: str) -> list[str]:
    parts = [part for part in relpath.split("/") if part not in ("", ".")]
    if not parts or ".." in parts or relpath.startswith("/") or "\x00" in relpath:
        raise ValueError(f"{relpath!r} is not a relative path inside a job's outputs")
    return parts


def _checked_key(job_key: str) -> str:
    if not _JOB_KEY.fullmatch(job_key):
        raise ValueError(f"{job_key!r} is not a job key (letters, digits, '_', '.', '-')")
    return job_key


def _show(location: str, limit: int = 200) -> str:
    return repr(location[:limit]) + ("…" if len(location) > limit else "")
