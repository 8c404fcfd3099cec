"""Waiting on the resource for a run to end (`cerise.remote.ends`), with a real bash: the
end is seen as soon as its marker is there, not at the next refresh."""

from __future__ import annotations

import asyncio
from pathlib import Path

from cerise.remote import ends
from cerise.remote.local import LocalRemote

HOSTILE = "run 'x' $(touch pwned) ; `y`"


async def test_a_marker_that_appears_is_seen_at_once(tmp_path: Path) -> None:
    markers = [str(tmp_path / f"{HOSTILE} {n}" / "exit_code") for n in range(3)]
    for marker in markers:
        Path(marker).parent.mkdir()

    async def end_later() -> None:
        await asyncio.sleep(0.3)  # the run goes on a while, then ends
        await asyncio.to_thread(Path(markers[1]).write_text, "0\n")

    ending = asyncio.create_task(end_later())
    found = await asyncio.wait_for(ends.first_end(LocalRemote(), markers, timeout=600), 60)
    await ending
    assert found == markers[1]
    assert not await asyncio.to_thread((tmp_path / "pwned").exists)
    assert not await asyncio.to_thread(Path("pwned").exists)


async def test_no_end_within_the_time_is_none(tmp_path: Path) -> None:
    assert await ends.first_end(LocalRemote(), [str(tmp_path / "exit_code")], 0.1) is None
    assert await ends.first_end(LocalRemote(), [], 600) is None


def test_many_runs_are_looked_at_less_often() -> None:
    assert ends.interval(1) == ends.MIN_INTERVAL
    assert ends.interval(10_000) == 10.0
    script = ends.wait_script([f"/r/{n}/exit_code" for n in range(10_000)], 60)
    assert "read -r -t 10.000" in script and "__cerise_looks=6\n" in script
