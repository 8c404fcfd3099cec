"""ComputeResource specs: environment quoting, macros, credential precedence."""

from __future__ import annotations

import dataclasses
import subprocess
from typing import Any

import pytest

from cerise.model import compute
from cerise.model.compute import InvalidResource

SPEC: dict[str, Any] = {
    "credentialsSecret": "login",
    "hostKeys": ["ssh-ed25519 AAAA"],
    "files": {"protocol": "sftp", "host": "hpc", "path": "/home/$CERISE_USERNAME/.cerise"},
    "jobs": {"protocol": "ssh", "host": "hpc", "scheduler": "slurm",
             "cwlRunner": "$CERISE_API/venv/bin/cwltool --debug",
             "environment": [{"name": "PATH", "value": "/opt/x/bin:$PATH"}]},
}


def test_parse_spec_and_macros() -> None:
    spec = compute.parse_spec(SPEC)
    assert (spec.protocol, spec.host, spec.port, spec.scheduler) == ("ssh", "hpc", 22, "slurm")
    assert compute.base_path(spec, "jdoe") == "/home/jdoe/.cerise"
    assert compute.runner_argv(spec, "jdoe") == [
        "/home/jdoe/.cerise/api/venv/bin/cwltool", "--debug"]


def test_batch_settings() -> None:
    spec = compute.parse_spec({**SPEC, "jobs": {
        **SPEC["jobs"], "scheduler": "gridengine", "queue": "all.q", "coresPerNode": 16,
        "slotsPerNode": 4, "parallelEnvironment": "smp", "schedulerOptions": ["-P", "proj"]}})
    assert (spec.queue, spec.cores_per_node, spec.slots_per_node) == ("all.q", 16, 4)
    assert (spec.parallel_environment, spec.scheduler_options) == ("smp", ("-P", "proj"))
    assert compute.parse_spec(SPEC).parallel_environment is None


def test_files_on_another_host_are_refused() -> None:
    spec = {**SPEC, "files": {"protocol": "sftp", "host": "elsewhere"}}
    with pytest.raises(InvalidResource, match="same host"):
        compute.parse_spec(spec)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("/opt/x/bin:$PATH", "/opt/x/bin:/usr/bin"),
        ("${HOME}/.local", "/home/u/.local"),
        ("$(touch /tmp/pwned) `id` ; rm -rf ~", "$(touch /tmp/pwned) `id` ; rm -rf ~"),
        ("it's \"quoted\" \\ ok", "it's \"quoted\" \\ ok"),
        ("$UNSET-x", "-x"),
        ("", ""),
        ("$", "$"),
    ],
)
def test_shell_word_expands_only_references(value: str, expected: str) -> None:
    script = f"PATH=/usr/bin HOME=/home/u; printf '%s' {compute.shell_word(value)}"
    output = subprocess.run(["bash", "-c", script], capture_output=True, text=True, check=True)
    assert output.stdout == expected


def test_prologue_exports_in_order() -> None:
    text = compute.prologue([("A", "1"), ("B", "$A-2")])
    output = subprocess.run(["bash", "-c", f"{text}\nprintf '%s' \"$B\""],
                            capture_output=True, text=True, check=True)
    assert output.stdout == "1-2"


def test_prologue_refuses_bad_names() -> None:
    with pytest.raises(InvalidResource, match="not an environment variable name"):
        compute.prologue([("A;rm", "1")])


def test_runner_that_cannot_be_parsed() -> None:
    spec = compute.parse_spec({**SPEC, "jobs": {**SPEC["jobs"], "cwlRunner": "cwltool 'open"}})
    with pytest.raises(InvalidResource, match="cwlRunner cannot be parsed"):
        compute.runner_argv(spec, "u")


def test_credentials_precedence() -> None:
    secret = {"username": "from-secret", "privateKey": "KEY", "passphrase": "pp"}
    assert compute.credential_values(secret, {}) == compute.CredentialValues(
        username="from-secret", private_key="KEY", passphrase="pp")
    environ = {"CERISE_USERNAME": "generic", "CERISE_JOBS_USERNAME": "specific",
               "CERISE_PASSWORD": "pw"}
    values = compute.credential_values(secret, environ)
    assert values.username == "specific"
    assert values.password == "pw"
    assert values.private_key == "KEY"
    only_env = compute.credential_values({}, {"CERISE_CERTFILE": "/keys/id"})
    assert only_env.certfile == "/keys/id" and only_env.private_key is None


def test_credentials_never_in_repr() -> None:
    values = compute.credential_values({"password": "hunter2", "privateKey": "KEY"}, {})
    assert "hunter2" not in repr(values) and "KEY" not in repr(values)


JUMP = {"host": "bastion.example.org", "credentialsSecret": "bastion-login",
        "hostKeys": ["ssh-ed25519 BBBB"]}


def test_jump_hosts_are_parsed_in_order() -> None:
    second = {**JUMP, "host": "inner", "port": 2222, "username": "relay"}
    spec = compute.parse_spec({**SPEC, "jumpHosts": [JUMP, second]})
    assert [(j.host, j.port, j.username, j.credentials_secret, j.host_keys)
            for j in spec.jump_hosts] == [
        ("bastion.example.org", 22, None, "bastion-login", ("ssh-ed25519 BBBB",)),
        ("inner", 2222, "relay", "bastion-login", ("ssh-ed25519 BBBB",))]
    assert compute.parse_spec(SPEC).jump_hosts == ()


def test_jump_hosts_need_ssh() -> None:
    local = {"jobs": {"protocol": "local"}, "jumpHosts": [JUMP]}
    with pytest.raises(InvalidResource, match=r"jumpHosts need jobs\.protocol ssh"):
        compute.parse_spec(local)


def test_a_jump_host_login_comes_from_its_own_secret() -> None:
    [jump] = compute.parse_spec({**SPEC, "jumpHosts": [JUMP]}).jump_hosts
    login = compute.jump_login(jump, {"username": "jdoe", "privateKey": "KEY",
                                      "passphrase": "pw"})
    assert (login.username, login.private_key, login.passphrase) == ("jdoe", "KEY", "pw")
    named = compute.JumpHostSpec("b", 22, "relay", "s", ("k",))
    assert compute.jump_login(named, {"username": "jdoe", "password": "x"}).username == "relay"
    with pytest.raises(InvalidResource, match="jump host b: no username"):
        compute.jump_login(dataclasses.replace(named, username=None), {"password": "x"})
