"""The text a compute resource's `bash -s` runs: a script's status, without waiting for
the end of its input."""

from __future__ import annotations

import subprocess

from cerise.remote.protocol import wrap_script


def test_bash_ends_with_the_scripts_status_before_its_input_ends() -> None:
    bash = subprocess.Popen(["bash", "-s"], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert bash.stdin is not None and bash.stdout is not None
    try:
        bash.stdin.write(wrap_script("read -r line; echo \"[$line]\"; return 3").encode())
        bash.stdin.flush()  # and not closed: the end of the input is still to come
        assert bash.wait(timeout=10) == 3
        assert bash.stdout.read() == b"[]\n"  # the script's own stdin is /dev/null
    finally:
        bash.kill()
        bash.stdin.close()
        bash.stdout.close()
