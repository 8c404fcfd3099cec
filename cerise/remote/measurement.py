"""The job script's own measurement of a run: a small Python program the runner starts under.

Where the compute resource has a working `python3` (it has, where the runner is cwltool),
the job script runs the runner as the child of `MEASURE_PY` (`python3 -I -S -c`), which
passes on every stopping signal, waits for it, and writes one JSON line to the run's
`accounting.json`: `elapsed` (wall seconds), `cpu` (user plus system seconds of the
runner and every process it waited for, `getrusage(RUSAGE_CHILDREN)`), `maxRss` (bytes:
the peak of its largest process), `env` (the scheduler's variables that say how many cores
the job has, `cerise.model.accounting.CORE_VARIABLES`) and `usable` (the CPUs it may run
on). It then ends as the runner did: with its exit status, or killed by the same signal,
so the job script sees what it would have seen without it. Without Python the runner runs
as it did, and the run has no figures of its own (docs/accounting.md).

Bash alone cannot do this: its `times` gives CPU seconds but nothing gives the children's
peak memory, which the kernel keeps only in `getrusage`.
"""

from __future__ import annotations

from cerise.model.accounting import CORE_VARIABLES

MEASURE_PY = f"""\
import json, os, resource, signal, sys, time
if sys.argv[1:] == ["--check"]:
    print(sys.executable)
    sys.exit(0)
path, argv = sys.argv[1], sys.argv[2:]
child = 0
def forward(number, frame):
    if child:
        try:
            os.kill(child, number)
        except OSError:
            pass
STOPS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2)
for number in STOPS:
    signal.signal(number, forward)
begun = time.monotonic()
signal.pthread_sigmask(signal.SIG_BLOCK, STOPS)  # a stop during the fork waits for `child`
child = os.fork()
if child == 0:
    for number in STOPS:
        signal.signal(number, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOPS)
    try:
        os.execvp(argv[0], argv)
    except OSError as error:
        sys.stderr.write(f"cerise: cannot run {{argv[0]}}: {{error}}\\n")
    os._exit(127)
signal.pthread_sigmask(signal.SIG_UNBLOCK, STOPS)
status = os.waitpid(child, 0)[1]
elapsed = time.monotonic() - begun
usage = resource.getrusage(resource.RUSAGE_CHILDREN)
record = {{
    "elapsed": round(elapsed, 3),
    "cpu": round(usage.ru_utime + usage.ru_stime, 3),
    "maxRss": usage.ru_maxrss * 1024,
    "env": {{name: os.environ[name] for name in {CORE_VARIABLES!r} if name in os.environ}},
    "usable": len(os.sched_getaffinity(0)),
}}
try:
    with open(path + ".tmp", "w") as out:
        out.write(json.dumps(record) + "\\n")
    os.replace(path + ".tmp", path)
except OSError as error:
    sys.stderr.write(f"cerise: measurement not written: {{error}}\\n")
if os.WIFSIGNALED(status):
    number = os.WTERMSIG(status)
    signal.signal(number, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, [number])
    os.kill(os.getpid(), number)
    os._exit(128 + number)
sys.exit(os.waitstatus_to_exitcode(status))
"""
"""Run as `python3 -I -S -c MEASURE_PY <accounting.json> <runner argv…>`; `--check` only
prints the interpreter's own path, which the job script then runs (a `python3` that is a
shim, pyenv's say, would be a shell script that a stop could catch half-way)."""
