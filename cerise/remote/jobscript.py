"""Shell scripts that run on the compute resource: the job script and the exactly-once submit.

Pure builders: each returns the text of a bash script; every value in it is quoted.

Job directory layout (`<base>/jobs/<job uid>/`)::

    workflow.json  input.json   what the runner runs
    work/          the runner's working directory (staged inputs, outputs)
    stdout.txt     the runner's output object (CWL output JSON)
    stderr.txt     the runner's log
    job.sh         the job script
    started        written when the job script starts (its start time, epoch seconds)
    terminated     written when the job script is first signalled: `TERM <time>` or
                   `USR2 <time>` (a scheduler's stop, a cancel), or `LIMIT <time>` when its
                   own time limit (scheduler `none`) stopped the runner
    exit_code      written when the runner ends (`TERMINATED_CODE` if it was stopped)
    accounting.json  what the run cost, as the job script measured it
                   (`cerise.remote.measurement`), written just before `exit_code`
    submit.lock/   made atomically by the first submit; later submits find it
    remote_id      the scheduler's id for the job, written once by the submit that won
    submit_failed  written when a submit failed: it may have created the job all the same

Beside the job directories, `<base>/jobs/.cerise-python3` names the Python interpreter a job
script found for its measurement (`python3`, which may be a slow shim such as pyenv's):
the jobs after it start that one at once while it is there, with no look for it first.

A scheduler that requeues a job (Slurm after a preemption) runs its script again: such a
rerun says which it is after the time in `started` and after the code in `exit_code`
(`143 1`: restart 1, from the scheduler's `restart_variable`; nothing for the first run),
and removes the earlier run's `exit_code` and `terminated` as it starts, so that the
poller never takes the end of a run the scheduler reran for the job's end
(`cerise.remote.schedulers.observe`).

A job submitted again with more time or memory (`cerise.model.retries`) runs in the same
directory, from the same staged inputs: its attempt N > 1 has markers, lock, id and job
script of its own, named with a `.N` suffix (`exit_code.2`, `submit.lock.2`, `job.sh.2`),
so the earlier attempt's are left as they were and submitting stays exactly once per
attempt. `stdout.txt` and `stderr.txt` are the latest attempt's.

The markers exist because finished jobs vanish from batch queues and accounting may be
off: `exit_code` is the only reliable word that a job has ended, and `terminated` says
why when it was stopped. They are written by bash builtins (no process a signal to the
job's process group could kill), and `exit_code` with the signals ignored, so a second
signal cannot cut it short; only a KILL can, and then `terminated` is already there.

Exactly once: the submit script takes `submit.lock` with `mkdir` (atomic on every POSIX
file system, NFS included) before it submits, and records the scheduler's id in
`remote_id`. A repeated submit (after an operator crash at any instruction) finds the lock
and prints the recorded id instead of submitting again. The script ignores SIGHUP and
SIGPIPE so that a dropped SSH channel cannot stop it between submitting and recording the
id; its children inherit that. If a lock holder has not recorded an id within
`wait_seconds`, the submit reports that the outcome is unknown rather than risk a second
submission. A submit that failed or was refused releases the lock, so a later one may
submit — but a failure may be a time-out after the scheduler created the job ("Socket
timed out"), so it leaves `submit_failed`, and the next submit takes the lock and stops,
saying `LOOKUP_MARK`: the caller looks for the job by its name on the scheduler
(`cerise.remote.schedulers.Searching`) and records what it finds (`record_script`) or
submits with the lock it holds (`submit_script(..., looked_up=True)`).
"""

from __future__ import annotations

import posixpath
import shlex
from collections.abc import Sequence
from dataclasses import dataclass

from cerise.model.observations import SubmitOutcome as SubmitOutcome
from cerise.remote.measurement import MEASURE_PY

SUBMITTED_PREFIX = "cerise-remote-id: "
"""The submit script's last line on success: this prefix, then the scheduler's id."""

UNKNOWN_MARK = "cerise-submit-unknown"
"""Printed instead of an id when an earlier submit holds the lock but recorded no id."""
LOOKUP_MARK = "cerise-submit-look-up"
"""Printed when an earlier submit failed: look for the job on the scheduler first."""
STARTED_LINE = "--cerise-started--"
"""Starts the line of a search that says whether the job script ever started."""


TERMINATED_CODE = 143
"""The exit code a job script records when it was stopped (a signal, or its time limit)."""
TIME_LIMIT_VARIABLE = "CERISE_TIME_LIMIT"
"""Seconds; set in its environment, the job script stops the runner itself at that limit."""
KILL_GRACE = 30
"""Seconds a runner stopped at the job script's own time limit has before it is killed."""


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
    attempt: int = 1
    """Which run of the job (see above): the markers, lock and script are this one's."""

    def _path(self, name: str) -> str:
        return f"{self.job_dir.rstrip('/')}/{name}"

    def _own(self, name: str) -> str:
        """The attempt's own file `name`."""
        return self._path(name if self.attempt <= 1 else f"{name}.{self.attempt}")

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
        return self._own("job.sh")

    @property
    def started(self) -> str:
        return self._own("started")

    @property
    def terminated(self) -> str:
        return self._own("terminated")

    @property
    def exit_code(self) -> str:
        return self._own("exit_code")

    @property
    def accounting(self) -> str:
        return self._own("accounting.json")

    @property
    def python(self) -> str:
        """Where the resource's jobs note the Python interpreter they measure with."""
        return f"{posixpath.dirname(self.job_dir.rstrip('/'))}/.cerise-python3"

    @property
    def lock(self) -> str:
        return self._own("submit.lock")

    @property
    def remote_id(self) -> str:
        return self._own("remote_id")

    @property
    def submit_failed(self) -> str:
        return self._own("submit_failed")


def _atomic_write(path: str, value: str) -> str:
    """Shell text writing `value` (a shell word) and a newline to `path` via rename."""
    tmp = shlex.quote(f"{path}.tmp")
    return f"printf '%s\\n' {value} > {tmp} && mv {tmp} {shlex.quote(path)}"


def job_script(
    files: JobFiles, runner: Sequence[str], prologue: str = "", directives: Sequence[str] = (),
    restart_variable: str = "",
) -> str:
    """The job script: run the CWL runner in `work/`, with its markers (see above).

    `runner` is the runner's argv before the workflow and input paths (e.g. ["cwltool"]).
    `prologue` is shell text run first (the resource's environment), already quoted.
    `directives` are comment lines for the scheduler (`#PBS ...`), right after `#!`.
    On SIGTERM (scancel, a time limit, a cancel of a direct job) or SIGUSR2 (Grid Engine's
    warning before it kills a job submitted with -notify) the runner is terminated too and
    `exit_code` records `TERMINATED_CODE`; so it does when the runner itself died of
    either signal (a scheduler signals every process of the job, and the runner may end
    before the script's trap runs). With `TIME_LIMIT_VARIABLE` in its environment the
    script stops the runner (and everything it started) at that many seconds itself. Where
    the resource has `python3`, the runner runs under `cerise.remote.measurement`, which
    writes `accounting.json`. `restart_variable` names the environment variable in which
    the scheduler says how many times it has requeued the job (`SLURM_RESTART_COUNT`);
    see above.
    """
    if restart_variable and not restart_variable.isidentifier():
        raise ValueError(f"not a variable name: {restart_variable[:100]!r}")
    for line in directives:
        if not line.startswith("#") or any(ord(char) < 32 for char in line):
            raise ValueError(f"not a one-line directive: {line[:100]!r}")
    q = shlex.quote
    argv = "${__cerise_measure[@]+\"${__cerise_measure[@]}\"} " + " ".join(
        q(arg) for arg in (*runner, files.workflow, files.input))
    output = f"> {q(files.stdout)} 2> {q(files.stderr)}"
    header = "".join(f"{line}\n" for line in directives)
    rerun = "" if not restart_variable else f"""\
[[ ${{{restart_variable}:-}} =~ ^[1-9][0-9]{{0,8}}$ ]] && __cerise_run=" ${restart_variable}"
[ -n "$__cerise_run" ] && rm -f {q(files.exit_code)} {q(files.terminated)}
"""
    return f"""#!/bin/bash
{header}__cerise_limit=${{{TIME_LIMIT_VARIABLE}:-}}
unset {TIME_LIMIT_VARIABLE}
__cerise_run=
{rerun}__cerise_runner= __cerise_signal=
__cerise_stop() {{
    if [ -z "$__cerise_signal" ]; then
        __cerise_signal=$1
        printf '%s %(%s)T\\n' "$1" -1 > {q(files.terminated)}
    fi
    [ -n "$__cerise_runner" ] && kill -TERM "$__cerise_runner" 2>/dev/null
}}
trap '__cerise_stop TERM' TERM
trap '__cerise_stop USR2' USR2
{prologue}
cd {q(files.work)} || exit 1
__cerise_measure=() __cerise_measure_py={q(MEASURE_PY)} __cerise_python=
{{ read -r __cerise_python < {q(files.python)}; }} 2>/dev/null
if ! [ -x "$__cerise_python" ]; then
    __cerise_python=$(python3 -I -S -c "$__cerise_measure_py" --check 2>/dev/null) &&
        [ -x "$__cerise_python" ] && {{ printf '%s\\n' "$__cerise_python" > {q(files.python)}.$$ &&
        mv -f {q(files.python)}.$$ {q(files.python)}; }} 2>/dev/null
fi
[ -x "$__cerise_python" ] &&
    __cerise_measure=("$__cerise_python" -I -S -c "$__cerise_measure_py" {q(files.accounting)})
printf '%(%s)T%s\\n' -1 "$__cerise_run" > {q(files.started)}
printf -v __cerise_begun '%(%s)T' -1
if [ -n "$__cerise_limit" ]; then
    timeout -s TERM -k {KILL_GRACE} "$__cerise_limit" {argv} {output} &
else
    {argv} {output} &
fi
__cerise_runner=$!
[ -n "$__cerise_signal" ] && kill -TERM "$__cerise_runner" 2>/dev/null
while :; do
    wait "$__cerise_runner"
    __cerise_code=$?
    kill -0 "$__cerise_runner" 2>/dev/null || break
done
trap '' TERM USR2
printf -v __cerise_now '%(%s)T' -1
if [ -z "$__cerise_signal" ]; then
    case $__cerise_code in
        # The scheduler signalled every process and the runner went first.
        {TERMINATED_CODE}) __cerise_signal=TERM ;;
        140) __cerise_signal=USR2 ;;
        # `timeout`: 124 after its TERM, 137 when it had to KILL.
        124|137) [ -n "$__cerise_limit" ] &&
            [ $((__cerise_now - __cerise_begun)) -ge "$__cerise_limit" ] &&
            __cerise_signal=LIMIT ;;
    esac
    [ -n "$__cerise_signal" ] &&
        printf '%s %s\\n' "$__cerise_signal" "$__cerise_now" > {q(files.terminated)}
fi
[ -n "$__cerise_signal" ] && __cerise_code={TERMINATED_CODE}
{_atomic_write(files.exit_code, '"$__cerise_code$__cerise_run"')}
exit "$__cerise_code"
"""


def _report_recorded_id(files: JobFiles, wait_seconds: int) -> str:
    """Shell text printing the recorded id once there is one, or after a wait LOOKUP_MARK
    (an earlier submit failed) or UNKNOWN_MARK."""
    q = shlex.quote
    return f"""__cerise_waited=0
until [ -s {q(files.remote_id)} ]; do
    if [ "$__cerise_waited" -ge {int(wait_seconds) * 10} ]; then
        if [ -e {q(files.submit_failed)} ]; then echo {LOOKUP_MARK}; else echo {UNKNOWN_MARK}; fi
        exit 0
    fi
    sleep 0.1
    __cerise_waited=$((__cerise_waited + 1))
done
printf '{SUBMITTED_PREFIX}%s\\n' "$(cat {q(files.remote_id)})"
"""


def submit_script(files: JobFiles, submit: str, wait_seconds: int = 60,
                  looked_up: bool = False) -> str:
    """A script that submits the job at most once, whatever happened before.

    `submit` is the scheduler's submit command as quoted shell text; it must print only
    the scheduler's id on stdout. Returns, on stdout's last line, either
    `SUBMITTED_PREFIX + id`, `UNKNOWN_MARK` or `LOOKUP_MARK` (an earlier submit failed: it
    stops holding the lock); a failed submit exits non-zero with the scheduler's message
    on stderr, leaves `submit_failed` and releases the lock so that a retry may submit.
    `looked_up`: the caller holds the lock after a `LOOKUP_MARK` and found no job.
    """
    q = shlex.quote
    take = f"mkdir -p {q(files.lock)}" if looked_up else f"mkdir {q(files.lock)} 2>/dev/null"
    stop = "" if looked_up else (
        f"\n    if [ -e {q(files.submit_failed)} ]; then echo {LOOKUP_MARK}; exit 0; fi")
    return f"""#!/bin/bash
trap '' HUP PIPE
if {take}; then{stop}
    id=$({submit})
    status=$?
    if [ "$status" -eq 0 ] && [ -n "$id" ]; then
        {_atomic_write(files.remote_id, '"$id"')}
        rm -f {q(files.submit_failed)}
    else
        : > {q(files.submit_failed)}
        rmdir {q(files.lock)}
        [ "$status" -eq 0 ] && echo "the submit command printed no job id" >&2
        exit $(( status == 0 ? 1 : status ))
    fi
fi
{_report_recorded_id(files, wait_seconds)}
"""


def record_script(files: JobFiles, remote_id: str) -> str:
    """A script that records `remote_id`, found on the scheduler after a `LOOKUP_MARK`,
    as the job's submission (the caller holds the lock)."""
    q = shlex.quote
    return f"""#!/bin/bash
mkdir -p {q(files.lock)} && {_atomic_write(files.remote_id, q(remote_id))} &&
rm -f {q(files.submit_failed)} && printf '{SUBMITTED_PREFIX}%s\\n' {q(remote_id)}
"""


NOT_SUBMITTED_MARK = "cerise-not-submitted"


def lookup_script(files: JobFiles, wait_seconds: int = 60) -> str:
    """A script that reports an earlier submission's id without ever submitting.

    Prints like `submit_script` if the job was submitted (waiting for a submit still in
    flight to record its id), `LOOKUP_MARK` if a submit failed (it may have created the
    job), or `NOT_SUBMITTED_MARK` if it never was.
    """
    q = shlex.quote
    return f"""#!/bin/bash
if [ ! -d {q(files.lock)} ]; then
    if [ -e {q(files.submit_failed)} ]; then echo {LOOKUP_MARK}; else echo {NOT_SUBMITTED_MARK}; fi
    exit 0
fi
{_report_recorded_id(files, wait_seconds)}
"""


def search_script(files: JobFiles, query: str) -> str:
    """`query` (a scheduler's search for the job by its name), then `STARTED_LINE` and
    whether the job script ever started (`yes`/`no`), which finds a job that has left
    the queue; it exits with the query's status."""
    started = shlex.quote(files.started)
    return (f"{query}\n__cerise_status=$?\nprintf '\\n{STARTED_LINE} %s\\n' "
            f"\"$([ -e {started} ] && echo yes || echo no)\"\nexit $__cerise_status\n")


def parse_search(output: str) -> tuple[str, bool]:
    """The query's output and whether the job script started, from `search_script`'s."""
    text, found, rest = output.rpartition(f"\n{STARTED_LINE} ")
    return (text.removeprefix("\n") if found else output), rest.strip() == "yes"


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
    if exit_status == 0 and last == LOOKUP_MARK:
        return SubmitResult(
            SubmitOutcome.LOOK_UP,
            detail="an earlier submit failed, perhaps after the scheduler took the job")
    if exit_status == 0 and last == UNKNOWN_MARK:
        return SubmitResult(
            SubmitOutcome.UNKNOWN,
            detail="an earlier submit holds the lock but recorded no scheduler id",
        )
    detail = stderr.strip() or stdout.strip() or f"submit exited with status {exit_status}"
    return SubmitResult(SubmitOutcome.FAILED, detail=detail[-2000:])
