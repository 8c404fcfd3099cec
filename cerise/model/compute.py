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

from cerise.model import input_cache, retention, retries, webfence
from cerise.model.pilot import PilotSpec
from cerise.model.retries import RetryPolicy
from cerise.model.submissions import SubmitLimits

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
    max_nodes: int | None = None
    """Most nodes one job can get; None: not known (no check before submitting)."""
    max_time: int | None = None
    """Longest time limit a job can get, in seconds; None: not known."""
    memory_per_node: int | None = None
    """Most memory one node can give a job, in MiB; None: not known."""
    memory_resource: str = "h_vmem"
    """Grid Engine only: the complex a job's memory is asked for with (`-l NAME=…`)."""
    job_retention: float | None = None
    """Seconds a finished job is kept before it is deleted; None: the operator's default."""
    archive_after: float | None = None
    """Seconds a finished job stays live before it is archived; None: the operator's default."""
    web_allow: tuple[str, ...] = ()
    """Hosts and networks that http(s) inputs may come from besides the public internet."""
    web_max_bytes: int = webfence.DEFAULT_MAX_BYTES
    web_timeout: float = webfence.DEFAULT_TIMEOUT
    cache_max_bytes: int = input_cache.DEFAULT_LIMIT
    """The input cache's size limit (`cerise.model.input_cache`); 0: no cache."""
    submit_limits: SubmitLimits = field(default_factory=SubmitLimits)
    pilot: PilotSpec | None = None
    """Pilot mode's settings; None when it is off."""
    jump_hosts: tuple[JumpHostSpec, ...] = ()
    """The bastions through which the resource is reached, first to last."""
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    """How runs that their time limit or memory ended are run again (`spec.retry`)."""


@dataclass(frozen=True)
class JumpHostSpec:
    """A jump host of a ComputeResource (`spec.jumpHosts[]`)."""

    host: str
    port: int
    username: str | None
    """None: the `username` key of its Secret."""
    credentials_secret: str
    host_keys: tuple[str, ...]


def parse_spec(spec: Mapping[str, Any]) -> ResourceSpec:
    """The typed spec; the API server has already enforced the schema."""
    jobs = spec.get("jobs") or {}
    files = spec.get("files") or {}
    web = spec.get("webInputs") or {}
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
        max_nodes=int(jobs["maxNodes"]) if jobs.get("maxNodes") else None,
        max_time=int(jobs["maxTime"]) if jobs.get("maxTime") else None,
        memory_per_node=int(jobs["memoryPerNode"]) if jobs.get("memoryPerNode") else None,
        memory_resource=jobs.get("memoryResource", "h_vmem"),
        job_retention=_retention(spec.get("jobRetention")),
        archive_after=_retention(spec.get("archiveAfter"), "archiveAfter"),
        web_allow=_web_allow(web.get("allow") or ()),
        web_max_bytes=int(web.get("maxBytes", webfence.DEFAULT_MAX_BYTES)),
        web_timeout=float(web.get("timeoutSeconds", webfence.DEFAULT_TIMEOUT)),
        cache_max_bytes=int((spec.get("inputCache") or {}).get("maxBytes",
                                                              input_cache.DEFAULT_LIMIT)),
        submit_limits=SubmitLimits(per_minute=int(jobs.get("maxSubmitsPerMinute", 0)),
                                   max_queued=int(jobs.get("maxQueuedJobs", 0))),
        pilot=_pilot(jobs.get("pilot"), int(jobs.get("coresPerNode", 32))),
        jump_hosts=_jump_hosts(spec.get("jumpHosts") or (), protocol),
        retry=_retry(spec.get("retry")),
    )


def _retry(settings: Mapping[str, Any] | None) -> RetryPolicy:
    try:
        return retries.parse_policy(settings, "retry")
    except ValueError as error:
        raise InvalidResource(str(error)) from None


def _jump_hosts(entries: Sequence[Mapping[str, Any]], protocol: str) -> tuple[JumpHostSpec, ...]:
    if entries and protocol != "ssh":
        raise InvalidResource("jumpHosts need jobs.protocol ssh")
    return tuple(JumpHostSpec(host=entry["host"], port=int(entry.get("port", 22)),
                              username=entry.get("username"),
                              credentials_secret=entry["credentialsSecret"],
                              host_keys=tuple(entry["hostKeys"])) for entry in entries)


def jump_login(jump: JumpHostSpec, secret: Mapping[str, str]) -> CredentialValues:
    """A jump host's login from its Secret's keys (the CERISE_* variables are the resource's
    own login's, not a jump host's)."""
    username = jump.username or secret.get("username")
    if not username:
        raise InvalidResource(f"jump host {jump.host}: no username (neither `username` in "
                              f"jumpHosts nor a `username` key in Secret "
                              f"{jump.credentials_secret})")
    return CredentialValues(username=username, password=secret.get("password") or None,
                            passphrase=secret.get("passphrase") or None,
                            private_key=secret.get("privateKey") or None)


def _pilot(settings: Mapping[str, Any] | None, cores_per_node: int) -> PilotSpec | None:
    if not settings or not settings.get("enabled", True):
        return None
    return PilotSpec(cores=int(settings.get("cores", cores_per_node)),
                     time_limit=int(settings.get("timeLimitSeconds", 3600)),
                     max_allocations=int(settings.get("maxAllocations", 1)),
                     idle=int(settings.get("idleSeconds", 300)),
                     max_attempts=int(settings.get("maxAttempts", 3)))


def _web_allow(entries: Sequence[str]) -> tuple[str, ...]:
    try:
        webfence.parse_allowed(entries, webfence.RESOURCE_FIELD)
    except ValueError as error:
        raise InvalidResource(str(error)) from None
    return tuple(entries)


def web_inputs(spec: ResourceSpec, environ: Mapping[str, str]) -> webfence.WebInputs:
    """How the resource's jobs fetch http(s) inputs: behind the operator's fence (from
    `environ`) widened by the resource's `webInputs.allow`, within its limits."""
    try:
        fence = webfence.operator_fence(environ).widened(spec.web_allow,
                                                         webfence.RESOURCE_FIELD)
    except ValueError as error:
        raise InvalidResource(f"the operator's environment: {error}") from None
    return webfence.WebInputs(fence, spec.web_max_bytes, spec.web_timeout)


def _retention(text: str | None, field: str = "jobRetention") -> float | None:
    if text is None:
        return None
    try:
        return retention.parse_retention(str(text))
    except ValueError as error:
        raise InvalidResource(f"{field}: {error}") from None


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
