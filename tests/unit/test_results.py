"""Final phase from exit code and log."""

from __future__ import annotations

import pytest

from cerise.model.results import final_phase
from cerise.model.states import Phase

SUCCESS_LOG = "INFO [job wc] completed success\nINFO Final process status is success\n"
PERMANENT_LOG = (
    "ERROR [job wc] Job error:\n('Error collecting output for parameter output')\n"
    "WARNING [step wc] completed permanentFail\nINFO Final process status is permanentFail\n")


@pytest.mark.parametrize(
    ("code", "log", "phase", "words"),
    [
        (0, SUCCESS_LOG, Phase.SUCCESS, "successfully"),
        (0, "", Phase.SUCCESS, "successfully"),
        (1, PERMANENT_LOG, Phase.PERMANENT_FAILURE, "Error collecting output"),
        (1, "INFO Final process status is temporaryFail\n", Phase.TEMPORARY_FAILURE,
         "temporarily"),
        (1, "ERROR Tool definition failed validation:\nx.cwl:3:1: bad field\n",
         Phase.PERMANENT_FAILURE, "failed validation"),
        (33, "ERROR Workflow or tool uses unsupported feature:\n", Phase.PERMANENT_FAILURE,
         "unsupported feature"),
        (143, "", Phase.PERMANENT_FAILURE, "time limit"),
        (None, SUCCESS_LOG, Phase.SYSTEM_ERROR, "without recording an exit code"),
        (2, "Traceback (most recent call last):\nKeyError: 'x'\n", Phase.SYSTEM_ERROR,
         "exited with status 2"),
        (0, "INFO Final process status is permanentFail\n", Phase.PERMANENT_FAILURE, "failed"),
    ],
)
def test_final_phase(code: int | None, log: str, phase: Phase, words: str) -> None:
    result, message = final_phase(code, log)
    assert result is phase
    assert words in message


def test_message_is_bounded() -> None:
    log = "ERROR " + "x" * 100_000 + "\nFinal process status is permanentFail"
    _, message = final_phase(1, log)
    assert len(message) < 1100


def test_terminal_colours_are_stripped() -> None:
    log = ("\x1b[1;30mERROR\x1b[0m \x1b[31mInvalid filename\x1b[0m\n"
           "Final process status is permanentFail")
    _, message = final_phase(1, log)
    assert "\x1b" not in message
    assert "ERROR Invalid filename" in message
