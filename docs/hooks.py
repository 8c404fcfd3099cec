"""MkDocs hook: the parts of the documentation generated from the code, so they cannot drift.

A page asks for generated content with an HTML comment, replaced at build time:

* ``<!-- generated: state-diagram -->``: an image of the job state machine, drawn as SVG
  (``img/job-states.svg``) from `cerise.model.states` (`PROGRESS` and the cancel map);
* ``<!-- generated: phase-table -->``: each phase with its meaning, REST and WES state;
* ``<!-- generated: transition-table -->``: each phase and the phases it may go to;
* ``<!-- generated: crd-fields NAME SECTION -->``: every field of ``crds/NAME.yaml`` under
  ``SECTION`` (``spec`` or ``status``), with type, default and description;
* ``<!-- generated: include PATH LANGUAGE -->``: the repository's file PATH as a fenced
  code block, so an example shown is the example tested;
* ``<!-- generated: metrics [MODULE] -->``: the Prometheus metrics of MODULE (default
  `cerise.apiserver.metrics`; also `cerise.operator.metrics`), with their labels and help
  text.

An unknown marker, a phase without a meaning here, or a phase the diagram cannot place
fails the build. Lines ``# test: ...`` that open a fenced code block are instructions for
``tests/integration/test_docs_examples.py`` and are removed from the rendered page.
"""

from __future__ import annotations

import html
import importlib
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from mkdocs.config.defaults import MkDocsConfig
from mkdocs.exceptions import PluginError
from mkdocs.structure.files import File, Files
from mkdocs.structure.pages import Page

from cerise.model import states
from cerise.model.states import Phase

REPO = Path(__file__).resolve().parent.parent
DIAGRAM = "img/job-states.svg"
MARKER = re.compile(r"<!-- generated: ([a-z-]+)((?: [A-Za-z0-9_./-]+)*) -->")
TEST_LINES = re.compile(r"^(?P<fence>```[A-Za-z]*\n)(?:# test:[^\n]*\n)+", re.MULTILINE)

MEANINGS: dict[Phase, str] = {
    Phase.SUBMITTED: "accepted; not yet checked",
    Phase.STAGING_IN: "valid; inputs are being copied to the compute resource",
    Phase.STAGING_IN_CR: "cancel requested while staging in",
    Phase.WAITING: "in the scheduler's queue",
    Phase.WAITING_CR: "cancel requested while queued",
    Phase.RUNNING: "the CWL runner is running",
    Phase.RUNNING_CR: "cancel requested while running",
    Phase.FINISHED: "the runner has ended; outputs not yet collected",
    Phase.STAGING_OUT: "outputs are being copied to the file exchange",
    Phase.STAGING_OUT_CR: "cancel requested while staging out",
    Phase.SUCCESS: "done; outputs in `status.output`",
    Phase.CANCELLED: "cancelled by the user",
    Phase.PERMANENT_FAILURE: "the workflow or its input is wrong, or a step failed",
    Phase.TEMPORARY_FAILURE: "a step failed in a way that may pass on a retry",
    Phase.SYSTEM_ERROR: "Cerise or the compute resource failed",
}
"""What each phase means, in a user's words (the build fails if a phase is missing)."""


# --- the state machine -------------------------------------------------------------------

def cancel_map() -> dict[Phase, Phase]:
    """Each phase a cancel request changes, and what it becomes."""
    return {phase: target for phase in Phase
            if (target := states.cancel_target(phase)) is not None}


def progress_edges() -> list[tuple[Phase, Phase]]:
    """The operator's transitions, in the enum's order."""
    return [(source, target) for source in Phase
            for target in Phase if target in states.PROGRESS.get(source, frozenset())]


def from_everywhere() -> list[Phase]:
    """Phases that every non-final phase may go to (drawn once, with a note, not as edges)."""
    active = [phase for phase in Phase if phase not in states.FINAL]
    return [target for target in Phase
            if all(target in states.PROGRESS.get(phase, frozenset()) for phase in active)]


def _main_chain() -> list[Phase]:
    """The longest path of progress from `Submitted` through phases that are not cancels,
    ending in a final phase (`Success` on a tie): the row the diagram is built around."""
    def paths(phase: Phase, before: frozenset[Phase] = frozenset()) -> Iterator[list[Phase]]:
        if phase in states.FINAL:
            yield [phase]
            return
        for target in sorted(states.PROGRESS.get(phase, frozenset())):
            if target not in states.CANCELLING and target not in before:  # no loops (a retry)
                yield from ([phase, *rest] for rest in paths(target, before | {phase}))

    return max(paths(Phase.SUBMITTED), key=lambda p: (len(p), p[-1] is Phase.SUCCESS))


@dataclass(frozen=True)
class Place:
    """Where a phase's box is: a column (may be fractional) and a row (0 at the top)."""

    column: float
    row: int


TOP, MAIN, CANCEL, BOTTOM = range(4)


def layout() -> dict[Phase, Place]:
    """A place for every phase; PluginError when a phase fits none of the rules."""
    chain = _main_chain()
    places = {phase: Place(index, MAIN) for index, phase in enumerate(chain)}
    for phase, target in cancel_map().items():
        if phase in places and target in states.CANCELLING:
            places[target] = Place(places[phase].column, CANCEL)
    edges = progress_edges() + list(cancel_map().items())
    everywhere = from_everywhere()
    rows: dict[int, list[Phase]] = {TOP: [], BOTTOM: []}
    for phase in Phase:
        if phase in places or phase not in states.FINAL:
            continue
        from_cancels = any(s in states.CANCELLING for s, t in edges if t is phase)
        rows[BOTTOM if from_cancels and phase not in everywhere else TOP].append(phase)
    last = len(chain) - 1
    for row, members in rows.items():
        def centre(phase: Phase) -> float:
            sources = [places[s].column for s, t in edges if t is phase and s in places]
            if phase in everywhere or not sources:
                return float(last)
            return sum(sources) / len(sources)

        previous = -1.0
        for phase in sorted(members, key=lambda p: (centre(p), p not in everywhere)):
            column = max(centre(phase), previous + 1)
            places[phase] = Place(column, row)
            previous = column
        overflow = previous - last
        if overflow > 0:  # pushed past the right edge: shift the row left
            for phase in members:
                places[phase] = Place(places[phase].column - overflow, row)
    missing = [phase for phase in Phase if phase not in places]
    if missing:
        raise PluginError(f"the state diagram has no place for {', '.join(missing)}; "
                          "teach docs/hooks.py's layout() where to draw them")
    return places


_SPACING, _WIDTH, _HEIGHT, _MARGIN = 155, 136, 44, 20
_ROW_Y = {TOP: 20, MAIN: 140, CANCEL: 250, BOTTOM: 370}
_FILL = {"final-good": "#dcfce7", "final-bad": "#fee2e2", "cancel": "#fef3c7",
         "cancelled": "#e5e7eb", "active": "#dbeafe"}
_PROGRESS_COLOUR, _CANCEL_COLOUR = "#334155", "#b45309"


def _kind(phase: Phase) -> str:
    if phase is Phase.SUCCESS:
        return "final-good"
    if phase is Phase.CANCELLED:
        return "cancelled"
    if phase in states.FINAL:
        return "final-bad"
    return "cancel" if phase in states.CANCELLING else "active"


def state_diagram_svg() -> str:
    """The job state machine as a standalone SVG document."""
    places = layout()
    everywhere = from_everywhere()
    columns = max(place.column for place in places.values())
    width = int(2 * _MARGIN + columns * _SPACING + _WIDTH)
    height = _ROW_Y[BOTTOM] + _HEIGHT + 70

    def x(phase: Phase) -> float:
        return _MARGIN + places[phase].column * _SPACING + _WIDTH / 2

    def top(phase: Phase) -> float:
        return float(_ROW_Y[places[phase].row])

    def bottom(phase: Phase) -> float:
        return top(phase) + _HEIGHT

    occupied = {(place.column, place.row) for place in places.values()}
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="sans-serif" role="img">',
        "<title>The job state machine of Cerise (generated from cerise.model.states)</title>",
        "<defs>",
        *(f'<marker id="arrow-{name}" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" '
          f'markerHeight="7" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" '
          f'fill="{colour}"/></marker>'
          for name, colour in (("progress", _PROGRESS_COLOUR), ("cancel", _CANCEL_COLOUR))),
        "</defs>",
    ]

    def edge(source: Phase, target: Phase, kind: str) -> str:
        a, b = places[source], places[target]
        colour = _PROGRESS_COLOUR if kind == "progress" else _CANCEL_COLOUR
        style = f'fill="none" stroke="{colour}" stroke-width="1.4" ' \
                f'marker-end="url(#arrow-{kind})"' + \
                (' stroke-dasharray="5,3"' if kind == "cancel" else "")
        if a.row == b.row:
            step = 1 if b.column > a.column else -1
            if abs(b.column - a.column) <= 1:
                y = top(source) + _HEIGHT / 2
                return (f'<path d="M{x(source) + step * _WIDTH / 2:.1f},{y:.1f} '
                        f'H{x(target) - step * _WIDTH / 2:.1f}" {style}/>')
            lift = -38 if a.row != CANCEL else 38
            y = top(source) if lift < 0 else bottom(source)
            return (f'<path d="M{x(source):.1f},{y:.1f} Q{(x(source) + x(target)) / 2:.1f},'
                    f'{y + 2 * lift:.1f} {x(target):.1f},{y:.1f}" {style}/>')
        if b.row < a.row:
            return (f'<path d="M{x(source):.1f},{top(source):.1f} L{x(target):.1f},'
                    f'{bottom(target):.1f}" {style}/>')
        if b.row == a.row + 1:
            return (f'<path d="M{x(source):.1f},{bottom(source):.1f} L{x(target):.1f},'
                    f'{top(target):.1f}" {style}/>')
        # Down past a row: along a channel above the target's row, clear of the boxes between.
        offset = -8 if kind == "cancel" else 0
        channel = top(target) - 18 + offset
        start = x(source)
        jog = ""
        if any((a.column, row) in occupied for row in range(a.row + 1, b.row)):
            start += _SPACING / 2
            jog = f" V{bottom(source) + 10:.1f} H{start:.1f}"
        end = x(target) + (-10 if kind == "cancel" else 10)
        return (f'<path d="M{x(source):.1f},{bottom(source):.1f}{jog} V{channel:.1f} '
                f'H{end:.1f} V{top(target):.1f}" {style}/>')

    for source, target in progress_edges():
        if target not in everywhere:
            parts.append(edge(source, target, "progress"))
    for source, target in cancel_map().items():
        parts.append(edge(source, target, "cancel"))
    for phase, place in places.items():
        left = _MARGIN + place.column * _SPACING
        note = f"REST: {states.rest_state(phase)}"
        parts += [
            f'<g><title>{html.escape(f"{phase}: {MEANINGS[phase]}")}</title>'
            f'<rect x="{left:.1f}" y="{top(phase):.1f}" width="{_WIDTH}" height="{_HEIGHT}" '
            f'rx="6" fill="{_FILL[_kind(phase)]}" stroke="#64748b"/>',
            f'<text x="{x(phase):.1f}" y="{top(phase) + 19:.1f}" text-anchor="middle" '
            f'font-size="13" font-weight="bold" fill="#0f172a">{phase}</text>',
            f'<text x="{x(phase):.1f}" y="{top(phase) + 35:.1f}" text-anchor="middle" '
            f'font-size="10.5" fill="#334155">{html.escape(note)}</text></g>',
        ]
        if phase in everywhere:
            parts += [f'<text x="{x(phase):.1f}" y="{bottom(phase) + 15 + 13 * line:.1f}" '
                      'text-anchor="middle" font-size="11" font-style="italic" '
                      f'fill="#334155">{text}</text>'
                      for line, text in enumerate(("from every phase", "that is not final"))]
    legend_y = _ROW_Y[BOTTOM] + _HEIGHT + 40
    parts += [
        f'<path d="M{_MARGIN},{legend_y} h40" stroke="{_PROGRESS_COLOUR}" stroke-width="1.4" '
        'marker-end="url(#arrow-progress)"/>',
        f'<text x="{_MARGIN + 50}" y="{legend_y + 4}" font-size="12" fill="#0f172a">'
        "the operator's work</text>",
        f'<path d="M{_MARGIN + 200},{legend_y} h40" stroke="{_CANCEL_COLOUR}" '
        'stroke-width="1.4" stroke-dasharray="5,3" marker-end="url(#arrow-cancel)"/>',
        f'<text x="{_MARGIN + 250}" y="{legend_y + 4}" font-size="12" fill="#0f172a">'
        "a cancel request</text>",
        "</svg>",
    ]
    return "\n".join(parts) + "\n"


def _phases(phases: list[Phase]) -> str:
    return ", ".join(f"`{phase}`" for phase in phases) or "—"


def phase_table() -> str:
    """Markdown: every phase, its meaning, and the REST and WES states shown for it."""
    missing = [phase for phase in Phase if phase not in MEANINGS]
    if missing:
        raise PluginError(f"docs/hooks.py has no meaning for {', '.join(missing)}")
    lines = ["| phase | meaning | REST `state` | WES |", "|---|---|---|---|"]
    lines += [f"| `{phase}` | {MEANINGS[phase]} | {states.rest_state(phase)} | "
              f"{states.wes_state(phase)} |" for phase in Phase]
    return "\n".join(lines)


def transition_table() -> str:
    """Markdown: every phase, what the operator's work may lead to, what a cancel does."""
    everywhere = from_everywhere()
    cancels = cancel_map()
    lines = ["| phase | the operator's work may lead to | a cancel request leads to |",
             "|---|---|---|"]
    for phase in Phase:
        targets = sorted(states.PROGRESS.get(phase, frozenset()), key=list(Phase).index)
        final = " (final)" if phase in states.FINAL else ""
        cancel = f"`{cancels[phase]}`" if phase in cancels else "no change"
        lines.append(f"| `{phase}`{final} | {_phases(targets)} | {cancel} |")
    if everywhere:
        lines += ["", f"{_phases(everywhere)}: reachable from every phase that is not final."]
    return "\n".join(lines)


# --- custom resource fields --------------------------------------------------------------

@dataclass(frozen=True)
class Field:
    """One field of a custom resource's schema."""

    path: str
    kind: str
    default: str
    description: str


def _kind_of(schema: Mapping[str, Any], required: bool) -> str:
    kind = str(schema.get("type", "object"))
    if kind == "array":
        items = schema.get("items") or {}
        kind = f"list of {items.get('type', 'object')}s"
    words = [kind]
    if "enum" in schema:
        words = [f"{kind}: " + " \\| ".join(f"`{value}`" for value in schema["enum"])]
    low, high = schema.get("minimum"), schema.get("maximum")
    if low is not None and high is not None:
        words.append(f"{low} to {high}")
    if required:
        words.append("**required**")
    return ", ".join(words)


def _default(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    return f"`{value}`"


def _describe(text: Any) -> str:
    return " ".join(str(text or "").split()).replace("|", "\\|")


def fields(schema: Mapping[str, Any], prefix: str = "") -> Iterator[Field]:
    """Every property under `schema`, depth first, with list items as ``name[].field``."""
    required = set(schema.get("required") or [])
    for name, child in (schema.get("properties") or {}).items():
        path = f"{prefix}{name}"
        default = child.get("default")
        yield Field(path=path, kind=_kind_of(child, name in required),
                    default=_default(default), description=_describe(child.get("description")))
        if child.get("type") == "array" and (child.get("items") or {}).get("properties"):
            yield from fields(child["items"], f"{path}[].")
        elif child.get("properties"):
            yield from fields(child, f"{path}.")


def validations(schema: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, str]]:
    """The CEL rules' messages, with the field they sit on."""
    for rule in schema.get("x-kubernetes-validations") or []:
        yield prefix.rstrip(".") or "(the object)", str(rule.get("message") or rule["rule"])
    for name, child in (schema.get("properties") or {}).items():
        yield from validations(child, f"{prefix}{name}.")
    if schema.get("items"):
        yield from validations(schema["items"], f"{prefix.rstrip('.')}[].")


def crd_schema(name: str, section: str) -> Mapping[str, Any]:
    """The schema of `section` (spec or status) of ``crds/<name>.yaml``."""
    path = REPO / "crds" / f"{name}.yaml"
    try:
        crd = yaml.safe_load(path.read_text())
        schema: Mapping[str, Any] = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"][
            "properties"][section]
    except (OSError, KeyError, TypeError) as error:
        raise PluginError(f"no {section} schema in {path}: {error}") from None
    return schema


def crd_fields(name: str, section: str) -> str:
    """Markdown: a table of every field of a CRD's section, then the API server's checks."""
    schema = crd_schema(name, section)
    lines = ["| field | type | default | description |", "|---|---|---|---|"]
    lines += [f"| `{f.path}` | {f.kind} | {f.default} | {f.description} |"
              for f in fields(schema)]
    checks = list(validations(schema, f"{section}."))
    if checks:
        lines += ["", "The API server also refuses an object when:", ""]
        lines += [f"* `{where}`: {message}" for where, message in checks]
    return "\n".join(lines)


def include(path: str, language: str) -> str:
    """Markdown: a file of the repository as a fenced code block titled with its path."""
    source = (REPO / path).resolve()
    if not source.is_relative_to(REPO) or not source.is_file():
        raise PluginError(f"cannot include {path}: not a file of the repository")
    text = source.read_text().rstrip("\n")
    return f"`{path}`:\n\n```{language}\n{text}\n```"


def metrics_table(module_name: str = "cerise.apiserver.metrics") -> str:
    """Markdown: every metric a metrics module defines, as Prometheus exposes it: its metric
    objects, and the families its `COLLECTOR` (if any) reports at scrape time."""
    from prometheus_client.metrics import MetricWrapperBase

    module = importlib.import_module(module_name)
    found: list[tuple[str, str, tuple[str, ...], str]] = [
        (value._name, str(value._type), tuple(value._labelnames), value._documentation)
        for value in vars(module).values() if isinstance(value, MetricWrapperBase)]
    collector = getattr(module, "COLLECTOR", None)
    if collector is not None:
        found += [(family.name, family.type, tuple(family._labelnames), family.documentation)
                  for family in collector.collect()]
    if not found:
        raise PluginError(f"{module_name} defines no metrics")
    suffix = {"counter": "_total"}
    lines = ["| metric | type | labels | what |", "|---|---|---|---|"]
    for name, kind, labels, documentation in found:
        shown = ", ".join(f"`{label}`" for label in labels)
        lines.append(f"| `{name}{suffix.get(kind, '')}` | {kind} | {shown} | "
                     f"{_describe(documentation)} |")
    return "\n".join(lines)


# --- MkDocs events -----------------------------------------------------------------------

def expand(markdown: str, where: str) -> str:
    """`markdown` with every marker replaced; PluginError for one that is unknown."""
    def replace(match: re.Match[str]) -> str:
        kind, arguments = match.group(1), match.group(2).split()
        if kind == "state-diagram" and not arguments:
            depth = where.count("/")
            return (f"![The job state machine: every phase and the transitions between them]"
                    f"({'../' * depth}{DIAGRAM})")
        if kind == "phase-table" and not arguments:
            return phase_table()
        if kind == "transition-table" and not arguments:
            return transition_table()
        if kind == "crd-fields" and len(arguments) == 2:
            return crd_fields(*arguments)
        if kind == "include" and len(arguments) == 2:
            return include(*arguments)
        if kind == "metrics" and len(arguments) <= 1:
            return metrics_table(*arguments)
        raise PluginError(f"{where}: unknown marker {match.group(0)!r}")

    return TEST_LINES.sub(r"\g<fence>", MARKER.sub(replace, markdown))


def on_files(files: Files, *, config: MkDocsConfig) -> Files:
    """Add the generated state diagram to the site."""
    files.append(File.generated(config, DIAGRAM, content=state_diagram_svg()))
    return files


def on_page_markdown(markdown: str, *, page: Page, config: MkDocsConfig, files: Files) -> str:
    """Fill in the generated parts of a page."""
    return expand(markdown, page.file.src_uri)
