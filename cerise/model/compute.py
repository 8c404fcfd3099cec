"""A ComputeResource's spec as typed values: endpoints, scheduler, environment, credentials.

Pure functions over the raw custom-resource body and Secret data. Two rules carry over from
the original Cerise:

* `$CERISE_USERNAME` in paths and in the runner command is replaced by the login name,
  and `$CERISE_API` in the runner by `<base>/api`.
* Credentials may be overridden from the operator's environment, most specific first:
  `CERISE_JOBS_<NAME>` > the Secret > `CERISE_<NAME>`, for NAME in USERNAME, PASSWORD,
  CERTFILE (a path to a private key file, read by the caller) and PASSPHRASE. The
  original also had per-file-endpoint variables (`CERISE_FILES_*`); here one login serves
  both endpoints, so they are read as a fallback after `CERISE_JOBS_*`.

Environment values are shell text in which only `$NAME` and `${NAME}` references are
expanded by the remote shell; everything else is quoted, so no value can run a command.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

_REFERENCE = re.compile(r"\$(?:\{([A-Za-z_][A-Za-z0-9_]*)\}|([A-Za-z_][A-Za-z0-9_]*))")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
CREDENTIAL_NAMES = ("USERNAME", "PASSWORD", "CERTFILE", "PASSPHRASE")
_SECRET_KEYS = {"USERNAME": "username", "PASSWORD": "password", "CERTFILE": "privateKey",
                "PASSPHRASE": "passphrase"}


class InvalidResource(ValueError):
    """A ComputeResource (or its Secret) cannot be used; the message says why."""


@dataclass(frozen=True)
class ResourceSpec:
    """What the operator needs to know of a ComputeResource."""

    protocol: str
    host: str
    port: int
    scheduler: str
    base_path: str
    """Cerise's base directory there, with $CERISE_USERNAME still in it."""
    runner: str
    environment: tuple[tuple[str, str], ...]
    host_keys: tuple[str, ...]
    credentials_secret: str | None
    refresh: float
    max_sessions: int
    queue: str | None
    cores_per_node: int
    slots_per_node: int
    scheduler_options: tuple[str, ...]
    parallel_environment: str | None = None
    """Grid Engine's parallel environment for jobs of more than one core."""


def parse_spec(spec: Mapping[str, Any]) -> ResourceSpec:
    """The typed spec; the API server has already enforced the schema."""
    jobs = spec.get("jobs") or {}
    files = spec.get("files") or {}
    protocol = jobs.get("protocol", "local")
    if files.get("protocol") == "sftp" and protocol == "local":
        raise InvalidResource("sftp files with local jobs are not supported")
    if files.get("host") and files.get("host") != jobs.get("host"):
        raise InvalidResource("files and jobs must be on the same host")
    return ResourceSpec(
        protocol=protocol,
        host=jobs.get("host", ""),
        port=int(jobs.get("port", 22)),
        scheduler=jobs.get("scheduler", "none"),
        base_path=files.get("path", "/home/$CERISE_USERNAME/.cerise"),
        runner=jobs.get("cwlRunner", "cwltool"),
        environment=tuple((e["name"], e["value"]) for e in jobs.get("environment") or []),
        host_keys=tuple(spec.get("hostKeys") or ()),
        credentials_secret=spec.get("credentialsSecret"),
        refresh=float(spec.get("refreshSeconds", 10)),
        max_sessions=int(jobs.get("maxSessions", 8)),
        queue=jobs.get("queue"),
        cores_per_node=int(jobs.get("coresPerNode", 32)),
        slots_per_node=int(jobs.get("slotsPerNode", 1)),
        scheduler_options=tuple(jobs.get("schedulerOptions") or ()),
        parallel_environment=jobs.get("parallelEnvironment"),
    )


def base_path(spec: ResourceSpec, username: str) -> str:
    """The base directory with $CERISE_USERNAME replaced."""
    return spec.base_path.replace("$CERISE_USERNAME", username).rstrip("/") or "/"


def runner_argv(spec: ResourceSpec, username: str) -> list[str]:
    """The runner command as argv, with $CERISE_API and $CERISE_USERNAME replaced."""
    base = base_path(spec, username)
    text = spec.runner.replace("$CERISE_API", f"{base}/api")
    text = text.replace("$CERISE_USERNAME", username)
    try:
        argv = shlex.split(text)
    except ValueError as error:
        raise InvalidResource(f"cwlRunner cannot be parsed: {error}") from None
    if not argv:
        raise InvalidResource("cwlRunner is empty")
    return argv


def shell_word(value: str) -> str:
    """`value` as one shell word in which only $NAME / ${NAME} references are expanded."""
    parts: list[str] = []
    position = 0
    for match in _REFERENCE.finditer(value):
        if match.start() > position:
            parts.append(shlex.quote(value[position:match.start()]))
        parts.append(f'"${{{match.group(1) or match.group(2)}}}"')
        position = match.end()
    if position < len(value) or not parts:
        parts.append(shlex.quote(value[position:]))
    return "".join(parts)


def prologue(environment: Sequence[tuple[str, str]]) -> str:
    """Shell lines exporting the resource's environment, in order."""
    lines = []
    for name, value in environment:
        if not _NAME.fullmatch(name):
            raise InvalidResource(f"{name!r} is not an environment variable name")
        lines.append(f"export {name}={shell_word(value)}")
    return "\n".join(lines)


@dataclass(frozen=True)
class CredentialValues:
    """The login after the CERISE_* overrides. Exactly one of private_key and certfile may be set;
    certfile is a path (from the environment) that the caller reads."""

    username: str | None = None
    password: str | None = field(default=None, repr=False)
    passphrase: str | None = field(default=None, repr=False)
    private_key: str | None = field(default=None, repr=False)
    certfile: str | None = None


def credential_values(secret: Mapping[str, str], environ: Mapping[str, str]) -> CredentialValues:
    """Merge the Secret's keys and the operator's CERISE_* variables, most specific first."""
    chosen: dict[str, tuple[str, str]] = {}
    for name in CREDENTIAL_NAMES:
        candidates = [
            (environ.get(f"CERISE_JOBS_{name}"), "environ"),
            (environ.get(f"CERISE_FILES_{name}"), "environ"),
            (secret.get(_SECRET_KEYS[name]), "secret"),
            (environ.get(f"CERISE_{name}"), "environ"),
        ]
        for value, origin in candidates:
            if value:
                chosen[name] = (value, origin)
                break
    key = chosen.get("CERTFILE")
    return CredentialValues(
        username=chosen.get("USERNAME", (None, ""))[0],
        password=chosen.get("PASSWORD", (None, ""))[0],
        passphrase=chosen.get("PASSPHRASE", (None, ""))[0],
        private_key=key[0] if key and key[1] == "secret" else None,
        certfile=key[0] if key and key[1] == "environ" else None,
    )
