"""Runs the scheduler plug-ins' scripts over a compute resource's connection.

The thin, effectful half of `cerise.remote.schedulers` and `cerise.remote.jobscript`:
build with the pure functions, run on the `Remote`, parse with the pure functions.
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence

from cerise.remote import jobscript, schedulers
from cerise.remote.failures import RemoteCommandFailed as RemoteCommandFailed
from cerise.remote.failures import StatusUnavailable
from cerise.remote.jobscript import JobFiles, SubmitOutcome, SubmitResult
from cerise.remote.protocol import Remote
from cerise.remote.schedulers import JobRef, Observation, Request, Scheduler


async def checked(remote: Remote, script: str, what: str) -> str:
    """Run `script`; its output, or RemoteCommandFailed saying `what` failed and why."""
    result = await remote.run(script)
    if result.exit_status != 0:
        detail = result.stderr.strip()[-1000:] or f"exit status {result.exit_status}"
        raise RemoteCommandFailed(f"{what}: {detail}")
    return result.stdout


async def submit(
    remote: Remote,
    scheduler: Scheduler,
    files: JobFiles,
    request: Request,
    runner: Sequence[str],
    prologue: str = "",
) -> SubmitResult:
    """Write the job script and submit it at most once (see `jobscript.submit_script`).

    SUBMITTED with the scheduler's id, UNKNOWN, REFUSED (the scheduler's words say it will
    never take the job) or FAILED (a passing failure: try again later); see
    `schedulers.judge_submit`.
    """
    directives = (scheduler.directives(files, request)
                  if isinstance(scheduler, schedulers.Directing) else ())
    restart_variable = (scheduler.restart_variable if request.rerun
                        and isinstance(scheduler, schedulers.Requeueing) else "")
    script = jobscript.job_script(files, runner, prologue, directives, restart_variable)
    await remote.write(files.script, script.encode(), mode=0o700)
    command = f"{prologue}\n{scheduler.submit_command(files, request)}"
    result = await _run_submit(remote, jobscript.submit_script(files, command))
    if result.outcome is SubmitOutcome.LOOK_UP:  # an earlier submit failed: did it submit?
        found = await search(remote, scheduler, files, request, prologue)
        if found is not None:
            result = found
        else:
            result = await _run_submit(
                remote, jobscript.submit_script(files, command, looked_up=True))
    return schedulers.judge_submit(result)


async def _run_submit(remote: Remote, script: str) -> SubmitResult:
    result = await remote.run(script)
    return jobscript.parse_submit(result.exit_status, result.stdout, result.stderr)


async def search(
    remote: Remote, scheduler: Scheduler, files: JobFiles, request: Request, prologue: str = "",
) -> SubmitResult | None:
    """After a failed submit (`SubmitOutcome.LOOK_UP`): the job as found by its name on the
    scheduler, recorded as submitted; UNKNOWN if its job script started but the scheduler
    no longer lists it; None if it was not submitted (or the scheduler cannot search: the
    pilot queue). RemoteCommandFailed if the scheduler cannot say."""
    if not isinstance(scheduler, schedulers.Searching):
        return None
    query = f"{prologue}\n{scheduler.search_command(files, request)}"
    output, started = jobscript.parse_search(await checked(
        remote, jobscript.search_script(files, query), "looking for the job failed"))
    remote_id = scheduler.parse_search(output, files, request)
    if remote_id is not None:
        return await _run_submit(remote, jobscript.record_script(files, remote_id))
    if started:
        return SubmitResult(SubmitOutcome.UNKNOWN,
                            detail="the job started, but the scheduler no longer lists it")
    return None


async def submission(
    remote: Remote, scheduler: Scheduler, files: JobFiles, request: Request, prologue: str = "",
    wait_seconds: int = 60,
) -> SubmitResult:
    """What became of the job's submission, without ever submitting: SUBMITTED with its
    id (found by name after a failed submit), NOT_SUBMITTED, or UNKNOWN (a submit in flight
    has not recorded its id within `wait_seconds`)."""
    result = await _run_submit(remote, jobscript.lookup_script(files, wait_seconds))
    if result.outcome is SubmitOutcome.LOOK_UP:
        found = await search(remote, scheduler, files, request, prologue)
        result = found or SubmitResult(SubmitOutcome.NOT_SUBMITTED)
    return result


async def poll(
    remote: Remote, scheduler: Scheduler, jobs: Sequence[JobRef], prologue: str = "",
    queue_timeout: int = schedulers.QUEUE_TIMEOUT,
) -> dict[str, Observation]:
    """The state of every job of a compute resource, from one remote command.

    Raises StatusUnavailable (a RemoteCommandFailed) when the scheduler's status cannot be
    read — nothing is then known of any job; CommandTimedOut and RemoteUnavailable come
    from the connection.
    """
    if not jobs:
        return {}
    script = schedulers.status_script(scheduler, jobs, queue_timeout)
    result = await remote.run(f"{prologue}\n{script}")
    if result.exit_status != 0:
        detail = result.stderr.strip()[-1000:] or f"exit status {result.exit_status}"
        raise StatusUnavailable(f"{scheduler.name}: the status command failed: {detail}")
    return schedulers.parse_status(scheduler, result.stdout, jobs)


async def cancel(
    remote: Remote, scheduler: Scheduler, jobs: Sequence[JobRef], prologue: str = ""
) -> None:
    """Ask the scheduler to stop `jobs`, wherever they are."""
    if jobs:
        await checked(remote, f"{prologue}\n{scheduler.cancel_script(jobs)}", "cancel failed")


async def remove_job_dir(remote: Remote, files: JobFiles) -> None:
    """Delete the job directory and everything in it."""
    await checked(remote, f"rm -rf -- {shlex.quote(files.job_dir)}",
                 f"cannot remove {files.job_dir}")
