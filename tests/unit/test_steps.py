"""Per-step status and a failed step's reason, from real cwltool logs."""

from __future__ import annotations

import pytest

from cerise.model.results import MESSAGE_LIMIT
from cerise.model.steps import LIMIT, NAME_LIMIT, Step, failure, update

# The stderr of cwltool 3.3.20260925135507 running workflows of the example project's
# steps (`specialisations/example/cerise/steps/cerise/test/`); all but the first without
# their colour codes.
TWO_STEPS = (  # a two-step workflow, as cwltool writes it (with colours)
    "\x1b[1;30mINFO\x1b[0m /usr/local/bin/cwltool 3.3.20260925135507\n"
    "\x1b[1;30mINFO\x1b[0m Resolved 'two.cwl' to 'file:///tmp/steps-capture/two.cwl'\n"
    "\x1b[1;30mINFO\x1b[0m [workflow ] start\n"
    "\x1b[1;30mINFO\x1b[0m [workflow ] starting step host\n"
    "\x1b[1;30mINFO\x1b[0m [step host] start\n"
    "\x1b[1;30mINFO\x1b[0m [job host] /tmp/i24qn3gv$ hostname > /tmp/i24qn3gv/output.txt\n"
    "\x1b[1;30mINFO\x1b[0m [job host] completed success\n"
    "\x1b[1;30mINFO\x1b[0m [step host] completed success\n"
    "\x1b[1;30mINFO\x1b[0m [workflow ] starting step wc\n"
    "\x1b[1;30mINFO\x1b[0m [step wc] start\n"
    "\x1b[1;30mINFO\x1b[0m [job wc] /tmp/1if3093m$ wc \\\n"
    "    /tmp/0ghvxupu/stg19fb2865-df52-41b4-8234-68c9b1b9919a/output.txt > /tmp/1if3"
    "093m/output.txt\n"
    "\x1b[1;30mINFO\x1b[0m [job wc] completed success\n"
    "\x1b[1;30mINFO\x1b[0m [step wc] completed success\n"
    "\x1b[1;30mINFO\x1b[0m [workflow ] completed success\n"
    "\x1b[1;30mINFO\x1b[0m Final process status is success\n"
)
FAILING = (  # the second step is `fail.cwl`
    "INFO /usr/local/bin/cwltool 3.3.20260925135507\n"
    "INFO Resolved 'fail.cwl' to 'file:///tmp/steps-capture/fail.cwl'\n"
    "INFO [workflow ] start\n"
    "INFO [workflow ] starting step host\n"
    "INFO [step host] start\n"
    "INFO [job host] /tmp/od05ssvj$ hostname > /tmp/od05ssvj/output.txt\n"
    "INFO [job host] completed success\n"
    "INFO [step host] completed success\n"
    "INFO [workflow ] starting step boom\n"
    "INFO [step boom] start\n"
    "INFO [job boom] /tmp/gk4nvlrc$ bash \\\n"
    "    -c \\\n"
    '    \'echo "failing on purpose" >&2; exit 3\'\n'
    "failing on purpose\n"
    "WARNING [job boom] exited with status: 3\n"
    "ERROR [job boom] Job error:\n"
    "Error collecting output for parameter 'never': ../../work/main/specialisations/e"
    "xample/cerise/steps/cerise/test/fail.cwl:10:7: Did not find output file with glo"
    "b pattern: ['never.txt'].\n"
    "WARNING [job boom] completed permanentFail\n"
    "ERROR [step boom] Output is missing expected field file:///tmp/steps-capture/fai"
    "l.cwl#boom/never\n"
    "WARNING [step boom] completed permanentFail\n"
    "INFO [workflow ] completed permanentFail\n"
    "WARNING Final process status is permanentFail\n"
)
SCATTER_AND_NESTED = (  # a scattered step `wc`, then a nested workflow `sub` with a step `wc`
    "INFO /usr/local/bin/cwltool 3.3.20260925135507\n"
    "INFO Resolved 'scatter.cwl' to 'file:///tmp/steps-capture/scatter.cwl'\n"
    "INFO [workflow ] start\n"
    "INFO [workflow ] starting step wc\n"
    "INFO [step wc] start\n"
    "INFO [job wc] /tmp/i3_dc9q4$ wc \\\n"
    "    /tmp/nm8zbdbv/stg1735c193-c36d-4450-9518-9168a9c736b2/words.txt > /tmp/i3_dc"
    "9q4/output.txt\n"
    "INFO [job wc] completed success\n"
    "INFO [step wc] start\n"
    "INFO [job wc_2] /tmp/qhoophiy$ wc \\\n"
    "    /tmp/imfnwvn9/stg50c1bb36-8442-47f2-b61c-ce90ba43422e/words.txt > /tmp/qhoop"
    "hiy/output.txt\n"
    "INFO [job wc_2] completed success\n"
    "INFO [step wc] completed success\n"
    "INFO [workflow ] starting step sub\n"
    "INFO [step sub] start\n"
    "INFO [workflow sub] start\n"
    "INFO [workflow sub] starting step wc_2\n"
    "INFO [step wc_2] start\n"
    "INFO [job wc_3] /tmp/l3kahtw_$ hostname > /tmp/l3kahtw_/output.txt\n"
    "INFO [job wc_3] completed success\n"
    "INFO [step wc_2] completed success\n"
    "INFO [workflow sub] completed success\n"
    "INFO [step sub] completed success\n"
    "INFO [workflow ] completed success\n"
    "INFO Final process status is success\n"
)
NESTED_FAILING = (  # a nested workflow `sub` whose step `boom` fails
    "INFO /usr/local/bin/cwltool 3.3.20260925135507\n"
    "INFO Resolved 'collide.cwl' to 'file:///tmp/steps-capture/collide.cwl'\n"
    "INFO [workflow ] start\n"
    "INFO [workflow ] starting step host\n"
    "INFO [step host] start\n"
    "INFO [job host] /tmp/aw5h1e6z$ hostname > /tmp/aw5h1e6z/output.txt\n"
    "INFO [job host] completed success\n"
    "INFO [step host] completed success\n"
    "INFO [workflow ] starting step sub\n"
    "INFO [step sub] start\n"
    "INFO [workflow sub] start\n"
    "INFO [workflow sub] starting step boom\n"
    "INFO [step boom] start\n"
    "INFO [job boom] /tmp/yzmzwv1x$ bash \\\n"
    "    -c \\\n"
    '    \'echo "failing on purpose" >&2; exit 3\'\n'
    "failing on purpose\n"
    "WARNING [job boom] exited with status: 3\n"
    "ERROR [job boom] Job error:\n"
    "Error collecting output for parameter 'never': ../../work/main/specialisations/e"
    "xample/cerise/steps/cerise/test/fail.cwl:10:7: Did not find output file with glo"
    "b pattern: ['never.txt'].\n"
    "WARNING [job boom] completed permanentFail\n"
    "ERROR [step boom] Output is missing expected field file:///tmp/steps-capture/col"
    "lide.cwl#sub/run/boom/never\n"
    "WARNING [step boom] completed permanentFail\n"
    "INFO [workflow sub] completed permanentFail\n"
    "WARNING [step sub] completed permanentFail\n"
    "INFO [workflow ] completed permanentFail\n"
    "WARNING Final process status is permanentFail\n"
)
SKIPPED_THEN_TEMPORARY = (  # a step skipped by `when`, then one that exits with 75
    "INFO /usr/local/bin/cwltool 3.3.20260925135507\n"
    "INFO Resolved 'skip.cwl' to 'file:///tmp/steps-capture/skip.cwl'\n"
    "INFO [workflow ] start\n"
    "INFO [workflow ] starting step maybe\n"
    "INFO [step maybe] will be skipped\n"
    "INFO [step maybe] completed skipped\n"
    "INFO [workflow ] starting step later\n"
    "INFO [step later] start\n"
    "INFO [job later] /tmp/my16t0a1$ bash \\\n"
    "    -c \\\n"
    '    \'echo "try later" >&2; exit 75\'\n'
    "try later\n"
    "WARNING [job later] exited with status: 75\n"
    "WARNING [job later] completed temporaryFail\n"
    "WARNING [step later] completed temporaryFail\n"
    "INFO [workflow ] completed temporaryFail\n"
    "WARNING Final process status is temporaryFail\n"
)
SCATTER_FAILING = (  # the second job of a scattered step fails
    "INFO /usr/local/bin/cwltool 3.3.20260925135507\n"
    "INFO Resolved 'scatterfail.cwl' to 'file:///tmp/steps-capture/scatterfail.cwl'\n"
    "INFO [workflow ] start\n"
    "INFO [workflow ] starting step check\n"
    "INFO [step check] start\n"
    "INFO [job check] /tmp/p4_xmojn$ bash \\\n"
    "    -c \\\n"
    "    'exit $0' \\\n"
    "    0\n"
    "INFO [job check] completed success\n"
    "INFO [step check] start\n"
    "INFO [job check_2] /tmp/v4d7u9kz$ bash \\\n"
    "    -c \\\n"
    "    'exit $0' \\\n"
    "    4\n"
    "WARNING [job check_2] exited with status: 4\n"
    "WARNING [job check_2] completed permanentFail\n"
    "WARNING [step check] completed permanentFail\n"
    "INFO [workflow ] completed permanentFail\n"
    "WARNING Final process status is permanentFail\n"
)

T1, T2, T3 = "2026-11-25T12:00:00Z", "2026-11-25T12:00:05Z", "2026-11-25T12:00:09Z"


def states(steps: list[Step]) -> list[tuple[str, str]]:
    return [(step["name"], step["state"]) for step in steps]


def test_two_steps_read_in_two_parts() -> None:
    cut = TWO_STEPS.index("\x1b[1;30mINFO\x1b[0m [job wc]")
    first = update([], TWO_STEPS[:cut].splitlines(), T1)
    assert first == [
        {"name": "host", "state": "Success", "startTime": T1, "endTime": T1},
        {"name": "wc", "state": "Running", "startTime": T1},
    ]
    second = update(first, TWO_STEPS[cut:].splitlines(), T2)
    assert second == [
        {"name": "host", "state": "Success", "startTime": T1, "endTime": T1},
        {"name": "wc", "state": "Success", "startTime": T1, "endTime": T2},
    ]
    assert first[1] == {"name": "wc", "state": "Running", "startTime": T1}, "input unchanged"


def test_line_by_line_times() -> None:
    steps: list[Step] = []
    for number, line in enumerate(TWO_STEPS.splitlines()):
        steps = update(steps, [line], f"2026-11-25T12:00:{number:02}Z")
    assert steps == [
        {"name": "host", "state": "Success", "startTime": "2026-11-25T12:00:03Z",
         "endTime": "2026-11-25T12:00:07Z"},
        {"name": "wc", "state": "Success", "startTime": "2026-11-25T12:00:08Z",
         "endTime": "2026-11-25T12:00:13Z"},
    ]


def test_lines_seen_twice_change_nothing() -> None:
    once = update([], FAILING.splitlines(), T1)
    assert update(once, FAILING.splitlines(), T2) == once


@pytest.mark.parametrize(
    ("log", "expected"),
    [
        (FAILING, [("host", "Success"), ("boom", "PermanentFailure")]),
        (SCATTER_AND_NESTED, [("wc", "Success"), ("sub", "Success"), ("wc_2", "Success")]),
        (NESTED_FAILING, [("host", "Success"), ("sub", "PermanentFailure"),
                          ("boom", "PermanentFailure")]),
        (SKIPPED_THEN_TEMPORARY, [("maybe", "Skipped"), ("later", "TemporaryFailure")]),
        (SCATTER_FAILING, [("check", "PermanentFailure")]),
        ("INFO [job wc] completed success\nWARNING Final process status is permanentFail\n"
         "Traceback (most recent call last):\n", []),
    ],
)
def test_states(log: str, expected: list[tuple[str, str]]) -> None:
    steps = update([], log.splitlines(), T1)
    assert states(steps) == expected
    assert all(step["endTime"] == T1 for step in steps)


def test_a_scattered_step_starts_once() -> None:
    cut = SCATTER_AND_NESTED.index("INFO [job wc] completed success")
    steps = update(update([], SCATTER_AND_NESTED[:cut].splitlines(), T1),
                   SCATTER_AND_NESTED[cut:].splitlines(), T2)
    assert steps[0] == {"name": "wc", "state": "Success", "startTime": T1, "endTime": T2}


def test_an_end_without_a_start_takes_no_time() -> None:
    assert update([], ["INFO [step wc] completed success"], T3) == [
        {"name": "wc", "state": "Success", "startTime": T3, "endTime": T3}]


def test_timestamps_and_unknown_statuses() -> None:
    steps = update([], ["[2026-11-25 12:00:00] INFO [step a] start",
                        "[2026-11-25 12:00:01] WARNING [step a] completed kill"], T1)
    assert states(steps) == [("a", "PermanentFailure")]


def test_at_most_limit_steps_with_bounded_names() -> None:
    lines = [f"INFO [step s{n}] start" for n in range(LIMIT + 10)]
    lines += [f"INFO [step s{n}] completed success" for n in range(LIMIT + 10)]
    lines.append(f"INFO [step {'x' * 1000}] start")
    steps = update([], lines, T1)
    assert len(steps) == LIMIT
    assert steps[-1] == {"name": f"s{LIMIT - 1}", "state": "Success", "startTime": T1,
                         "endTime": T1}
    assert update([], [f"INFO [step {'x' * 1000}] start"], T1)[0]["name"] == "x" * NAME_LIMIT


def test_failed_step_and_the_runners_reason() -> None:
    message = failure(FAILING)
    assert message is not None
    assert message.startswith(
        "step boom failed: exited with status: 3; Job error: Error collecting output for "
        "parameter 'never': ")
    assert "Did not find output file with glob pattern: ['never.txt']" in message
    assert "Output is missing expected field" in message
    assert "failing on purpose" not in message, "the tool's own output is not the reason"


@pytest.mark.parametrize(
    ("log", "expected"),
    [
        (NESTED_FAILING, "step boom failed: exited with status: 3; Job error: "),
        (SKIPPED_THEN_TEMPORARY, "step later failed: exited with status: 75"),
        (SCATTER_FAILING, "step check failed: exited with status: 4"),
        # Only the end of the log: the step's start is cut off.
        (FAILING[FAILING.index("WARNING [job boom]"):], "step boom failed: exited with "),
        (SCATTER_AND_NESTED.replace(
            "INFO [job wc_3] completed success\nINFO [step wc_2] completed success",
            "WARNING [job wc_3] exited with status: 1\nWARNING [step wc_2] completed "
            "permanentFail"), "step wc_2 failed: exited with status: 1"),
        ("WARNING [step a] completed permanentFail\n", "step a failed: no reason given"),
    ],
)
def test_failure(log: str, expected: str) -> None:
    message = failure(log)
    assert message is not None
    assert message.startswith(expected)


def test_no_failure() -> None:
    assert failure(TWO_STEPS) is None
    assert failure(SCATTER_AND_NESTED) is None
    assert failure("ERROR Tool definition failed validation:\nx.cwl:3:1: bad field\n") is None


def test_failure_message_is_bounded() -> None:
    log = "ERROR [job a] " + "x" * 100_000 + "\nWARNING [step a] completed permanentFail\n"
    message = failure(log)
    assert message is not None
    assert len(message) == MESSAGE_LIMIT
