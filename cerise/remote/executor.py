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
from cerise.remote.jobscript import JobFiles, SubmitResult
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
    script = jobscript.job_script(files, runner, prologue, directives)
    await remote.write(files.script, script.encode(), mode=0o700)
    command = scheduler.submit_command(files, request)
    result = await remote.run(jobscript.submit_script(files, f"{prologue}\n{command}"))
    return schedulers.judge_submit(
        jobscript.parse_submit(result.exit_status, result.stdout, result.stderr))


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
