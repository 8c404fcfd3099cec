"""From a ComputeResource to a connection and a scheduler plug-in."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Mapping
from pathlib import Path

from cerise.model import compute
from cerise.model.compute import InvalidResource, ResourceSpec
from cerise.remote.local import LocalRemote
from cerise.remote.protocol import Remote
from cerise.remote.schedulers import Scheduler
from cerise.remote.schedulers.batch import BatchSettings
from cerise.remote.schedulers.direct import DirectScheduler
from cerise.remote.schedulers.gridengine import GridEngineScheduler
from cerise.remote.schedulers.slurm import SlurmScheduler
from cerise.remote.schedulers.torque import TorqueScheduler
from cerise.remote.ssh import SshCredentials, SshHop, SshTarget
from cerise.remote.ssh_remote import SshRemote

SCHEDULERS: dict[str, Callable[[ResourceSpec], Scheduler]] = {
    "none": lambda _: DirectScheduler(),
    "slurm": lambda spec: SlurmScheduler(BatchSettings.from_spec(spec)),
    "torque": lambda spec: TorqueScheduler(BatchSettings.from_spec(spec)),
    "gridengine": lambda spec: GridEngineScheduler(BatchSettings.from_spec(spec)),
}
"""Makers of the scheduler plug-ins, by the name a ComputeResource's `jobs.scheduler` uses."""


def scheduler_for(spec: ResourceSpec) -> Scheduler:
    """The plug-in for the resource's scheduler."""
    try:
        make = SCHEDULERS[spec.scheduler]
    except KeyError:
        raise InvalidResource(
            f"scheduler {spec.scheduler!r} is not supported yet "
            f"(supported: {', '.join(sorted(SCHEDULERS))})") from None
    try:
        return make(spec)
    except ValueError as error:  # a setting the scheduler cannot take safely
        raise InvalidResource(str(error)) from None


async def remote_for(
    spec: ResourceSpec, secret: Mapping[str, str] | None,
    jump_secrets: Mapping[str, Mapping[str, str]] | None = None,
    environ: Mapping[str, str] = os.environ,
) -> Remote:
    """A (not yet connected) Remote for the resource; `secret` is its decoded Secret data,
    `jump_secrets` its jump hosts' Secrets' by name."""
    if spec.protocol == "local":
        return LocalRemote(spec.max_sessions)
    values = compute.credential_values(secret or {}, environ)
    if not values.username:
        raise InvalidResource("no username: the Secret has no `username` key")
    private_key = values.private_key
    if values.certfile:
        try:
            private_key = await asyncio.to_thread(Path(values.certfile).read_text)
        except OSError as error:
            raise InvalidResource(f"cannot read the key file named by CERISE_*CERTFILE: "
                                  f"{error.strerror}") from None
    try:
        credentials = SshCredentials(values.username, private_key=private_key,
                                     passphrase=values.passphrase, password=values.password)
    except ValueError as error:
        raise InvalidResource(str(error)) from None
    jumps = tuple(_jump_hop(jump, (jump_secrets or {}).get(jump.credentials_secret, {}))
                  for jump in spec.jump_hosts)
    return SshRemote(SshTarget(host=spec.host, port=spec.port, credentials=credentials,
                               host_keys=spec.host_keys, max_sessions=spec.max_sessions,
                               jumps=jumps))


def _jump_hop(jump: compute.JumpHostSpec, secret: Mapping[str, str]) -> SshHop:
    values = compute.jump_login(jump, secret)
    assert values.username is not None
    try:
        credentials = SshCredentials(values.username, private_key=values.private_key,
                                     passphrase=values.passphrase, password=values.password)
    except ValueError as error:
        raise InvalidResource(f"jump host {jump.host}: {error}") from None
    return SshHop(jump.host, jump.port, credentials, jump.host_keys)
