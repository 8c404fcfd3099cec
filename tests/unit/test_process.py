"""Daemon start-up failures name the component and show the end of its log."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from cerise.devenv.process import Daemon, StartupError, free_port, wait_until


def test_a_daemon_that_dies_fails_fast_with_its_log(tmp_path: Path) -> None:
    daemon = Daemon("broken-thing", ["sh", "-c", "echo 'cannot bind: address in use' >&2; exit 3"],
                    log=tmp_path / "broken.log").start()
    with pytest.raises(StartupError) as error:
        daemon.wait_ready(lambda: False, timeout=30)
    assert "broken-thing exited during start-up" in str(error.value)
    assert "cannot bind: address in use" in str(error.value)


def test_a_daemon_that_never_gets_ready_times_out(tmp_path: Path) -> None:
    daemon = Daemon("slow-thing", ["sleep", "30"], log=tmp_path / "slow.log").start()
    try:
        with pytest.raises(StartupError, match=r"slow-thing not ready after 0\.3 s"):
            daemon.wait_ready(lambda: False, timeout=0.3)
    finally:
        daemon.stop()
    assert not daemon.alive()


def test_a_daemon_is_ready_when_its_url_answers_as_asked(tmp_path: Path) -> None:
    port = free_port()
    (tmp_path / "health").write_text("ok")
    daemon = Daemon("web", [sys.executable, "-m", "http.server", "--bind", "127.0.0.1",
                            "--directory", str(tmp_path), str(port)],
                    log=tmp_path / "web.log").start()
    try:
        daemon.wait_answering(f"http://127.0.0.1:{port}/health",
                              lambda answer: answer.text == "ok", timeout=30)
        with pytest.raises(StartupError, match=r"web not ready after 0\.5 s"):
            daemon.wait_answering(f"http://127.0.0.1:{port}/missing", timeout=0.5)
    finally:
        daemon.stop()


def test_stop_kills_a_daemon_that_ignores_sigterm(tmp_path: Path) -> None:
    daemon = Daemon("stubborn", ["sh", "-c", "trap '' TERM; echo up; sleep 30"],
                    log=tmp_path / "stubborn.log").start()
    wait_until(lambda: "up" in (tmp_path / "stubborn.log").read_text(), timeout=10, what="sh")
    daemon.stop(grace=0.5)
    assert not daemon.alive()


def test_free_port_can_be_bound(tmp_path: Path) -> None:
    import socket

    port = free_port()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))


def test_free_ports_lie_below_the_ephemeral_range_and_are_never_handed_out_twice() -> None:
    import subprocess
    import sys

    mine = {free_port() for _ in range(50)}
    child = subprocess.run(
        [sys.executable, "-c",
         "from cerise.devenv.process import free_port\n"
         "print(' '.join(str(free_port()) for _ in range(50)))"],
        check=True, capture_output=True, text=True).stdout.split()
    theirs = {int(port) for port in child}
    floor = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    assert len(mine) == 50 and len(theirs) == 50
    assert not mine & theirs
    assert max(mine | theirs) < floor
