"""A job's callback: what is POSTed to its URL when it ends, how it is signed, and when
it is (tried again) (pure).

A job may name a URL in ``spec.callback.url``. Once it is in a final phase, its worker
POSTs `summary` (JSON: ids, state, times, output locations; no log, no secrets) there,
signed with the namespace's key (`KEY_SECRET`) when there is one: HMAC-SHA256 over
``<timestamp>.<body>``, in `SIGNATURE_HEADER` as ``sha256=<hex>`` with the timestamp in
`TIMESTAMP_HEADER`. Any 2xx answer delivers it; anything else is tried again after
`Schedule.delay`, until `Schedule.give_up` seconds after the job ended. An address the
web fence refuses, or a URL that is not one, is given up at once. What happened is kept
in ``status.callback`` (`Record`), from which `next_step` decides again after a restart.
Delivery is at least once: a receiver keys on `DELIVERY_HEADER` (the job's UID).
See docs/operating.md, "Callbacks".
"""

from __future__ import annotations

import datetime
import hashlib
import hmac
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

MAX_URL = 2048
"""The longest callback URL (the CRD's limit too)."""
KEY_SECRET = "cerise-callback-key"  # noqa: S105 - a Secret's name, not a password
"""The Secret, in the job's namespace, whose `KEY_FIELD` signs the callbacks."""
KEY_FIELD = "key"
SIGNATURE_HEADER = "X-Cerise-Signature"
TIMESTAMP_HEADER = "X-Cerise-Timestamp"
DELIVERY_HEADER = "X-Cerise-Delivery"
EVENT = "job.ended"
MAX_RESULT = 256
"""The longest `lastResult` kept in the status."""
MAX_MESSAGE = 1024
"""The longest job message put in a summary."""


def url_problem(url: object) -> str | None:
    """Why `url` cannot be a callback URL (for a person); None if it can be."""
    if not isinstance(url, str):
        return "the callback URL must be a string"
    if len(url) > MAX_URL:
        return f"the callback URL is {len(url)} characters long, more than {MAX_URL}"
    if not url.isascii():
        return ("the callback URL must be ASCII: percent-encode other characters, and give "
                "an international host name in its xn-- form")
    if any(ord(c) <= 32 or ord(c) == 127 for c in url):
        return "the callback URL contains white space or a control character"
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port out of range
    except ValueError as error:
        return f"the callback URL {url[:100]!r} is not a valid URL ({error})"
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        return f"the callback URL {url[:100]!r} must be an http:// or https:// URL with a host"
    if parts.username is not None or parts.password is not None:
        return ("the callback URL must not carry credentials (user:password@); callbacks "
                "are signed with the namespace's key instead")
    return None


def callback_url(body: Mapping[str, Any]) -> str | None:
    """The job's callback URL, if it has one."""
    url = ((body.get("spec") or {}).get("callback") or {}).get("url")
    return url if isinstance(url, str) and url else None


def summary(body: Mapping[str, Any]) -> bytes:
    """What a callback POSTs about the ended job, as the exact JSON bytes that are signed."""
    meta, spec, status = body["metadata"], body["spec"], body.get("status") or {}
    found = {
        "event": EVENT,
        "id": meta["name"],
        "uid": meta["uid"],
        "namespace": meta["namespace"],
        "name": spec.get("name", ""),
        "computeResource": spec.get("computeResource", ""),
        "state": status.get("state"),
        "phase": status.get("phase"),
        "message": (status.get("message") or "")[:MAX_MESSAGE],
        "exitCode": status.get("exitCode"),
        "createdAt": meta.get("creationTimestamp"),
        "submittedAt": status.get("submittedAt"),
        "finishedAt": status.get("finishedAt"),
        "output": status.get("output") or {},
    }
    return json.dumps(found, sort_keys=True, separators=(",", ":"),
                      ensure_ascii=False).encode()


def signature(key: bytes, timestamp: int, body: bytes) -> str:
    """The `SIGNATURE_HEADER` value: HMAC-SHA256 of ``<timestamp>.<body>`` under `key`."""
    mac = hmac.new(key, f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"sha256={mac.hexdigest()}"


def headers(uid: str, body: bytes, key: bytes | None, timestamp: int) -> dict[str, str]:
    """The request headers of a callback; signed only when the namespace has a `key`."""
    found = {"Content-Type": "application/json", "User-Agent": "cerise-callback",
             DELIVERY_HEADER: uid, TIMESTAMP_HEADER: str(timestamp)}
    if key is not None:
        found[SIGNATURE_HEADER] = signature(key, timestamp, body)
    return found


@dataclass(frozen=True)
class Schedule:
    """When failed deliveries are tried again: `first` seconds after the first, twice as
    long each time up to `longest`, until `give_up` seconds after the job ended."""

    first: float = 5.0
    longest: float = 300.0
    give_up: float = 86400.0

    def delay(self, attempts: int) -> float:
        """Seconds after attempt number `attempts` (1, 2, …) before the next."""
        return min(self.longest, self.first * 2.0 ** min(max(attempts - 1, 0), 64))


@dataclass(frozen=True)
class Record:
    """``status.callback``: what became of the job's callback so far."""

    attempts: int = 0
    last_attempt: float | None = None
    """Epoch seconds."""
    done: bool = False
    """Delivered or given up: nothing more to do."""


def record_of(status: Mapping[str, Any]) -> Record:
    """The record in a job's status (a fresh one if it has none)."""
    found = status.get("callback") or {}
    last = found.get("lastAttempt")
    return Record(attempts=int(found.get("attempts") or 0),
                  last_attempt=parse_time(last) if last else None,
                  done=bool(found.get("delivered") or found.get("gaveUp")))


def pending(body: Mapping[str, Any]) -> bool:
    """Whether the job has a callback not yet delivered nor given up."""
    return callback_url(body) is not None and not record_of(body.get("status") or {}).done


@dataclass(frozen=True)
class Wait:
    """Try again at `at` (epoch seconds)."""

    at: float


class Deliver:
    """Try now."""


DELIVER = Deliver()


def next_step(body: Mapping[str, Any], schedule: Schedule, now: float) -> Deliver | Wait | None:
    """For an ended job: deliver its callback now, wait, or nothing (none, or done)."""
    if not pending(body):
        return None
    record = record_of(body.get("status") or {})
    if record.attempts == 0 or record.last_attempt is None:
        return DELIVER
    due = record.last_attempt + schedule.delay(record.attempts)
    return DELIVER if due <= now else Wait(due)


@dataclass(frozen=True)
class Outcome:
    """How an attempt went: `delivered`, or `result` says what failed and `final` whether
    trying again could help."""

    result: str
    delivered: bool = False
    final: bool = False


def after_attempt(status: Mapping[str, Any], outcome: Outcome, schedule: Schedule,
                  now: float) -> dict[str, Any]:
    """The new ``status.callback`` after an attempt at `now` (a merge patch): delivered,
    given up (the outcome is final, or the next try would come after `Schedule.give_up`),
    or with the time of the next try."""
    record = record_of(status)
    attempts = record.attempts + 1
    fields: dict[str, Any] = {"attempts": attempts, "lastAttempt": format_time(now),
                              "lastResult": outcome.result[:MAX_RESULT]}
    if outcome.delivered:
        fields.update(delivered=format_time(now), nextAttempt=None)
        return fields
    ended = status.get("finishedAt")
    deadline = (parse_time(ended) if ended else now) + schedule.give_up
    following = now + schedule.delay(attempts)
    if outcome.final or following > deadline:
        fields.update(gaveUp=format_time(now), nextAttempt=None)
    else:
        fields["nextAttempt"] = format_time(following)
    return fields


def refused(status: Mapping[str, Any], problem: str, now: float) -> dict[str, Any]:
    """The new ``status.callback`` for a callback not even tried: its URL is no good."""
    return {"attempts": record_of(status).attempts, "lastResult": problem[:MAX_RESULT],
            "gaveUp": format_time(now)}


def format_time(epoch: float) -> str:
    """A Kubernetes (RFC 3339) time, to the millisecond: retries may be seconds apart."""
    moment = datetime.datetime.fromtimestamp(epoch, datetime.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def parse_time(text: str) -> float:
    """Epoch seconds of an RFC 3339 time (as Kubernetes writes them)."""
    return datetime.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
