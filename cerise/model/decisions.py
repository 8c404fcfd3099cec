"""What a resource worker does next for a job: pure decisions, carried out by the worker.

The worker gathers the facts — the job's phase and cancel flag, the latest observation of
it on the compute resource, what it remembers of the job between ticks (`Memory`), the
time — and asks one of these functions. Each answers with a `Decision`: a transition to
write, work to start, a cancel to send to the scheduler, the job's log to follow, and the
memory to keep. Nothing here does I/O, so every phase is covered by unit tests.

* `next_work` — at each tick, before the one status command: follow a cancel request, or
  start staging in or out, or include the job in the poll.
* `after_poll` — with the job's observation from that poll: a run that its time limit or
  memory ended goes back to `StagingIn` with more, as `cerise.model.retries` allows.
* `after_submit` — with what the submit script reported.
* `after_cancelled_staging` — a cancel arrived during staging: was the job submitted?
* `after_lost_race` — a transition lost its compare-and-swap: follow a cancel that won.
* `after_error` — a job's staging or submitting failed: retry after a delay, or end it.
* `submit_unsettled`, `after_submission_lookup`, `after_stop_check` — deleting a job:
  what to cancel, and whether to wait before its directory is removed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any

from cerise.model import limits, retries, states
from cerise.model.observations import Observation, RemoteState, SubmitOutcome
from cerise.model.states import Phase

CANCEL_RESEND = 10.0
"""Seconds between cancel requests to the scheduler while a cancelled job is still there."""
MIN_VANISH_GRACE = 10.0
"""Least seconds a job may be missing from the queue, without an exit code, before it is
given up on (the marker may be late on a network file system)."""
ATTEMPTS = 3
"""Tries at staging a job in or out before an I/O error makes it a SystemError."""
MAX_RETRY_DELAY = 300.0
"""Most seconds between tries at a job's work that failed for a passing reason."""
STOP_WAIT = 0.5
"""Seconds between looks at a deleted job's cancelled remote job, until it is gone."""
STOP_LOOKS = 20
"""Looks at a cancelled remote job before its directory is removed all the same."""
SUBMIT_LOOKS = 30
"""Looks for the outcome of a submit in flight when its job is deleted (each after a
retry of the deletion) before the directory is removed without it."""


class Work(StrEnum):
    """Work a job needs from its worker."""

    NONE = "none"
    STAGE_IN = "stage in"
    STAGE_OUT = "stage out"
    POLL = "poll"


@dataclass(frozen=True)
class Move:
    """A transition to write: `source` (the phase decided from) → `target`."""

    target: Phase
    message: str
    fields: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Memory:
    """What the worker remembers of a job between ticks (lost on a restart: harmless)."""

    vanished_since: float | None = None
    cancel_sent: float = 0.0


@dataclass(frozen=True)
class Decision:
    """The answer: at most one transition, work to start, and what else to do."""

    move: Move | None = None
    work: Work = Work.NONE
    cancel_remote: bool = False
    """Ask the scheduler to stop the job (in the one cancel command of this tick)."""
    follow_log: bool = False
    """Read the runner's new log lines (only while it runs)."""
    memory: Memory = Memory()


def next_work(phase: Phase | None, *, cancel: bool, deleting: bool) -> Decision:
    """A job's work at the start of a tick."""
    if phase is None or phase in states.FINAL or deleting:
        return Decision()
    target = states.cancel_target(phase)
    if cancel and target is not None:
        return Decision(move=Move(target, "cancellation requested"))
    if phase in (Phase.SUBMITTED, Phase.STAGING_IN, Phase.STAGING_IN_CR):
        return Decision(work=Work.STAGE_IN)
    if phase in (Phase.FINISHED, Phase.STAGING_OUT, Phase.STAGING_OUT_CR):
        return Decision(work=Work.STAGE_OUT)
    if phase in states.REMOTE:
        return Decision(work=Work.POLL)
    return Decision()


def after_poll(
    phase: Phase, seen: Observation, memory: Memory, *, now: float, refresh: float,
    time_limit: int = 0, run: retries.Run | None = None,
) -> Decision:
    """A job in a remote phase, after the poll saw it as `seen`; `now` in epoch seconds,
    `time_limit` what the job asked for (to tell a time-limit end). A run that its time
    limit or memory ended goes back to `StagingIn` for another attempt with more, as
    `run`'s policy allows (None: never)."""
    if phase in (Phase.WAITING_CR, Phase.RUNNING_CR):
        return _cancelling(phase, seen, memory, now)
    if seen.state is not RemoteState.VANISHED:
        memory = replace(memory, vanished_since=None)
    if seen.state is RemoteState.DONE:
        return _ended(seen, limits.time_limit_message(seen, time_limit),
                      f"the runner exited with status {seen.exit_code}", memory,
                      time_limit=time_limit, run=run)
    if seen.state is RemoteState.VANISHED:
        if memory.vanished_since is None:
            return Decision(memory=replace(memory, vanished_since=now))
        if now - memory.vanished_since <= max(MIN_VANISH_GRACE, 3 * refresh):
            return Decision(memory=memory)
        # Given up on: make sure nothing of it lingers in the queue (an error state, say).
        end = limits.time_limit_message(seen, time_limit, now=now)
        return replace(_ended(seen, end, "the job left the scheduler without an exit code",
                              memory, time_limit=time_limit, run=run), cancel_remote=True)
    if phase is Phase.WAITING and seen.never_runs:
        return Decision(move=Move(Phase.PERMANENT_FAILURE, "the scheduler cannot run this job: "
                                  f"{seen.never_runs}"), cancel_remote=True, memory=memory)
    if phase is Phase.WAITING and seen.state is RemoteState.RUNNING:
        return Decision(move=Move(Phase.RUNNING, "running"), follow_log=True, memory=memory)
    return Decision(follow_log=phase is Phase.RUNNING, memory=memory)


def _ended(seen: Observation, time_end: str | None, message: str, memory: Memory, *,
           time_limit: int, run: retries.Run | None) -> Decision:
    """A run that ended: `Finished`, or another attempt with more time or memory."""
    ended_by, reason = (retries.EndedBy.TIME, time_end) if time_end else (None, None)
    if ended_by is None and seen.out_of_memory:
        asked = f" of {run.memory} MiB" if run is not None and run.memory else ""
        ended_by, reason = retries.EndedBy.MEMORY, (
            f"the job ran out of its memory{asked}: {seen.out_of_memory}")
    if ended_by is None or reason is None or run is None:
        return Decision(move=_finished(seen, reason, message), memory=memory)
    this = retries.Attempt(run.number, time_limit, run.memory, ended_by, run.remote_id)
    attempts = [attempt.to_status() for attempt in (*run.history, this)]
    answer = retries.next_attempt(run.policy, this)
    if isinstance(answer, retries.NextRequest):
        return Decision(move=Move(
            Phase.STAGING_IN,
            f"{reason}; {retries.retry_message(this, answer, run.policy.attempts)}",
            {"attempt": run.number + 1, "attempts": attempts, "remoteJobId": "",
             "preemptions": 0, "preempted": False,
             "timeLimit": answer.time_limit, "memory": answer.memory}))
    if run.history or run.policy.attempts > 1:
        reason = (f"{reason}; {retries.tried(run.policy, (*run.history, this))}; "
                  f"not tried again: {answer}")
    move = _finished(seen, reason, message)
    return Decision(move=replace(move, fields={**move.fields, "attempts": attempts}),
                    memory=memory)


def _finished(seen: Observation, end_reason: str | None, message: str) -> Move:
    fields: dict[str, Any] = {"exitCode": seen.exit_code}
    if end_reason:
        fields["endReason"] = end_reason
    return Move(Phase.FINISHED, end_reason or message, fields)


def _cancelling(phase: Phase, seen: Observation, memory: Memory, now: float) -> Decision:
    if seen.state in (RemoteState.DONE, RemoteState.VANISHED):
        return Decision(move=Move(Phase.CANCELLED, "stopped on the compute resource"),
                        memory=memory)
    move = None
    if seen.state is RemoteState.RUNNING and phase is Phase.WAITING_CR:
        move = Move(Phase.RUNNING_CR, "running; cancelling")
    if now - memory.cancel_sent >= CANCEL_RESEND:
        return Decision(move=move, cancel_remote=True, memory=replace(memory, cancel_sent=now))
    return Decision(move=move, memory=memory)


def after_submit(outcome: SubmitOutcome, detail: str, remote_id: str, work_dir: str,
                 submitted_at: str, time_limit: int = 0, memory: int = 0) -> Move | None:
    """A job in `StagingIn` after its submit (asking for `time_limit` seconds and `memory`
    MiB); None to try again on a later tick."""
    if outcome is SubmitOutcome.SUBMITTED:
        return Move(Phase.WAITING, f"submitted as {remote_id}",
                    {"remoteJobId": remote_id, "workDir": work_dir,
                     "submittedAt": submitted_at, "timeLimit": time_limit, "memory": memory})
    if outcome is SubmitOutcome.REFUSED:
        return Move(Phase.PERMANENT_FAILURE, f"the scheduler refused the job: {detail}")
    if outcome is SubmitOutcome.UNKNOWN:
        return Move(Phase.SYSTEM_ERROR,
                    f"the outcome of an earlier submission is unknown: {detail}")
    return None


def after_cancelled_staging(outcome: SubmitOutcome, detail: str, remote_id: str,
                            work_dir: str) -> Move | None:
    """A job in `StagingInCR`: hand a submitted job to the cancel path, or end it."""
    if outcome is SubmitOutcome.SUBMITTED:
        return Move(Phase.WAITING_CR, f"submitted as {remote_id} before the cancel",
                    {"remoteJobId": remote_id, "workDir": work_dir})
    if outcome in (SubmitOutcome.NOT_SUBMITTED, SubmitOutcome.REFUSED):
        return Move(Phase.CANCELLED, "cancelled before submission")
    if outcome is SubmitOutcome.FAILED:
        return None  # cannot tell yet: look again on a later tick
    return Move(Phase.SYSTEM_ERROR, f"cancelled, but {detail}")


def after_lost_race(intended: Move, source: Phase, latest: Phase | None) -> Move | None:
    """A transition from `source` lost its compare-and-swap and the job is now in `latest`:
    if a cancel won the race, the same step continues on the cancel path."""
    if latest is None or states.cancel_target(source) != latest:
        return None  # someone else moved it on; the next tick decides again
    if intended.target is Phase.WAITING:  # the job was submitted: it must be stopped
        return Move(Phase.WAITING_CR, intended.message, intended.fields)
    if source is Phase.STAGING_OUT:
        return Move(Phase.CANCELLED, "cancelled; partial outputs kept",
                    {"output": {}, **intended.fields})
    return None


def finish_message(final: Phase, message: str, *, end_reason: str | None,
                   failed_step: str | None) -> tuple[Phase, str]:
    """The final phase and message of a run, given why it ended and which step failed."""
    if end_reason:
        return Phase.PERMANENT_FAILURE, end_reason
    if failed_step and final in (Phase.PERMANENT_FAILURE, Phase.TEMPORARY_FAILURE):
        how = "failed temporarily" if final is Phase.TEMPORARY_FAILURE else "failed"
        return final, f"the workflow {how}: {failed_step}"
    return final, message


class Failure(StrEnum):
    """What kind of error stopped a job's work, as the worker tells them apart."""

    PASSING = "passing"
    """The connection, a remote command or the scheduler failed; it may pass."""
    IO = "io"
    """A download or a disk failed: tried again a few times."""
    INPUT_REJECTED = "input rejected"
    INVALID_WORKFLOW = "invalid workflow"
    OUTPUT_REJECTED = "output rejected"
    INTERNAL = "internal"
    """A fault of Cerise's own."""


@dataclass(frozen=True)
class Retry:
    """Try the job's work again after `delay` seconds; `message` says why it waits."""

    delay: float
    message: str


_ENDS = {
    Failure.INPUT_REJECTED: Phase.PERMANENT_FAILURE,
    Failure.INVALID_WORKFLOW: Phase.PERMANENT_FAILURE,
    Failure.OUTPUT_REJECTED: Phase.SYSTEM_ERROR,
    Failure.IO: Phase.SYSTEM_ERROR,
    Failure.INTERNAL: Phase.SYSTEM_ERROR,
}


def retry_delay(failures: int, refresh: float) -> float:
    """Seconds before the next try after `failures` in a row: doubling from the refresh."""
    return float(min(MAX_RETRY_DELAY, max(refresh, 0.1) * 2.0 ** min(max(failures, 1) - 1, 16)))


def after_error(failure: Failure, error: str, failures: int, phase: Phase | None, *,
                refresh: float) -> Retry | Move | None:
    """A job in `phase` whose work failed with `error` (`failures` in a row, this one
    included): try again later, or end it; None when its phase allows no such end now."""
    delay = retry_delay(failures, refresh)
    if failure is Failure.PASSING:
        return Retry(delay, f"waiting for the compute resource ({error}); trying again")
    if failure is Failure.IO and failures < ATTEMPTS:
        return Retry(delay, f"{error} (attempt {failures} of {ATTEMPTS}); trying again")
    if phase is None:
        return None
    target = _ENDS[failure]
    message = {Failure.IO: f"{error} (after {ATTEMPTS} attempts)",
               Failure.INTERNAL: f"internal error: {error}"}.get(failure, error)
    if not states.is_legal(phase, target):
        target = Phase.SYSTEM_ERROR
        if not states.is_legal(phase, target):
            return None
    staging_out = phase in (Phase.STAGING_OUT, Phase.STAGING_OUT_CR)
    return Move(target, message, {"output": {}} if staging_out else {})


def submit_unsettled(phase: Phase | None, remote_id: str) -> bool:
    """Whether a job being deleted may have been submitted without its id in its status
    (a submit in flight or cut short): its job directory must be asked first."""
    return not remote_id and phase in (Phase.STAGING_IN, Phase.STAGING_IN_CR)


def after_submission_lookup(outcome: SubmitOutcome, looks: int) -> float | None:
    """A deleted job's submission as its directory tells it (`looks` so far): seconds to
    wait for a submit still in flight, or None to go on (cancelling what was found)."""
    if outcome in (SubmitOutcome.UNKNOWN, SubmitOutcome.LOOK_UP) and looks < SUBMIT_LOOKS:
        return STOP_WAIT
    return None


def after_stop_check(seen: RemoteState, looks: int) -> float | None:
    """A deleted job's remote job after its cancel (`looks` so far): seconds before
    looking again, or None to remove its directory now."""
    if seen in (RemoteState.DONE, RemoteState.VANISHED) or looks >= STOP_LOOKS:
        return None
    return STOP_WAIT
