"""Putting a run back into the queue after the allocation it was running in ended.

Only for a run whose ticket is still in `claimed/<alloc>/` of an allocation that the batch
scheduler no longer has (`status.RunVerdict.REQUEUE`): its agent is gone, so nothing
else moves that ticket. The script refuses (`busy`) while any process still holds the
run's `run.lock` — a straggler of the old attempt — so a run never executes twice at
the same time; the operator tries again on a later refresh.

What it does, in an order that a repeat after a crash at any point completes: the ticket
is rewritten in place with `attempt` + 1 and the allocation appended to `died_in` (not
again if it is already the last one named there); the run's `stdout.txt`, `stderr.txt`
and `scheduler.txt` are *rotated* to `stdout.<n>.txt`, `stderr.<n>.txt` and
`scheduler.<n>.txt`, n being the attempt that died (the next attempt's job script
starts new ones; an operator following the runner log restarts at offset 0); the
`started`, `terminated` and `exit_code` markers are removed; the ticket is renamed into the
queue under its first `order`, so it goes before the runs queued after it.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from enum import StrEnum

from cerise.remote.jobscript import JobFiles
from cerise.remote.pilot import layout
from cerise.remote.pilot.layout import PilotLayout
from cerise.remote.schedulers import batch

MARK = "cerise-requeue:"


class RequeueOutcome(StrEnum):
    """What a requeue script reported."""

    REQUEUED = "requeued"
    BUSY = "busy"
    """A process still holds the run's lock; nothing changed."""
    NOT_CLAIMED = "not-claimed"
    """The allocation holds no ticket of the run (already requeued, or never claimed it)."""
    FAILED = "failed"


@dataclass(frozen=True)
class RequeueResult:
    outcome: RequeueOutcome
    attempt: int = 0
    """The run's attempt number now in the queue (REQUEUED)."""
    detail: str = ""


def requeue_script(pilot: PilotLayout, files: JobFiles, allocation: str) -> str:
    """Move the run of `files` from gone `allocation`'s claim back into the queue."""
    q = shlex.quote
    run = layout.run_name(files)
    logs = " ".join(q(path) for path in (files.stdout, files.stderr, batch.scheduler_log(files)))
    markers = " ".join(q(path) for path in (files.started, files.terminated, files.exit_code))
    claimed = f"{pilot.claimed(allocation)}/{run}"
    return f"""t={q(claimed)} rewritten={q(f"{pilot.claimed(allocation)}/.{run}")}
queue={q(pilot.queue)} run={q(run)} lock={q(layout.run_lock(files))} alloc={q(allocation)}
[ -e "$t" ] || {{ echo {MARK} not-claimed; exit 0; }}
flock -n -E 75 "$lock" true
case $? in
    0) ;;
    75) echo {MARK} busy; exit 0 ;;
    *) echo "cannot take $lock" >&2; exit 1 ;;
esac
attempt=1 died= order= lines=()
while IFS= read -r line; do
    case $line in
        order=*) order=${{line#*=}}; lines+=("$line") ;;
        attempt=*) attempt=${{line#*=}} ;;
        died_in=*) died=${{line#*=}} ;;
        queued=*) ;;
        *) lines+=("$line") ;;
    esac
done < "$t" || exit
[[ $attempt =~ ^[0-9]+$ ]] || attempt=1
[[ $order =~ ^[0-9]+$ ]] || order=0
if [[ " $died" != *" $alloc" ]]; then
    attempt=$(( attempt + 1 ))
    died=${{died:+$died }}$alloc
fi
{{ printf '%s\\n' "${{lines[@]}}" "attempt=$attempt" "died_in=$died" &&
    printf 'queued=%s\\n' "$(date +%s.%N)"; }} > "$rewritten" && mv "$rewritten" "$t" || exit
for log in {logs}; do
    if [ -e "$log" ]; then
        mv "$log" "${{log%.txt}}.$(( attempt - 1 )).txt" || exit
    fi
done
rm -f {markers} && mv "$t" "$queue/$order.$run" || exit
echo {MARK} requeued "$attempt"
"""


def parse_requeue(exit_status: int, stdout: str, stderr: str) -> RequeueResult:
    """Interpret a requeue script's exit status and output."""
    lines = stdout.strip().splitlines()
    words = lines[-1].split() if lines else []
    if exit_status == 0 and words[:1] == [MARK] and len(words) >= 2:
        if words[1] == "requeued" and len(words) == 3 and words[2].isdigit():
            return RequeueResult(RequeueOutcome.REQUEUED, attempt=int(words[2]))
        if words[1] in (RequeueOutcome.BUSY, RequeueOutcome.NOT_CLAIMED):
            return RequeueResult(RequeueOutcome(words[1]))
    detail = stderr.strip() or stdout.strip() or f"requeue exited with status {exit_status}"
    return RequeueResult(RequeueOutcome.FAILED, detail=detail[-2000:])
