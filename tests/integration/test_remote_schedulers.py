"""Jobs submitted over real SSH to a plain host, Slurm, Grid Engine and Torque wrappers.

Everything goes through the test sshd as the unprivileged test user, with the host key
pinned, the way the operator will reach a compute resource.
"""

from __future__ import annotations

import asyncio
import json
import shlex
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import asyncssh
import pytest

from cerise.devenv.sshd import SshEndpoint
from cerise.devenv.system import TORQUE_WRAPPERS
from cerise.devenv.torque import TorqueWrappers
from cerise.model.compute import prologue

pytestmark = pytest.mark.integration

JOB_TIMEOUT = 60.0


async def connect(endpoint: SshEndpoint, **options: object) -> asyncssh.SSHClientConnection:
    """A connection as the test user that accepts only the pinned host key."""
    settings: dict[str, object] = {
        "username": endpoint.username,
        "known_hosts": asyncssh.import_known_hosts(endpoint.known_hosts),
        "client_keys": [str(endpoint.client_key)],
        "agent_path": None,
        **options,
    }
    return await asyncssh.connect(endpoint.host, endpoint.port, **settings)


@pytest.fixture
async def ssh(sshd: SshEndpoint) -> AsyncIterator[asyncssh.SSHClientConnection]:
    async with await connect(sshd) as conn:
        yield conn


@pytest.fixture
async def workdir(ssh: asyncssh.SSHClientConnection) -> AsyncIterator[str]:
    """A fresh directory in the test user's home, removed afterwards."""
    async with ssh.start_sftp_client() as sftp:
        path = f"{await sftp.realpath('.')}/cerise-tests/{uuid.uuid4().hex[:12]}"
        await sftp.makedirs(path)
        yield path
        await sftp.rmtree(path)


async def eventually(
    condition: Callable[[], Awaitable[bool]], *, timeout: float, what: Callable[[], Awaitable[str]]
) -> None:
    """Poll `condition` until it holds; fail with the text of `what` after `timeout` s."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await condition():
        if loop.time() > deadline:
            raise AssertionError(f"not within {timeout:.0f} s: {await what()}")
        await asyncio.sleep(0.1)


@dataclass(frozen=True)
class Scheduler:
    """How to submit the test job to one kind of compute resource and find its stdout."""

    name: str
    fixture: str | None
    """The session fixture whose `environment` the resource exports, if any."""
    submit: Callable[[str, str], str]
    """(workdir, job name) → a command that submits job.sh and prints the job id."""
    stdout: Callable[[str, str], str]
    """(job name, job id) → the file name of the job's stdout in workdir."""
    job_id: str
    """Shell expression for the job's own id inside the job."""
    cores: str | None
    """Shell expression for the cores granted to the job (2 requested), if it has an allotment."""


q = shlex.quote

SCHEDULERS = [
    Scheduler(
        name="direct",
        fixture=None,
        # setsid and nohup exec in place, so $! is the job shell's own pid.
        submit=lambda wd, _: (
            f"cd {q(wd)} || exit 1; "
            "setsid nohup bash job.sh >job.out 2>job.err </dev/null & echo $!"
        ),
        stdout=lambda _name, _id: "job.out",
        job_id="$$",
        cores=None,
    ),
    Scheduler(
        name="slurm",
        fixture="slurm",
        submit=lambda wd, name: f"cd {q(wd)} && sbatch --parsable -J {q(name)} -c 2 job.sh",
        stdout=lambda _name, job_id: f"slurm-{job_id}.out",
        job_id="$SLURM_JOB_ID",
        cores="$SLURM_CPUS_PER_TASK",
    ),
    Scheduler(
        name="gridengine",
        fixture="gridengine",
        submit=lambda wd, name: (
            f"cd {q(wd)} && qsub -terse -S /bin/bash -wd {q(wd)} -N {q(name)} -pe smp 2 job.sh"
        ),
        stdout=lambda name, job_id: f"{name}.o{job_id}",
        job_id="$JOB_ID",
        cores="$NSLOTS",
    ),
    Scheduler(
        name="torque",
        fixture="torque",
        submit=lambda wd, name: (
            f"cd {q(wd)} && qsub -N {q(name)} -l nodes=1:ppn=2,walltime=00:01:00 job.sh"
        ),
        stdout=lambda name, job_id: f"{name}.o{job_id}",
        job_id="$SLURM_JOB_ID",
        cores="$SLURM_NTASKS",
    ),
]


def job_script(scheduler: Scheduler) -> str:
    """Print who, which job, how many cores and where; then leave a `done` marker."""
    cores = f" cores={scheduler.cores}" if scheduler.cores else ""
    return f"""\
#!/bin/bash
echo "user=$(id -un) job={scheduler.job_id}{cores} pwd=$PWD"
touch done
"""


@pytest.mark.parametrize("scheduler", SCHEDULERS, ids=lambda s: s.name)
async def test_job_runs_and_writes_output(
    scheduler: Scheduler,
    request: pytest.FixtureRequest,
    ssh: asyncssh.SSHClientConnection,
    workdir: str,
) -> None:
    environment: tuple[tuple[str, str], ...] = (
        request.getfixturevalue(scheduler.fixture).environment if scheduler.fixture else ()
    )
    name = f"t{uuid.uuid4().hex[:8]}"
    async with ssh.start_sftp_client() as sftp:
        async with sftp.open(f"{workdir}/job.sh", "w") as script:
            await script.write(job_script(scheduler))
        await sftp.chmod(f"{workdir}/job.sh", 0o755)

        submitted = await ssh.run(
            f"{prologue(environment)}\n{scheduler.submit(workdir, name)}", check=True
        )
        job_id = str(submitted.stdout).strip().split(";")[0]
        assert job_id.isdigit(), submitted

        async def listing() -> str:
            return f"{workdir} holds {sorted(await sftp.listdir(workdir))}"

        await eventually(lambda: sftp.exists(f"{workdir}/done"), timeout=JOB_TIMEOUT, what=listing)
        async with sftp.open(f"{workdir}/{scheduler.stdout(name, job_id)}") as out:
            output = await out.read()
    cores = " cores=2" if scheduler.cores else ""
    assert output == f"user=cerise-test job={job_id}{cores} pwd={workdir}\n"


async def test_torque_wrappers_only_on_their_resource(
    ssh: asyncssh.SSHClientConnection, torque: TorqueWrappers
) -> None:
    """The wrappers' qsub shadows Grid Engine's only where the resource's PATH says so."""
    plain = await ssh.run("command -v qsub", check=True)
    wrapped = await ssh.run(f"{prologue(torque.environment)}\ncommand -v qsub", check=True)
    assert str(plain.stdout).strip() == "/usr/bin/qsub"
    assert str(wrapped.stdout).strip() == f"{TORQUE_WRAPPERS}/qsub"


async def test_pinned_host_key_logs_in_as_test_user(ssh: asyncssh.SSHClientConnection) -> None:
    result = await ssh.run("id -un", check=True)
    assert result.stdout == "cerise-test\n"


async def test_wrong_pinned_host_key_is_refused(sshd: SshEndpoint) -> None:
    impostor = asyncssh.generate_private_key("ssh-ed25519").export_public_key().decode()
    known_hosts = asyncssh.import_known_hosts(f"[{sshd.host}]:{sshd.port} {impostor}")
    with pytest.raises(asyncssh.HostKeyNotVerifiable):
        await connect(sshd, known_hosts=known_hosts)


async def test_password_login_is_refused(sshd: SshEndpoint) -> None:
    with pytest.raises(asyncssh.PermissionDenied):
        await connect(
            sshd,
            client_keys=None,
            password="not-a-key",
            preferred_auth="password,keyboard-interactive",
        )


async def test_cwltool_is_the_remote_runner(ssh: asyncssh.SSHClientConnection) -> None:
    result = await ssh.run("cwltool --version", check=True)
    assert str(result.stdout).startswith("/usr/local/bin/cwltool 3.")


ECHO_WORKFLOW = """\
cwlVersion: v1.2
class: Workflow
inputs:
  message: string
outputs:
  greeting:
    type: File
    outputSource: say/greeting
steps:
  say:
    in: {message: message}
    out: [greeting]
    run:
      class: CommandLineTool
      baseCommand: echo
      inputs:
        message: {type: string, inputBinding: {position: 1}}
      stdout: greeting.txt
      outputs:
        greeting: {type: stdout}
"""


async def test_cwltool_runs_a_workflow_remotely(
    ssh: asyncssh.SSHClientConnection, workdir: str
) -> None:
    async with ssh.start_sftp_client() as sftp:
        async with sftp.open(f"{workdir}/echo.cwl", "w") as workflow:
            await workflow.write(ECHO_WORKFLOW)
        async with sftp.open(f"{workdir}/input.json", "w") as job:
            await job.write(json.dumps({"message": "hello from a remote workflow"}))
        result = await ssh.run(
            f"cd {q(workdir)} && cwltool --quiet --outdir out echo.cwl input.json", check=True
        )
        greeting = json.loads(str(result.stdout))["greeting"]
        assert greeting["path"] == f"{workdir}/out/greeting.txt"
        async with sftp.open(greeting["path"]) as out:
            assert await out.read() == "hello from a remote workflow\n"
