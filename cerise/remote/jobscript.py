"""Shell scripts that run on the compute resource: the job script and the exactly-once submit.

Pure builders: each returns the text of a bash script; every value in it is quoted.

Job directory layout (`<base>/jobs/<job uid>/`)::

    workflow.json  input.json   what the runner runs
    work/          the runner's working directory (staged inputs, outputs)
    stdout.txt     the runner's output object (CWL output JSON)
    stderr.txt     the runner's log
    job.sh         the job script
    started        written when the job script starts (its start time, epoch seconds)
    exit_code      written when the runner ends (143 if the job was terminated)
    submit.lock/   made atomically by the first submit; later submits find it
    remote_id      the scheduler's id for the job, written once by the submit that won

The markers exist because finished jobs vanish from batch queues and accounting may be
off: `exit_code` is the only reliable word that a job has ended.

Exactly once: the submit script takes `submit.lock` with `mkdir` (atomic on every POSIX
file system, NFS included) before it submits, and records the scheduler's id in
`remote_id`. A repeated submit (after an operator crash at any instruction) finds the lock
and prints the recorded id instead of submitting again. The script ignores SIGHUP and
SIGPIPE so that a dropped SSH channel cannot stop it between submitting and recording the
id; its children inherit that. If a lock holder has not recorded an id within
`wait_seconds`, the submit reports that the outcome is unknown rather than risk a second
submission.
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

SUBMITTED_PREFIX = "cerise-remote-id: "
"""The submit script's last line on success: this prefix, then the scheduler's id."""

UNKNOWN_MARK = "cerise-submit-unknown"
"""Printed instead of an id when an earlier submit holds the lock but recorded no id."""


class SubmitOutcome(StrEnum):
    """What a submit (or lookup) script reported."""

    SUBMITTED = "submitted"
    UNKNOWN = "unknown"
    FAILED = "failed"
    NOT_SUBMITTED = "not submitted"


@dataclass(frozen=True)
class SubmitResult:
    """The parsed result of running a submit script."""

    outcome: SubmitOutcome
    remote_id: str = ""
    detail: str = ""


@dataclass(frozen=True)
class JobFiles:
    """The absolute paths of one job's files on the compute resource."""

    job_dir: str

    def _path(self, name: str) -> str:
        return f"{self.job_dir.rstrip('/')}/{name}"

    @property
    def work(self) -> str:
        return self._path("work")

    @property
    def workflow(self) -> str:
        return self._path("workflow.json")

    @property
    def input(self) -> str:
        return self._path("input.json")

    @property
    def stdout(self) -> str:
        return self._path("stdout.txt")

    @property
    def stderr(self) -> str:
        return self._path("stderr.txt")

    @property
    def script(self) -> str:
        return self._path("job.sh")

    @property
    def started(self) -> str:
        return self._path("started")

    @property
    def exit_code(self) -> str:
        return self._path("exit_code")

    @property
    def lock(self) -> str:
        return self._path("submit.lock")

    @property
    def remote_id(self) -> str:
        return self._path("remote_id")


def _atomic_write(path: str, value: str) -> str:
    """Shell text writing `value` (a shell word) and a newline to `path` via rename."""
    tmp = shlex.quote(f"{path}.tmp")
    return f"printf '%s\\n' {value} > {tmp} && mv {tmp} {shlex.quote(path)}"


def job_script(files: JobFiles, runner: Sequence[str], prologue: str = "") -> str:
    """The job script: run the CWL runner in `work/`, with `started` and `exit_code` markers.

    `runner` is the runner's argv before the workflow and input paths (e.g. ["cwltool"]).
    `prologue` is shell text run first (the resource's environment), already quoted.
    On SIGTERM (scancel, a time limit, a cancel of a direct job) or SIGUSR2 (Grid Engine's
    warning before it kills a job submitted with -notify) the runner is terminated too and
    `exit_code` records 143.
    """
    q = shlex.quote
    argv = " ".join(q(arg) for arg in (*runner, files.workflow, files.input))
    return f"""#!/bin/bash
runner=
terminated=
trap 'terminated=1; [ -n "$runner" ] && kill -TERM "$runner" 2>/dev/null' TERM USR2
{prologue}
cd {q(files.work)} || exit 1
{_atomic_write(files.started, '"$(date +%s)"')}
{argv} > {q(files.stdout)} 2> {q(files.stderr)} &
runner=$!
[ -n "$terminated" ] && kill -TERM "$runner" 2>/dev/null
while :; do
    wait "$runner"
    code=$?
    kill -0 "$runner" 2>/dev/null || break
done
[ -n "$terminated" ] && code=143
{_atomic_write(files.exit_code, '"$code"')}
exit "$code"
"""


def _report_recorded_id(files: JobFiles, wait_seconds: int) -> str:
    """Shell text printing the recorded id once there is one, or UNKNOWN_MARK after a wait."""
    q = shlex.quote
    return f"""for _ in $(seq {int(wait_seconds) * 10}); do
    if [ -s {q(files.remote_id)} ]; then
        printf '{SUBMITTED_PREFIX}%s\\n' "$(cat {q(files.remote_id)})"
        exit 0
    fi
    sleep 0.1
done
echo {UNKNOWN_MARK}"""


def submit_script(files: JobFiles, submit: str, wait_seconds: int = 60) -> str:
    """A script that submits the job at most once, whatever happened before.

    `submit` is the scheduler's submit command as quoted shell text; it must print only
    the scheduler's id on stdout. Returns, on stdout's last line, either
    `SUBMITTED_PREFIX + id` or `UNKNOWN_MARK`; a failed submit exits non-zero with the
    scheduler's message on stderr and releases the lock so that a retry may submit.
    """
    q = shlex.quote
    return f"""#!/bin/bash
trap '' HUP PIPE
if mkdir {q(files.lock)} 2>/dev/null; then
    id=$({submit})
    status=$?
    if [ "$status" -eq 0 ] && [ -n "$id" ]; then
        {_atomic_write(files.remote_id, '"$id"')}
    else
        rmdir {q(files.lock)}
        [ "$status" -eq 0 ] && echo "the submit command printed no job id" >&2
        exit $(( status == 0 ? 1 : status ))
    fi
fi
{_report_recorded_id(files, wait_seconds)}
"""


NOT_SUBMITTED_MARK = "cerise-not-submitted"


def lookup_script(files: JobFiles, wait_seconds: int = 60) -> str:
    """A script that reports an earlier submission's id without ever submitting.

    Prints like `submit_script` if the job was submitted (waiting for a submit still in
    flight to record its id), or `NOT_SUBMITTED_MARK` if it never was.
    """
    return f"""#!/bin/bash
if [ ! -d {shlex.quote(files.lock)} ]; then echo {NOT_SUBMITTED_MARK}; exit 0; fi
{_report_recorded_id(files, wait_seconds)}
"""


def parse_submit(exit_status: int, stdout: str, stderr: str) -> SubmitResult:
    """Interpret the exit status and output of a submit script."""
    lines = stdout.strip().splitlines()
    last = lines[-1] if lines else ""
    if exit_status == 0 and last.startswith(SUBMITTED_PREFIX):
        remote_id = last[len(SUBMITTED_PREFIX):].strip()
        if remote_id:
            return SubmitResult(SubmitOutcome.SUBMITTED, remote_id=remote_id)
    if exit_status == 0 and last == NOT_SUBMITTED_MARK:
        return SubmitResult(SubmitOutcome.NOT_SUBMITTED)
    if exit_status == 0 and last == UNKNOWN_MARK:
        return SubmitResult(
            SubmitOutcome.UNKNOWN,
            detail="an earlier submit holds the lock but recorded no scheduler id",
        )
    detail = stderr.strip() or stdout.strip() or f"submit exited with status {exit_status}"
    return SubmitResult(SubmitOutcome.FAILED, detail=detail[-2000:])
