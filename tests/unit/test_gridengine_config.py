"""The pure Grid Engine configuration builders, on text as qconf prints it."""

from __future__ import annotations

from cerise.devenv import gridengine

SCHEDULER_CONFIG = """\
algorithm                         default
schedule_interval                 0:0:15
maxujobs                          0
flush_submit_sec                  0
flush_finish_sec                  0
params                            none
"""


def test_with_settings_replaces_only_the_named_values() -> None:
    changed = gridengine.with_settings(SCHEDULER_CONFIG, gridengine.FAST_SCHEDULER)
    assert changed.splitlines() == [
        "algorithm                         default",
        "schedule_interval 0:0:1",
        "maxujobs                          0",
        "flush_submit_sec 1",
        "flush_finish_sec 1",
        "params                            none",
    ]


def test_with_settings_is_idempotent() -> None:
    once = gridengine.with_settings(SCHEDULER_CONFIG, gridengine.FAST_SCHEDULER)
    assert gridengine.with_settings(once, gridengine.FAST_SCHEDULER) == once


def test_host_aliases_put_the_host_first_without_repeats() -> None:
    assert gridengine.host_aliases("vm", ["localhost", "vm", "localhost"]) == "vm localhost\n"
    assert gridengine.host_aliases("vm", []) == "vm\n"


def test_queue_takes_host_slots_pe_and_bash_and_ignores_load() -> None:
    queue = gridengine.queue(name="all.q", host="vm", slots=2, pe="smp")
    assert (queue["hostlist"], queue["slots"], queue["pe_list"]) == ("vm", "2", "smp")
    assert queue["shell"] == "/bin/bash"
    assert queue["load_thresholds"] == "NONE"
    assert queue["h_rt"] == queue["s_vmem"] == "INFINITY"


def test_render_writes_one_setting_per_line_in_order() -> None:
    assert gridengine.render({"pe_name": "smp", "slots": "999"}) == "pe_name smp\nslots 999\n"
