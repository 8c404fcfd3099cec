"""The agent an allocation runs, and what the allocation asks of the batch scheduler.

An allocation is an ordinary batch job (`cerise.remote.executor.submit`) in
`allocations/<name>/`, with the `Request` of `allocation_request` and, as its runner,
`bash agent.sh` (`runner_argv`): the job script's markers and its TERM/USR2 handling then
hold for the allocation too, and the agent's log is the job's `stderr.txt`. The agent is
bash ≥ 4.2 and coreutils, plus `flock` and, where present, `setpriv` (util-linux) and
/proc; it opens no port. It loops:

* reap: a run whose job script ended has its ticket moved to `done/` (with an `ended=`
  line); a run given back (below) is left alone for a few seconds.
* police: a run with a request in `cancel/`, or past its time limit, gets SIGTERM on its
  process tree (its job script records the signal and 143), again every second, and
  SIGKILL `kill_wait` seconds later. The agent keeps the time itself rather than set
  the job script's own limit (`jobscript.TIME_LIMIT_VARIABLE`): that one runs the runner
  under `timeout` in a process group of its own, which a batch system that kills a job by
  its process group (Grid Engine) would miss.
* claim: while cores are free, tickets from `queue/*` (oldest first) that fit in the free
  cores and in the time left (a ticket's time limit + `margin` before the allocation's deadline) are
  renamed into `claimed/<name>/` — only one agent's rename succeeds — and their job
  script started in the background, as a batch system would: `bash job.sh`, its own
  output in `scheduler.txt`, with the run's cores in `CERISE_RUN_CORES` (for its
  measurement, `cerise.remote.measurement`). First the run's lock is taken (`flock -n`,
  held through the inherited descriptor by the run's processes for as long as any
  lives), and the ticket given back if that fails, so a run never executes twice at the
  same time. A run with a request in `cancel/` is not started (its ticket goes to
  `done/`).
* heartbeat (once a second): when the agent last looked, its cores in use and its runs.
* ends by itself after more than `idle` seconds without runs: `ended` = `idle <time>`.

Polling is a glob of the queue every `poll` seconds while runs run or something happened
in the last `hot` seconds, then backing off up to `slow_poll`; a look that took none of
the tickets it saw (none fits yet) is repeated ever less often too, until a run ends. A
ticket that can never fit here (more cores than the allocation, more time than it has
left) is passed over without reading it again. The pause is a `read -t` on a private
FIFO, so polling forks nothing.

Runs die with their allocation: they stay in its process tree (no `setsid`, no `nohup`,
no process group of their own), which Slurm (proctrack/linuxproc or cgroup) and Grid
Engine (the job's process group) signal as a whole. Where the resource has `python3`, each
run's job script runs under a `REAPER`, a child subreaper (prctl PR_SET_CHILD_SUBREAPER):
a process the run leaves behind (a tool whose runner was stopped while starting it, a
daemon) is re-parented to it rather than to init, so it stays in the run's tree for the
agent's signals, and the reaper stops whatever is left once the job script ended. A stop
is sent again once a second until the run ends, so that a run still starting cannot miss
it. Ticket and cancel names the operator never writes (`layout.checked_name`) are left
alone, and a name is never expanded twice by bash. The agent traps TERM and USR2 (Grid
Engine's warning before SIGKILL): it writes `ended` = `terminated <time> <signal>`,
sends SIGTERM to its runs' process trees and exits 143 once their job scripts ended,
leaving their tickets in `claimed/<name>/` for a requeue. A run started through
`setpriv --pdeathsig TERM` also gets SIGTERM if the agent itself is killed with SIGKILL.
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from dataclasses import dataclass

from cerise.remote.pilot import layout
from cerise.remote.pilot.layout import PilotLayout
from cerise.remote.schedulers import Request


class InvalidSettings(ValueError):
    """Agent settings that cannot work; the message says which."""


@dataclass(frozen=True)
class AgentSettings:
    """What an allocation is, and how its agent behaves."""

    cores: int = 1
    """Cores of the allocation (its Request), shared by its runs."""
    time_limit: int = 3600
    """Seconds the allocation asks for; its deadline is its start plus this."""
    idle: int = 300
    """Seconds without a run after which the agent ends itself (0: never)."""
    margin: int = 10
    """Seconds kept free before the deadline when deciding whether a run still fits."""
    kill_wait: int = 30
    """Seconds between SIGTERM and SIGKILL for a run that is cancelled or out of time."""
    poll: float = 0.02
    """Seconds between looks at the queue while busy."""
    slow_poll: float = 0.5
    """The longest pause between looks, reached by doubling once idle."""
    hot: int = 5
    """Seconds after the last claim or end during which the agent keeps polling fast."""

    def __post_init__(self) -> None:
        if self.cores < 1:
            raise InvalidSettings(f"an allocation needs at least one core, not {self.cores}")
        if self.time_limit < 0 or self.idle < 0 or self.margin < 0 or self.kill_wait < 0:
            raise InvalidSettings("time limit, idle time, margin and kill wait are seconds ≥ 0")
        if not 0.001 <= self.poll <= self.slow_poll:
            raise InvalidSettings("the poll interval must be at least 1 ms and at most the "
                                  "slow poll interval")


def allocation_request(name: str, settings: AgentSettings) -> Request:
    """What the allocation `name` asks of the batch scheduler."""
    return Request(name=f"cerise-pilot-{layout.checked_name(name, 'allocation')}",
                   cores=settings.cores, time_limit=settings.time_limit, rerun=False)


def runner_argv(pilot: PilotLayout, name: str) -> Sequence[str]:
    """The allocation's "runner": its agent script (the job script appends two paths,
    which the agent ignores)."""
    return ["bash", layout.agent_path(pilot.allocation(name))]


REMOVED_MARK = "cerise-allocation-removed"


def removal_script(pilot: PilotLayout, name: str) -> str:
    """Remove a gone allocation's directory and claim directory, unless it still holds
    tickets (requeue them first); prints `REMOVED_MARK` when it did. Only for an allocation
    the batch scheduler no longer has."""
    claims, files = shlex.quote(pilot.claimed(name)), pilot.allocation(name)
    return (f"rmdir {claims} 2>/dev/null; [ -e {claims} ] && exit 0; "
            f"rm -rf -- {shlex.quote(files.job_dir)} && echo {REMOVED_MARK}")


def _milliseconds(seconds: float) -> int:
    return max(1, round(seconds * 1000))


def agent_script(pilot: PilotLayout, name: str, settings: AgentSettings) -> str:
    """The agent of allocation `name`: the settings, then the fixed loop."""
    q = shlex.quote
    values = {
        "pilot": q(pilot.root), "name": q(layout.checked_name(name, "allocation")),
        "cores": settings.cores, "limit": settings.time_limit, "idle": settings.idle,
        "margin": settings.margin, "kill_wait": settings.kill_wait,
        "fast_ms": _milliseconds(settings.poll), "slow_ms": _milliseconds(settings.slow_poll),
        "hot": settings.hot, "reaper_py": q(REAPER),
    }
    assignments = "\n".join(f"{key}={value}" for key, value in values.items())
    return f"#!/bin/bash\n# Cerise's pilot agent (cerise.remote.pilot)\n{assignments}\n{_LOOP}"


REAPER = r"""
import os, signal, sys, time


def subreaper():
    import ctypes
    return ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0) == 0  # SET_CHILD_SUBREAPER


if sys.argv[1] == "--check":
    sys.exit(0 if subreaper() else 1)
grace, agent, argv = float(sys.argv[1]), int(sys.argv[2]), sys.argv[3:]


def forward(signum, _):
    if child:  # never 0: that would signal the whole process group
        try:
            os.kill(child, signum)
        except ProcessLookupError:
            pass


child = 0
for signum in (signal.SIGTERM, signal.SIGUSR2):
    signal.signal(signum, forward)
if os.getppid() != agent:  # the agent died while this started: run nothing
    sys.exit(143)
subreaper()  # before the job script starts: it must not leave anything behind unseen
child = os.fork()
if child == 0:
    for signum in (signal.SIGTERM, signal.SIGUSR2, signal.SIGPIPE):
        signal.signal(signum, signal.SIG_DFL)
    os.execvp(argv[0], argv)
while True:
    pid, status = os.waitpid(-1, 0)
    if pid == child:
        break
code = os.waitstatus_to_exitcode(status)


def descendants():
    children = {}
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{entry}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if fields[0] != "Z":
            children.setdefault(int(fields[1]), []).append(int(entry))
    found = children.get(os.getpid(), [])
    for pid in found:
        found += children.get(pid, [])
    return found


signalled, deadline = set(), time.monotonic() + grace
while True:
    try:
        while os.waitpid(-1, os.WNOHANG)[0]:
            pass
    except ChildProcessError:
        break
    late = time.monotonic() >= deadline
    for pid in descendants():
        if late or pid not in signalled:
            signalled.add(pid)
            try:
                os.kill(pid, signal.SIGKILL if late else signal.SIGTERM)
            except ProcessLookupError:
                pass
    time.sleep(0.05)
sys.exit(128 - code if code < 0 else code)
"""
"""The reaper each run starts under (`python3 -c`, when the resource has Python 3): it
becomes a child subreaper, runs the job script, and once that ended stops what the run
left behind (TERM, then KILL after a grace of seconds), so that nothing of a run outlives
it; its exit status is the job script's."""

_LOOP = r"""
queue=$pilot/queue claimed=$pilot/claimed/$name done=$pilot/done cancel=$pilot/cancel
# A run's name as the operator writes it; any other file in the queue is left alone, and a
# name is only ever expanded once (single-quoted subscripts for `unset`).
named='^[A-Za-z0-9_-]+$' ticketed='^[0-9]+\.([A-Za-z0-9_-]+)$'
me=$pilot/allocations/$name
mkdir -p "$queue" "$claimed" "$done" "$cancel" || exit 1
now=0
tick() { printf -v now '%(%s)T' -1; }
say() { printf '%(%F %T)T %s\n' -1 "$*" >&2; }
tick
started=$now
[ -s "$me/started" ] && read -r started < "$me/started"
[[ $started =~ ^[0-9]+$ ]] || started=$now
deadline=$(( limit > 0 ? started + limit : 0 ))
printf '%s %s %s %s %s\n' "$started" "$deadline" "$cores" "${HOSTNAME:-unknown}" "$$" \
    > "$me/agent"

# A run's job script gets SIGTERM if the agent dies without passing it on (SIGKILL).
guard=()
setpriv --pdeathsig TERM -- true 2>/dev/null && guard=(setpriv --pdeathsig TERM --)
# Each run under a reaper (a child subreaper): what its processes leave behind stays in
# its tree, and dies with it.
reaper=()
python3 -I -S -c "$reaper_py" --check 2>/dev/null && reaper=(python3 -I -S -c "$reaper_py")

nap_fd=
if mkfifo "$me/nap" 2>/dev/null && exec {nap_fd}<>"$me/nap"; then
    rm -f "$me/nap"
    nap() { read -r -t "$1" -u "$nap_fd" _; }
else
    nap() { sleep "$1" & wait $!; }
fi

declare -A pid want since stopped resent held never c_script c_output c_lock c_cores c_limit
used=0 quiet=$now busy_at=$now beat=-1 delay_ms=$fast_ms
passed=0 skip=0 skipping=0

read_ticket() {  # $1 run, $2 ticket: cache what the agent needs of it
    local line script= output= lock= cores=1 limit=0
    while IFS= read -r line; do
        case $line in
            job_script=*) script=${line#*=} ;;
            output=*) output=${line#*=} ;;
            lock=*) lock=${line#*=} ;;
            cores=*) cores=${line#*=} ;;
            time_limit=*) limit=${line#*=} ;;
        esac
    done 2>/dev/null < "$2" || return 1
    [[ -n $script && -n $output && -n $lock ]] || return 1
    [[ $cores =~ ^[0-9]+$ && $limit =~ ^[0-9]+$ ]] || return 1
    (( cores >= 1 )) || cores=1
    c_script[$1]=$script c_output[$1]=$output c_lock[$1]=$lock
    c_cores[$1]=$cores c_limit[$1]=$limit
}

finish() {  # $1 run, $2 how it ended (its job script's exit status, or cancelled)
    printf 'ended=%s %s %s\n' "$name" "$now" "$2" >> "$claimed/$1" &&
        mv "$claimed/$1" "$done/$1"
    say "run $1 ended: $2"
}

launch() {  # $1 run, whose ticket is in $claimed, $2 its name in the queue
    local run=$1 queued=$2
    (
        [ -n "$nap_fd" ] && exec {nap_fd}>&-
        exec 9>>"${c_lock[$run]}" || exit 1
        if ! flock -n 9; then
            mv "$claimed/$run" "$queue/$queued"
            exit 75
        fi
        # The reaper starts with TERM and USR2 ignored, until its own handlers stand (a
        # stop sent meanwhile is sent again); bash, without it, must not inherit that.
        (( ${#reaper[@]} )) && trap '' TERM USR2
        export CERISE_RUN_CORES=${c_cores[$run]}  # the run's, not the allocation's
        exec "${guard[@]}" ${reaper[@]+"${reaper[@]}" "$kill_wait" "$$"} \
            bash "${c_script[$run]}" > "${c_output[$run]}" 2>&1 < /dev/null
    ) &
    pid[$run]=$! want[$run]=${c_cores[$run]} since[$run]=$now
    (( used += ${c_cores[$run]} ))
    say "run $run started: ${c_cores[$run]} core(s), time limit ${c_limit[$run]} s"
}

claim() {  # take tickets (<order>.<run>) that fit while cores are free; true if any was;
           # $passed: how many it left in the queue
    local ticket queued run asked limit took=1
    passed=0
    for ticket in "$queue"/*; do
        (( used < cores )) || break
        queued=${ticket##*/} run=${queued#*.}
        [[ $run != "$queued" ]] || continue
        (( passed += 1 ))
        [[ -z ${pid[$run]:-} && -z ${never[$run]:-} ]] || continue
        if [[ -z ${c_script[$run]:-} ]] && ! { [[ $queued =~ $ticketed ]] &&
                read_ticket "$run" "$ticket"; }; then
            never[$run]=1
            continue
        fi
        asked=${c_cores[$run]} limit=${c_limit[$run]}
        # Too wide, or too long for the time left (which only shrinks): never here.
        if (( asked > cores || (deadline && limit && now + limit + margin > deadline) )); then
            never[$run]=1
            continue
        fi
        (( asked <= cores - used && ${held[$run]:-0} <= now )) || continue
        # Another agent was faster, unless NFS reports a retried rename that did happen.
        mv "$ticket" "$claimed/$run" 2>/dev/null || [[ -e $claimed/$run ]] || continue
        (( passed -= 1 ))
        took=0
        if [[ -e $cancel/$run ]]; then finish "$run" cancelled; continue; fi
        launch "$run" "$queued"
    done
    return $took
}

reap() {  # collect runs whose job script ended; true if any did
    local run status reaped=1
    for run in "${!pid[@]}"; do
        kill -0 "${pid[$run]}" 2>/dev/null && continue
        wait "${pid[$run]}"
        status=$?
        (( used -= ${want[$run]} ))
        unset 'pid[$run]' 'want[$run]' 'since[$run]' 'stopped[$run]' 'resent[$run]'
        reaped=0
        if [[ -e $claimed/$run ]]; then
            finish "$run" "$status"
        else
            held[$run]=$(( now + 5 ))
            say "run $run given back to the queue: its run.lock is held by another process"
        fi
    done
    return $reaped
}

family=()
tree() {  # $1 pid: it and its descendants, in $family
    local -A children=()
    local stat line parent i=0
    for stat in /proc/[0-9]*/stat; do
        read -r line 2>/dev/null < "$stat" || continue
        parent=${line##*) } parent=${parent#* } parent=${parent%% *}
        children[$parent]+=" ${line%% *}"
    done
    family=("$1")
    while (( i < ${#family[@]} )); do
        family+=(${children[${family[i]}]})
        (( i += 1 ))
    done
}

signal_run() {  # $1 run, $2 signal: its whole process tree
    tree "${pid[$1]}"
    kill -s "$2" "${family[@]}" 2>/dev/null
}

police() {  # stop runs that are cancelled or out of time
    local request run limit
    for request in "$cancel"/*; do
        run=${request##*/}
        [[ -n ${pid[$run]:-} && -z ${stopped[$run]:-} && $run =~ $named ]] || continue
        say "run $run: cancelled, stopping it"
        signal_run "$run" TERM
        stopped[$run]=$now
    done
    for run in "${!pid[@]}"; do
        limit=${c_limit[$run]}
        # Whole seconds: past `since + limit` the run had at least `limit` seconds.
        if [[ -z ${stopped[$run]:-} ]] && (( limit > 0 && now > ${since[$run]} + limit )); then
            say "run $run: its time limit of $limit s is up, stopping it"
            signal_run "$run" TERM
            stopped[$run]=$now
        elif [[ -n ${stopped[$run]:-} ]] && (( now >= ${stopped[$run]} + kill_wait )); then
            signal_run "$run" KILL
        elif [[ -n ${stopped[$run]:-} ]] &&
                (( now > ${stopped[$run]} && now != ${resent[$run]:-0} )); then
            signal_run "$run" TERM  # once a second: a run still starting may have missed it
            resent[$run]=$now
        fi
    done
}

terminate() {  # $1 signal: the allocation ends; its runs' tickets stay claimed
    trap '' TERM USR2
    tick
    printf 'terminated %s %s\n' "$now" "$1" > "$me/ended"
    say "terminated by SIG$1: stopping ${#pid[@]} run(s), their tickets stay claimed"
    local run
    for run in "${!pid[@]}"; do signal_run "$run" TERM; done
    wait
    exit 143
}
trap 'terminate TERM' TERM
trap 'terminate USR2' USR2

say "allocation $name: $cores core(s), deadline $deadline, idle after $idle s"
while :; do
    tick
    if reap; then busy_at=$now skip=0 skipping=0; fi
    police
    # A look that took none of the tickets it saw is repeated ever less often (up to
    # slow_poll) until a run ends: bash takes about a millisecond per 40 tickets. The
    # pauses skipped are counted at the current pause, so never more than slow_poll.
    cap=$(( slow_ms / delay_ms - 1 ))
    (( skipping <= cap )) || skipping=$cap
    if (( used < cores && skipping > 0 )); then
        (( skipping -= 1 ))
    elif (( used < cores )); then
        if claim; then
            busy_at=$now skip=0
        elif (( passed > 0 )); then
            skip=$(( skip > 0 ? skip * 2 : 1 ))
            (( skip <= cap )) || skip=$cap
        else
            skip=0
        fi
        skipping=$skip
    fi
    if (( now != beat )); then
        printf '%s %s %s\n' "$now" "$used" "${#pid[@]}" > "$me/heartbeat"
        beat=$now
    fi
    if (( ${#pid[@]} > 0 )); then
        quiet=$now
    elif (( idle > 0 && now - quiet > idle )); then
        printf 'idle %s\n' "$now" > "$me/ended"
        say "no runs for $idle s: ending"
        exit 0
    fi
    if (( ${#pid[@]} > 0 || now - busy_at < hot )); then
        delay_ms=$fast_ms
    else
        delay_ms=$(( delay_ms * 2 < slow_ms ? delay_ms * 2 : slow_ms ))
    fi
    printf -v pause '%d.%03d' $(( delay_ms / 1000 )) $(( delay_ms % 1000 ))
    nap "$pause"
done
"""
