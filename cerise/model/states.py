"""The job state machine: 15 internal phases, legal transitions, REST and WES mappings.

A `WorkflowJob`'s `status.phase` holds one of the fifteen `Phase` values. Phases
ending in ``CR`` mean "cancellation requested": the user asked to cancel while the
job was in the phase of the same name, and the operator has not yet confirmed that
nothing runs any more.

Transitions come from two sides:

* **cancel** (`cancel_target`): the user's request, applied by whoever sees it
  first (the REST front end or the operator). It moves a job into the ``CR`` twin
  of its phase, or straight to `Cancelled` when nothing runs remotely yet
  (`Submitted`) or any more (`Finished`). Final and ``CR`` phases are left alone.
* **progress** (`PROGRESS`): the operator's work — staging, submission, remote
  state changes, destaging, and failures.

Every transition is written as a compare-and-swap on the status subresource, so a
writer that lost a race re-reads and decides again; `is_legal` is what every
writer checks before it tries.

Decisions where the original Cerise's documentation and code disagree (or were wrong):

* `Waiting` and `WaitingCR` map to REST ``Running``, as the original's code does
  since its fix for issue #56 (its design document still says ``Waiting``). REST
  ``Waiting`` means "not yet handed to the compute resource"; a job queued in a
  batch scheduler belongs to the compute resource. WES is finer: ``QUEUED``.
* `StagingInCR` and `StagingOutCR` end in `Cancelled` through the normal progress
  rules, not by a special start-up step (the original's docs said start-up; its
  code left them to the main loop). Recovery after a crash is level-triggered and
  needs no extra transitions.
* A cancelled staging-in never overwrites the cancel with `PermanentFailure`
  (the original's direct assignments could): `StagingInCR` may only become
  `Cancelled`, `WaitingCR` (the submit had already happened) or `SystemError`.
* A run that its time limit or memory ended may go back from `Waiting` or `Running` to
  `StagingIn`, to be submitted again with more (`cerise.model.retries`; the original had
  no retries). Its inputs stay staged; only the submission is repeated.
* A queued (`WaitingCR`) job is cancelled on the scheduler too before it becomes
  `Cancelled` (the original left it in the queue); that is the operator's duty,
  the state machine only allows `WaitingCR` → `RunningCR` | `Cancelled`.
"""

from __future__ import annotations

from enum import StrEnum


class Phase(StrEnum):
    """The internal state of a job (`status.phase`)."""

    SUBMITTED = "Submitted"
    STAGING_IN = "StagingIn"
    STAGING_IN_CR = "StagingInCR"
    WAITING = "Waiting"
    WAITING_CR = "WaitingCR"
    RUNNING = "Running"
    RUNNING_CR = "RunningCR"
    FINISHED = "Finished"
    STAGING_OUT = "StagingOut"
    STAGING_OUT_CR = "StagingOutCR"
    SUCCESS = "Success"
    CANCELLED = "Cancelled"
    PERMANENT_FAILURE = "PermanentFailure"
    TEMPORARY_FAILURE = "TemporaryFailure"
    SYSTEM_ERROR = "SystemError"


class RestState(StrEnum):
    """A job's state as the original Cerise REST API (and cerise-client) reports it."""

    WAITING = "Waiting"
    RUNNING = "Running"
    SUCCESS = "Success"
    CANCELLED = "Cancelled"
    SYSTEM_ERROR = "SystemError"
    TEMPORARY_FAILURE = "TemporaryFailure"
    PERMANENT_FAILURE = "PermanentFailure"


class WesState(StrEnum):
    """A run's state in GA4GH WES 1.1."""

    UNKNOWN = "UNKNOWN"
    QUEUED = "QUEUED"
    INITIALIZING = "INITIALIZING"
    RUNNING = "RUNNING"
    PAUSED = "PAUSED"
    COMPLETE = "COMPLETE"
    EXECUTOR_ERROR = "EXECUTOR_ERROR"
    SYSTEM_ERROR = "SYSTEM_ERROR"
    CANCELED = "CANCELED"
    CANCELING = "CANCELING"
    PREEMPTED = "PREEMPTED"


FINAL: frozenset[Phase] = frozenset(
    {
        Phase.SUCCESS,
        Phase.CANCELLED,
        Phase.PERMANENT_FAILURE,
        Phase.TEMPORARY_FAILURE,
        Phase.SYSTEM_ERROR,
    }
)
"""Phases a job never leaves."""

CANCELLING: frozenset[Phase] = frozenset(
    {Phase.STAGING_IN_CR, Phase.WAITING_CR, Phase.RUNNING_CR, Phase.STAGING_OUT_CR}
)
"""Phases in which a cancellation has been requested but not yet carried out."""

REMOTE: frozenset[Phase] = frozenset(
    {Phase.WAITING, Phase.WAITING_CR, Phase.RUNNING, Phase.RUNNING_CR}
)
"""Phases in which the job exists on the compute resource's scheduler."""

_CANCEL: dict[Phase, Phase] = {
    Phase.SUBMITTED: Phase.CANCELLED,
    Phase.STAGING_IN: Phase.STAGING_IN_CR,
    Phase.WAITING: Phase.WAITING_CR,
    Phase.RUNNING: Phase.RUNNING_CR,
    Phase.FINISHED: Phase.CANCELLED,
    Phase.STAGING_OUT: Phase.STAGING_OUT_CR,
}

PROGRESS: dict[Phase, frozenset[Phase]] = {
    Phase.SUBMITTED: frozenset({Phase.STAGING_IN, Phase.PERMANENT_FAILURE, Phase.SYSTEM_ERROR}),
    Phase.STAGING_IN: frozenset({Phase.WAITING, Phase.PERMANENT_FAILURE, Phase.SYSTEM_ERROR}),
    Phase.STAGING_IN_CR: frozenset({Phase.WAITING_CR, Phase.CANCELLED, Phase.SYSTEM_ERROR}),
    Phase.WAITING: frozenset(
        {Phase.RUNNING, Phase.FINISHED, Phase.STAGING_IN, Phase.PERMANENT_FAILURE,
         Phase.SYSTEM_ERROR}
    ),
    Phase.WAITING_CR: frozenset({Phase.RUNNING_CR, Phase.CANCELLED, Phase.SYSTEM_ERROR}),
    Phase.RUNNING: frozenset({Phase.FINISHED, Phase.STAGING_IN, Phase.SYSTEM_ERROR}),
    Phase.RUNNING_CR: frozenset({Phase.CANCELLED, Phase.SYSTEM_ERROR}),
    Phase.FINISHED: frozenset({Phase.STAGING_OUT, Phase.SYSTEM_ERROR}),
    Phase.STAGING_OUT: frozenset(
        {
            Phase.SUCCESS,
            Phase.PERMANENT_FAILURE,
            Phase.TEMPORARY_FAILURE,
            Phase.SYSTEM_ERROR,
        }
    ),
    Phase.STAGING_OUT_CR: frozenset({Phase.CANCELLED, Phase.SYSTEM_ERROR}),
}
"""The operator's transitions: for each phase, the phases its work may lead to."""

_REST: dict[Phase, RestState] = {
    Phase.SUBMITTED: RestState.WAITING,
    Phase.STAGING_IN: RestState.WAITING,
    Phase.STAGING_IN_CR: RestState.WAITING,
    Phase.WAITING: RestState.RUNNING,
    Phase.WAITING_CR: RestState.RUNNING,
    Phase.RUNNING: RestState.RUNNING,
    Phase.RUNNING_CR: RestState.RUNNING,
    Phase.FINISHED: RestState.RUNNING,
    Phase.STAGING_OUT: RestState.RUNNING,
    Phase.STAGING_OUT_CR: RestState.RUNNING,
    Phase.SUCCESS: RestState.SUCCESS,
    Phase.CANCELLED: RestState.CANCELLED,
    Phase.PERMANENT_FAILURE: RestState.PERMANENT_FAILURE,
    Phase.TEMPORARY_FAILURE: RestState.TEMPORARY_FAILURE,
    Phase.SYSTEM_ERROR: RestState.SYSTEM_ERROR,
}

_WES: dict[Phase, WesState] = {
    Phase.SUBMITTED: WesState.QUEUED,
    Phase.STAGING_IN: WesState.INITIALIZING,
    Phase.STAGING_IN_CR: WesState.CANCELING,
    Phase.WAITING: WesState.QUEUED,
    Phase.WAITING_CR: WesState.CANCELING,
    Phase.RUNNING: WesState.RUNNING,
    Phase.RUNNING_CR: WesState.CANCELING,
    Phase.FINISHED: WesState.RUNNING,
    Phase.STAGING_OUT: WesState.RUNNING,
    Phase.STAGING_OUT_CR: WesState.CANCELING,
    Phase.SUCCESS: WesState.COMPLETE,
    Phase.CANCELLED: WesState.CANCELED,
    Phase.PERMANENT_FAILURE: WesState.EXECUTOR_ERROR,
    Phase.TEMPORARY_FAILURE: WesState.EXECUTOR_ERROR,
    Phase.SYSTEM_ERROR: WesState.SYSTEM_ERROR,
}


class IllegalTransition(ValueError):
    """A transition the state machine does not allow."""

    def __init__(self, source: Phase, target: Phase) -> None:
        super().__init__(f"a job cannot go from {source} to {target}")
        self.source = source
        self.target = target


def cancel_target(phase: Phase) -> Phase | None:
    """The phase a cancel request moves `phase` to, or None when it changes nothing."""
    return _CANCEL.get(phase)


def is_legal(source: Phase, target: Phase) -> bool:
    """Whether any writer may move a job from `source` to `target`."""
    return cancel_target(source) == target or target in PROGRESS.get(source, frozenset())


def check_transition(source: Phase, target: Phase) -> None:
    """Raise IllegalTransition unless `source` → `target` is legal."""
    if not is_legal(source, target):
        raise IllegalTransition(source, target)


def rest_state(phase: Phase) -> RestState:
    """The REST API state shown for `phase`."""
    return _REST[phase]


def wes_state(phase: Phase, *, preempted: bool = False) -> WesState:
    """The WES 1.1 state shown for `phase`; `PREEMPTED` for a job that waits to run again
    after a preemption (`preempted`, `cerise.model.preemption`) and keeps its phase."""
    if preempted and phase in (Phase.WAITING, Phase.RUNNING):
        return WesState.PREEMPTED
    return _WES[phase]
