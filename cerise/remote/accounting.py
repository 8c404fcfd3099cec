"""Reading what ended runs cost: ONE script for all the jobs whose outputs were collected
together, printing each attempt's `accounting.json` (read with builtins) and, for Slurm
jobs, one `sacct` for all their ids.

Build (`read_script`), run (`read`), parse (`parse_read`), as the scheduler plug-ins do.
What the figures mean and which wins is `cerise.model.accounting`'s.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from cerise.model import accounting
from cerise.model.accounting import Figures, SacctJob
from cerise.remote.protocol import Remote

MEASURED_BEGIN = "--cerise-measured--"
SACCT_LINE = "--cerise-sacct--"
"""Starts the line with sacct's exit status and its words on stderr."""
SACCT_TIMEOUT = 60
"""Seconds sacct may take (it asks slurmdbd, which may be slow or down)."""
WORDS_LIMIT = 1000


@dataclass(frozen=True)
class Measured:
    """A job whose runs' figures are to be read."""

    key: str
    measurements: Sequence[str]
    """The path of each attempt's `accounting.json`, first attempt first."""
    sacct_ids: Sequence[str] = ()
    """The Slurm ids of its attempts, in the same order (empty: not a Slurm job)."""


@dataclass(frozen=True)
class ReadResult:
    """What the script printed."""

    measured: Mapping[str, Sequence[Figures | None]]
    """Each job's attempts' own figures (None: that attempt wrote none)."""
    sacct: Mapping[str, SacctJob] = field(default_factory=dict)
    sacct_answered: bool = False
    """Whether sacct ran and answered (False: not asked, not installed, failed)."""
    sacct_disabled: bool = False
    """sacct said that the cluster keeps no accounting."""
    sacct_words: str = ""


def read_script(jobs: Sequence[Measured], prologue: str = "") -> str:
    """Shell text printing `MEASURED_BEGIN`, `a <key> <attempt> <line>` for each attempt's
    measurement, then (if any job has Slurm ids) sacct's rows for all of them and
    `SACCT_LINE <exit status> <words>`. Builtins only per job: no process per file."""
    q = shlex.quote
    data = " ".join(f"{q(job.key)} {number} {q(path)}" for job in jobs
                    for number, path in enumerate(job.measurements, start=1))
    lines = [prologue, f"echo {MEASURED_BEGIN}"]
    if data:
        lines.append(f"""while IFS= read -r -d '' __k && IFS= read -r -d '' __n &&
        IFS= read -r -d '' __f; do
    __line=
    {{ IFS= read -r __line < "$__f"; }} 2>/dev/null
    printf 'a %s %s %s\\n' "$__k" "$__n" "$__line"
done < <(printf '%s\\0' {data})""")
    ids = [job_id for job in jobs for job_id in job.sacct_ids if job_id]
    if ids:
        fields = ",".join(accounting.SACCT_FIELDS)
        command = shlex.join(["timeout", "-k", "5", str(SACCT_TIMEOUT), "sacct",
                              "-j", ",".join(ids), "-P", "-n", "-o", fields])
        lines.append(f"""{{ __cerise_err=$({command} 2>&1 1>&3 3>&-); }} 3>&1
__cerise_status=$?
__cerise_err=${{__cerise_err//[$'\\n\\r\\t']/ }}
printf '\\n{SACCT_LINE} %s %s\\n' "$__cerise_status" "${{__cerise_err:0:{WORDS_LIMIT}}}\"""")
    return "\n".join(lines) + "\n"


def parse_read(output: str, jobs: Sequence[Measured]) -> ReadResult:
    """The figures in `read_script`'s output (what is missing is None)."""
    measured: dict[str, list[Figures | None]] = {
        job.key: [None] * len(job.measurements) for job in jobs}
    _, _, measured_text = output.partition(f"{MEASURED_BEGIN}\n")
    text, found, status_line = measured_text.rpartition(f"\n{SACCT_LINE} ")
    if not found:
        text, status_line = measured_text, ""
    rest: list[str] = []
    for line in text.splitlines():
        kind, _, fields = line.partition(" ")
        key, _, fields = fields.partition(" ")
        number, _, line_text = fields.partition(" ")
        if kind == "a" and key in measured and number.isdigit():
            attempts = measured[key]
            if 1 <= int(number) <= len(attempts):
                attempts[int(number) - 1] = accounting.parse_measurement(line_text)
        else:
            rest.append(line)
    status, _, words = status_line.strip().partition(" ")
    answered = status == "0"
    return ReadResult(
        measured=measured,
        sacct=accounting.parse_sacct("\n".join(rest)) if answered else {},
        sacct_answered=answered, sacct_disabled=accounting.sacct_disabled(words),
        sacct_words=words.strip())


async def read(remote: Remote, jobs: Sequence[Measured], prologue: str = "") -> ReadResult:
    """Run `read_script` for `jobs`; what it found. A failure of sacct is no error (the
    runs keep their own figures); one of the connection is."""
    result = await remote.run(read_script(jobs, prologue))
    return parse_read(result.stdout, jobs)
