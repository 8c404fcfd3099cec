"""Milliseconds per workflow check (`cwl.parse_workflow`, the CWL loader's validation included)
for the example workflows against the example specialisation's steps: the first call in a
process (which loads the CWL schemas) and the median of the rest, in wall-clock time and in
the process's CPU time (which a busy machine does not inflate).

    .venv/bin/python benchmarks/workflow_validation.py
"""

from __future__ import annotations

import contextlib
import statistics
import time
from pathlib import Path

from cerise.model import cwl

ROOT = Path(__file__).resolve().parent.parent
REPEATS = 50

WORKFLOWS = {
    "wc (README)": """\
cwlVersion: v1.2
class: Workflow
inputs: {file: File}
outputs: {counts: {type: File, outputSource: wc/output}}
steps: {wc: {run: cerise/test/wc.cwl, in: {file: file}, out: [output]}}
""",
    "tutorial (hostname, custom program)": """\
cwlVersion: v1.2
class: Workflow
inputs: {input_file: File}
outputs:
  host: {type: File, outputSource: hostname/output}
  text: {type: File, outputSource: custom/out_text}
steps:
  hostname: {run: example/hostname.cwl, in: {}, out: [output]}
  custom: {run: example/custom_program.cwl, in: {in_text: input_file}, out: [out_text]}
""",
    "hostname then wc": """\
cwlVersion: v1.2
class: Workflow
inputs: {}
outputs: {counts: {type: File, outputSource: wc/output}}
steps:
  host: {run: cerise/test/hostname.cwl, in: {}, out: [output]}
  wc: {run: cerise/test/wc.cwl, in: {file: host/output}, out: [output]}
""",
    "wc in CWL v1.0": """\
cwlVersion: v1.0
class: Workflow
inputs: {file: File}
outputs: {counts: {type: File, outputSource: wc/output}}
steps: {wc: {run: cerise/test/wc.cwl, in: {file: file}, out: [output]}}
""",
    "wc in an inline subworkflow, list forms": """\
cwlVersion: v1.2
class: Workflow
requirements: {SubworkflowFeatureRequirement: {}}
inputs: [{id: file, type: File}]
outputs: [{id: counts, type: File, outputSource: count/counts}]
steps:
  - id: count
    run:
      class: Workflow
      inputs: {file: File}
      outputs: {counts: {type: File, outputSource: wc/output}}
      steps:
        - {id: wc, run: cerise/test/wc.cwl, in: [{id: file, source: file}], out: [output]}
    in: [{id: file, source: file}]
    out: [counts]
""",
    "JavaScript in valueFrom (refused)": """\
cwlVersion: v1.2
class: Workflow
requirements: {StepInputExpressionRequirement: {}}
inputs: {file: File}
outputs: {counts: {type: File, outputSource: wc/output}}
steps:
  wc:
    run: cerise/test/wc.cwl
    in: {file: {source: file, valueFrom: "$(self.basename.toUpperCase())"}}
    out: [output]
""",
    "wrong outputSource (refused)": """\
cwlVersion: v1.2
class: Workflow
inputs: {file: File}
outputs: {counts: {type: File, outputSource: wc/outptu}}
steps: {wc: {run: cerise/test/wc.cwl, in: {file: file}, out: [output]}}
""",
}


def installed_steps() -> dict[str, str]:
    """The example specialisation's steps, as the worker reads them from a resource."""
    found = {}
    for project in (ROOT / "specialisations" / "example").iterdir():
        steps = project / "steps"
        for path in steps.rglob("*.cwl") if steps.is_dir() else ():
            found[str(path.relative_to(steps))] = path.read_text()
    return found


def check(text: str, steps: dict[str, str]) -> tuple[float, float]:
    """Wall-clock and CPU milliseconds of one check."""
    started, cpu = time.perf_counter(), time.process_time()
    with contextlib.suppress(cwl.InvalidWorkflow):
        cwl.parse_workflow(text, installed_steps=steps)
    return (time.perf_counter() - started) * 1000, (time.process_time() - cpu) * 1000


def main() -> None:
    steps = installed_steps()
    first, first_cpu = check(WORKFLOWS["wc (README)"], steps)
    print(f"first check in the process: {first:.0f} ms ({first_cpu:.0f} ms CPU)")
    for name, text in WORKFLOWS.items():
        wall, cpu = zip(*(check(text, steps) for _ in range(REPEATS)), strict=True)
        print(f"{name}: {statistics.median(wall):.1f} ms per check, "
              f"{statistics.median(cpu):.1f} ms CPU (medians of {REPEATS})")


if __name__ == "__main__":
    main()
