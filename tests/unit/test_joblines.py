"""A job's log as a user reads it: once the job has ended, the log says why, even when the
operator has written the final phase but not yet its log line."""

from __future__ import annotations

import datetime
from pathlib import Path
from types import SimpleNamespace
from typing import cast

from cerise.apiserver import workflowjobs
from cerise.apiserver.tenancy import Tenant
from cerise.model import joblines
from cerise.model.states import Phase
from cerise.operator import joblog

STAGED = "2026-12-07 05:17:32.299 INFO: Submitted: accepted\n"
FAILED = {"phase": "PermanentFailure", "message": "'extra' is not an input of the workflow",
          "finishedAt": "2026-12-07T05:17:33Z"}


def test_an_ended_job_whose_log_lacks_its_end_is_read_with_it() -> None:
    assert joblines.as_read(STAGED, FAILED) == STAGED + (
        "2026-12-07 05:17:33.000 ERROR: PermanentFailure: "
        "'extra' is not an input of the workflow\n")


def test_a_log_that_says_why_the_job_ended_is_read_as_it_is() -> None:
    written = STAGED + "2026-12-07 05:17:33.101 ERROR: PermanentFailure: " \
        "'extra' is not an input of the workflow\n"
    assert joblines.as_read(written, FAILED) == written
    # a later message (say, retention's) replaced the final one in the status
    assert joblines.as_read(STAGED + "… INFO: files removed\n",
                            {**FAILED, "message": "files removed"}).endswith("files removed\n")


def test_a_job_that_has_not_ended_is_read_as_its_log_is() -> None:
    for status in ({"phase": "Running", "message": "running"}, {}, None,
                   {"phase": "no such phase", "message": "x"},
                   {"phase": "Success", "message": None}):
        assert joblines.as_read(STAGED, status) == STAGED


def test_the_operator_and_the_api_server_write_the_same_line() -> None:
    when = datetime.datetime(2026, 12, 7, 5, 17, 33, 101000, tzinfo=datetime.UTC)
    assert joblines.line(when, "INFO", "Success: done") == \
        "2026-12-07 05:17:33.101 INFO: Success: done\n"
    assert joblines.level(Phase.SYSTEM_ERROR) == "ERROR"
    assert joblines.level(Phase.CANCELLED) == "INFO"


async def test_the_log_endpoint_ends_with_why_the_job_ended(tmp_path: Path) -> None:
    path = tmp_path / "logs" / "u-1.log"
    await joblog.message(path, "INFO", "Submitted: accepted")
    tenant = cast(Tenant, SimpleNamespace(
        exchange=SimpleNamespace(log_path=lambda uid: tmp_path / "logs" / f"{uid}.log")))
    body = {"metadata": {"uid": "u-1"}, "status": FAILED}
    text = await workflowjobs.log_text(tenant, body)
    assert text.startswith(path.read_text())
    assert text.endswith("ERROR: PermanentFailure: 'extra' is not an input of the workflow\n")
