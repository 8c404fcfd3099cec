"""Callbacks (pure): which URLs are refused, what is sent and signed, and when a failed
delivery is tried again or given up."""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from cerise.model import callbacks
from cerise.model.callbacks import DELIVER, Outcome, Schedule, Wait
from cerise.model.webfence import Fence
from cerise.operator import callbacks as operator_callbacks
from cerise.remote import web

ENDED = "2026-01-01T00:00:00Z"
ENDED_AT = callbacks.parse_time(ENDED)


def job(**status: Any) -> dict[str, Any]:
    return {"metadata": {"name": "sim-1", "uid": "u-1", "namespace": "lab",
                         "creationTimestamp": "2025-12-31T23:00:00Z"},
            "spec": {"name": "sim", "computeResource": "hpc", "workflow": "secret: text",
                     "input": {"password": "hunter2"},
                     "callback": {"url": "https://portal.example.org/hook"}},
            "status": {"phase": "Success", "state": "Success", "finishedAt": ENDED,
                       "output": {"out": {"class": "File", "location": "http://x/out"}},
                       **status}}


@pytest.mark.parametrize(("url", "problem"), [
    ("ftp://example.org/hook", "must be an http:// or https:// URL"),
    ("https:///hook", "must be an http:// or https:// URL"),
    ("example.org/hook", "must be an http:// or https:// URL"),
    ("https://user:pw@example.org/hook", "must not carry credentials"),
    ("https://token@example.org/hook", "must not carry credentials"),
    ("https://example.org/a b", "white space or a control character"),
    ("https://example.org/\n", "white space or a control character"),
    ("https://example.org/\ud800", "must be ASCII"),
    ("https://exämple.org/", "must be ASCII"),
    ("https://example.org:99999/", "not a valid URL"),
    ("https://example.org/" + "a" * 2048, "more than 2048"),
    (42, "must be a string"),
])
def test_a_bad_callback_url_is_refused_saying_why(url: object, problem: str) -> None:
    found = callbacks.url_problem(url)
    assert found is not None and problem in found


@pytest.mark.parametrize("url", ["https://portal.example.org/hook?job=1",
                                 "HTTP://10.0.0.1:8080/", "http://[::1]/x@y"])
def test_a_good_callback_url_passes(url: str) -> None:
    assert callbacks.url_problem(url) is None


def test_the_summary_names_the_job_and_its_outputs_but_no_inputs() -> None:
    sent = json.loads(callbacks.summary(job(message="done", exitCode=0)))
    assert sent == {
        "event": "job.ended", "id": "sim-1", "uid": "u-1", "namespace": "lab", "name": "sim",
        "computeResource": "hpc", "state": "Success", "phase": "Success", "message": "done",
        "exitCode": 0, "createdAt": "2025-12-31T23:00:00Z", "submittedAt": None,
        "finishedAt": ENDED, "output": {"out": {"class": "File", "location": "http://x/out"}}}
    assert b"hunter2" not in callbacks.summary(job())


def test_the_signature_verifies_as_the_docs_say_a_receiver_checks_it() -> None:
    body = callbacks.summary(job())
    headers = callbacks.headers("u-1", body, b"k3y", 1700000000)
    expected = hmac.new(b"k3y", headers["X-Cerise-Timestamp"].encode() + b"." + body,
                        hashlib.sha256).hexdigest()
    assert headers["X-Cerise-Signature"] == f"sha256={expected}"
    assert headers["X-Cerise-Delivery"] == "u-1"
    assert callbacks.signature(b"other", 1700000000, body) != headers["X-Cerise-Signature"]


def test_without_a_key_the_callback_is_sent_unsigned() -> None:
    headers = callbacks.headers("u-1", b"{}", None, 1700000000)
    assert "X-Cerise-Signature" not in headers
    assert headers["X-Cerise-Timestamp"] == "1700000000"


def test_the_delay_doubles_up_to_the_longest() -> None:
    plan = Schedule(first=5, longest=300, give_up=86400)
    assert [plan.delay(n) for n in (1, 2, 3, 6, 7, 1000)] == [5, 10, 20, 160, 300, 300]


def test_a_new_callback_is_delivered_at_once_and_a_failed_one_waits() -> None:
    plan = Schedule(first=5, longest=300, give_up=86400)
    assert callbacks.next_step(job(), plan, ENDED_AT) is DELIVER
    fields = callbacks.after_attempt(job()["status"], Outcome("HTTP 503"), plan, ENDED_AT + 1)
    assert fields == {"attempts": 1, "lastAttempt": "2026-01-01T00:00:01.000Z",
                      "lastResult": "HTTP 503", "nextAttempt": "2026-01-01T00:00:06.000Z"}
    failed = job(callback=fields)
    assert callbacks.next_step(failed, plan, ENDED_AT + 5.9) == Wait(ENDED_AT + 6)
    assert callbacks.next_step(failed, plan, ENDED_AT + 6) is DELIVER
    again = callbacks.after_attempt(failed["status"], Outcome("refused"), plan, ENDED_AT + 6)
    assert again["attempts"] == 2
    assert callbacks.next_step(job(callback=again), plan, ENDED_AT + 15) == Wait(ENDED_AT + 16)


def test_a_delivered_callback_is_done() -> None:
    plan = Schedule()
    fields = callbacks.after_attempt(job(callback={"attempts": 2})["status"],
                                     Outcome("HTTP 204", delivered=True), plan, ENDED_AT + 60)
    assert fields["delivered"] == "2026-01-01T00:01:00.000Z" and fields["attempts"] == 3
    assert fields["nextAttempt"] is None  # a merge patch: removes the stale one
    assert not callbacks.pending(job(callback=fields))
    assert callbacks.next_step(job(callback=fields), plan, ENDED_AT + 1e6) is None


def test_a_refused_address_is_given_up_at_once() -> None:
    fields = callbacks.after_attempt(job()["status"], Outcome("refused", final=True),
                                     Schedule(), ENDED_AT)
    assert "gaveUp" in fields and not callbacks.pending(job(callback=fields))


def test_it_is_given_up_when_the_next_try_would_come_too_late() -> None:
    plan = Schedule(first=5, longest=300, give_up=3600)
    status = job(callback={"attempts": 20, "lastAttempt": "2026-01-01T00:50:00Z"})["status"]
    kept = callbacks.after_attempt(status, Outcome("HTTP 500"), plan, ENDED_AT + 3300)
    assert "gaveUp" not in kept and kept["nextAttempt"] == "2026-01-01T01:00:00.000Z"
    late = callbacks.after_attempt(status, Outcome("HTTP 500"), plan, ENDED_AT + 3301)
    assert late["gaveUp"] == "2026-01-01T00:55:01.000Z" and late["lastResult"] == "HTTP 500"


def test_a_job_without_a_callback_has_nothing_to_deliver() -> None:
    body = job()
    del body["spec"]["callback"]
    assert not callbacks.pending(body)
    assert callbacks.next_step(body, Schedule(), ENDED_AT) is None


def test_a_long_result_is_cut_short() -> None:
    fields = callbacks.after_attempt({}, Outcome("x" * 5000), Schedule(), ENDED_AT)
    assert len(fields["lastResult"]) == callbacks.MAX_RESULT


def test_the_schedule_comes_from_the_environment() -> None:
    assert operator_callbacks.schedule({}) == Schedule(5, 300, 86400)
    assert operator_callbacks.schedule({"CERISE_CALLBACK_FIRST_RETRY_SECONDS": "0.5",
                                        "CERISE_CALLBACK_MAX_RETRY_SECONDS": "2",
                                        "CERISE_CALLBACK_GIVE_UP_SECONDS": "60"}
                                       ) == Schedule(0.5, 2, 60)
    with pytest.raises(ValueError, match="CERISE_CALLBACK_GIVE_UP_SECONDS must be a positive"):
        operator_callbacks.schedule({"CERISE_CALLBACK_GIVE_UP_SECONDS": "-1"})


@pytest.mark.parametrize(("url", "allowed"), [
    ("https://portal.example.org/hook?job=1", True), ("HTTP://10.0.0.1:8080/", True),
    ("http://[::1]/x@y", True), ("ftp://example.org/hook", False),
    ("https://user:pw@example.org/hook", False), ("https://example.org/a b", False),
    ("https:///hook", False), ("https://exämple.org/", False),
    ("https://example.org/\x7f", False), ("https://example.org/a\tb", False),
])
def test_the_crds_pattern_agrees(url: str, allowed: bool) -> None:
    crd = yaml.safe_load((Path(__file__).parents[2] / "crds" / "workflowjobs.yaml").read_text())
    spec = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    pattern = spec["properties"]["callback"]["properties"]["url"]["pattern"]
    assert bool(re.fullmatch(pattern, url)) is allowed
    assert (callbacks.url_problem(url) is None) is allowed


async def test_a_callback_to_a_private_address_is_refused_before_connecting() -> None:
    with pytest.raises(web.Refused, match=r"10\.0\.0\.5 is in a private range \(10\.0\.0\.0/8\)"):
        await web.post("http://10.0.0.5/hook", b"{}", {}, fence=Fence(), timeout=5)
