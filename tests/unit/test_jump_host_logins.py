"""From a ComputeResource with jump hosts to the route its connection takes."""

from __future__ import annotations

from typing import Any

import pytest

from cerise.model import compute
from cerise.model.compute import InvalidResource
from cerise.operator import resources
from cerise.remote.ssh_remote import SshRemote

SPEC: dict[str, Any] = {
    "credentialsSecret": "login",
    "hostKeys": ["ssh-ed25519 AAAA"],
    "jobs": {"protocol": "ssh", "host": "login01.internal", "scheduler": "slurm"},
    "jumpHosts": [
        {"host": "bastion.example.org", "credentialsSecret": "bastion-login",
         "hostKeys": ["ssh-ed25519 BBBB"]},
        {"host": "gateway", "port": 2222, "username": "relay", "credentialsSecret": "login",
         "hostKeys": ["ssh-ed25519 CCCC"]},
    ],
}
SECRETS = {"login": {"username": "jdoe", "privateKey": "CLUSTER KEY"},
           "bastion-login": {"username": "jdoe-b", "password": "pw"}}


async def test_each_hop_logs_in_with_its_own_secret() -> None:
    remote = await resources.remote_for(compute.parse_spec(SPEC), SECRETS["login"], SECRETS,
                                        environ={})
    assert isinstance(remote, SshRemote)
    route = remote.connection.target.route
    assert [(h.host, h.port, h.credentials.username, h.host_keys) for h in route] == [
        ("bastion.example.org", 22, "jdoe-b", ("ssh-ed25519 BBBB",)),
        ("gateway", 2222, "relay", ("ssh-ed25519 CCCC",)),
        ("login01.internal", 22, "jdoe", ("ssh-ed25519 AAAA",)),
    ]
    assert route[0].credentials.password == "pw"
    assert route[1].credentials.private_key == "CLUSTER KEY"


async def test_a_jump_host_without_a_key_or_password_is_refused() -> None:
    secrets = {**SECRETS, "bastion-login": {"username": "jdoe-b"}}
    with pytest.raises(InvalidResource, match=r"jump host bastion\.example\.org: .*privateKey"):
        await resources.remote_for(compute.parse_spec(SPEC), SECRETS["login"], secrets,
                                   environ={})
