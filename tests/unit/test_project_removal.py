"""Removing a project no Specialisation wants: the scripts of `cerise.remote.uninstall`, run
by bash over a local directory laid out as `cerise.remote.install` lays it out."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

from cerise.model.specialisation import Installed
from cerise.remote import uninstall

PROJECT = "p $(touch pwned) 'q'"
"""A project name that must reach the shell as data."""


def lay_out(api: Path, *versions: str, current: str) -> Installed:
    for version in versions:
        (api / ".install" / PROJECT / version / "files").mkdir(parents=True)
    (api / PROJECT).symlink_to(f".install/{PROJECT}/{current}")
    return Installed(PROJECT, "1.0.0", owner_uid="u", owner="ns/s",
                     directory=f".install/{PROJECT}/{current}")


def bash(script: str, cwd: Path) -> None:
    subprocess.run(["bash", "-c", script], cwd=cwd, check=True, timeout=30)


def test_the_link_goes_and_the_current_directory_stays_for_running_jobs(tmp_path: Path) -> None:
    api = tmp_path / "api"
    found = lay_out(api, "0.9-a", "1.0-b", current="1.0-b")
    bash(uninstall.removal_script(str(api), found), tmp_path)
    assert not (api / PROJECT).is_symlink()
    assert sorted(os.listdir(api / ".install" / PROJECT)) == ["1.0-b"]
    assert not list(tmp_path.rglob("pwned"))


def test_a_link_switched_meanwhile_is_left_alone(tmp_path: Path) -> None:
    api = tmp_path / "api"
    seen = lay_out(api, "0.9-a", "1.0-b", current="1.0-b")
    old = Installed(PROJECT, "0.9", owner_uid="u", owner="ns/s",
                    directory=f".install/{PROJECT}/0.9-a")
    bash(uninstall.removal_script(str(api), old), tmp_path)
    assert os.readlink(api / PROJECT) == seen.directory
    assert sorted(os.listdir(api / ".install" / PROJECT)) == ["0.9-a", "1.0-b"]


def test_the_sweep_deletes_what_a_removal_kept_once_it_is_old(tmp_path: Path) -> None:
    api = tmp_path / "api"
    found = lay_out(api, "1.0-b", current="1.0-b")
    bash(uninstall.removal_script(str(api), found), tmp_path)
    (api / ".install" / "live" / "2.0-c").mkdir(parents=True)
    (api / "live").symlink_to(".install/live/2.0-c")
    bash(uninstall.sweep_script(str(api), keep_seconds=600), tmp_path)
    assert (api / ".install" / PROJECT / "1.0-b").is_dir(), "a running job may still use it"
    hour_ago = time.time() - 3600
    for directory in (api / ".install" / PROJECT / "1.0-b", api / ".install" / "live" / "2.0-c"):
        os.utime(directory, (hour_ago, hour_ago))
    bash(uninstall.sweep_script(str(api), keep_seconds=600), tmp_path)
    assert not (api / ".install" / PROJECT).exists()
    assert (api / ".install" / "live" / "2.0-c").is_dir(), "an installed project stays"
