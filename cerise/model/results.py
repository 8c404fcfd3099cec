"""A finished job's final phase, from its runner's exit code and the end of its log.

cwltool ends its log with `Final process status is success|permanentFail|temporaryFail`
and exits 0 on success, 1 on a failure, 33 on an unsupported requirement. The exit code is
authoritative (the original looked at the log alone); the log refines a failure:

* exit 0                                   → Success
* log says temporaryFail                   → TemporaryFailure
* log says permanentFail, or the workflow / input failed validation, or exit 33
                                           → PermanentFailure
* exit 143 (SIGTERM: time limit, scheduler kill)
                                           → PermanentFailure, "terminated"
* no exit code (the job vanished), or any other failure without those words
                                           → SystemError
"""

from __future__ import annotations

import re

from cerise.model.states import Phase

_STATUS = re.compile(r"Final process status is (\w+)")
_INVALID = re.compile(r"(Tool|Workflow) definition failed validation|"
                      r"Input object failed validation|failed validation:")
MESSAGE_LIMIT = 1000
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def strip_terminal_codes(text: str) -> str:
    """`text` without ANSI colour and cursor sequences (runners colour their logs)."""
    return _ANSI.sub("", text)


def _last_lines(log: str, count: int = 5) -> str:
    lines = [line.rstrip() for line in strip_terminal_codes(log).splitlines() if line.strip()]
    errors = [line for line in lines if "ERROR" in line or "error" in line.lower()]
    text = "\n".join((errors or lines)[-count:])
    return text[-MESSAGE_LIMIT:]


def final_phase(exit_code: int | None, log_tail: str) -> tuple[Phase, str]:
    """The final phase of a finished run and a message saying why."""
    if exit_code is None:
        return Phase.SYSTEM_ERROR, (
            "the job ended without recording an exit code: it was killed, or its node failed")
    statuses = _STATUS.findall(log_tail)
    status = statuses[-1] if statuses else ""
    if exit_code == 0 and status in ("", "success"):
        return Phase.SUCCESS, "the workflow finished successfully"
    detail = _last_lines(log_tail)
    if status == "temporaryFail":
        return Phase.TEMPORARY_FAILURE, f"the workflow failed temporarily:\n{detail}"
    if status == "permanentFail" or _INVALID.search(log_tail) or exit_code == 33:
        return Phase.PERMANENT_FAILURE, f"the workflow failed:\n{detail}"
    if exit_code == 143:
        return Phase.PERMANENT_FAILURE, (
            "the job was terminated (time limit reached, or stopped by the scheduler)")
    return Phase.SYSTEM_ERROR, f"the runner exited with status {exit_code}:\n{detail}"
