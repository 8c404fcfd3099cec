"""The documentation site: it builds with warnings as errors (a broken link fails), and its
generated parts (docs/hooks.py) say what the code and the CRDs say."""

from __future__ import annotations

import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml
from mkdocs.exceptions import PluginError

from cerise.model import states
from cerise.model.states import Phase
from docs import hooks

REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / "mkdocs.yml"


def build(config: Path, site: Path) -> subprocess.CompletedProcess[str]:
    """`mkdocs build --strict` of `config` into `site`."""
    return subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file", str(config),
         "--site-dir", str(site)],
        capture_output=True, text=True, timeout=300, cwd=REPO)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The site, built once for this module from the repository's docs."""
    target = tmp_path_factory.mktemp("site")
    done = build(CONFIG, target)
    assert done.returncode == 0, f"mkdocs build failed:\n{done.stdout}\n{done.stderr}"
    assert "WARNING" not in done.stderr, done.stderr
    return target


def page(site: Path, name: str) -> str:
    return (site / name / "index.html").read_text()


def nav_pages(entries: list[Any]) -> Iterator[str]:
    """The page files of the nav, sections included."""
    for entry in entries:
        (value,) = entry.values()
        if isinstance(value, list):
            yield from nav_pages(value)
        else:
            yield str(value)


def test_every_page_of_the_nav_is_built(site: Path) -> None:
    sources = list(nav_pages(yaml.safe_load(CONFIG.read_text())["nav"]))
    assert "compute-resources.md" in sources
    for source in sources:
        built = site / ("index.html" if source == "index.md"
                        else f"{source.removesuffix('.md')}/index.html")
        assert built.is_file(), f"{source} was not built"


def test_a_broken_link_fails_the_build(tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    shutil.copytree(REPO / "docs", docs, ignore=shutil.ignore_patterns("__pycache__"))
    with (docs / "cli.md").open("a") as handle:
        handle.write("\nSee [the missing page](no-such-page.md).\n")
    config = yaml.safe_load(CONFIG.read_text())
    config |= {"docs_dir": str(docs), "hooks": [str(REPO / "docs" / "hooks.py")]}
    (tmp_path / "mkdocs.yml").write_text(yaml.safe_dump(config))
    done = build(tmp_path / "mkdocs.yml", tmp_path / "site")
    assert done.returncode != 0
    assert "no-such-page.md" in done.stderr


def test_no_marker_or_test_line_reaches_a_page(site: Path) -> None:
    for built in site.rglob("*.html"):
        text = built.read_text()
        assert "<!-- generated:" not in text, built
        assert "# test:" not in text, built


# --- the state machine ---------------------------------------------------------------------

def svg_texts(svg: str) -> list[str]:
    root = ET.fromstring(svg)  # noqa: S314 (our own generated document)
    return [element.text or "" for element in root.iter("{http://www.w3.org/2000/svg}text")]


def test_the_diagram_shows_every_phase_and_every_transition(site: Path) -> None:
    svg = (site / hooks.DIAGRAM).read_text()
    texts = svg_texts(svg)
    for phase in Phase:
        assert str(phase) in texts
        assert f"REST: {states.rest_state(phase)}" in texts
    everywhere = hooks.from_everywhere()
    assert everywhere == [Phase.SYSTEM_ERROR]
    progress = [(s, t) for s, targets in states.PROGRESS.items() for t in targets
                if t not in everywhere]
    cancels = [p for p in Phase if states.cancel_target(p) is not None]
    assert svg.count('marker-end="url(#arrow-progress)"') == len(progress) + 1  # + legend
    assert svg.count('marker-end="url(#arrow-cancel)"') == len(cancels) + 1
    assert 'src="../img/job-states.svg"' in page(site, "concepts")


def test_the_layout_places_every_phase_once() -> None:
    places = hooks.layout()
    assert set(places) == set(Phase)
    assert len({(p.column, p.row) for p in places.values()}) == len(Phase)
    chain = [phase for phase, place in sorted(places.items(), key=lambda i: i[1].column)
             if place.row == hooks.MAIN]
    assert chain[0] is Phase.SUBMITTED and chain[-1] is Phase.SUCCESS


def test_the_tables_list_every_phase_and_transition() -> None:
    phases = hooks.phase_table()
    transitions = hooks.transition_table()
    for phase in Phase:
        assert f"| `{phase}` | {hooks.MEANINGS[phase]} | {states.rest_state(phase)} | " \
               f"{states.wes_state(phase)} |" in phases
        row = next(line for line in transitions.splitlines()
                   if line.startswith(f"| `{phase}`"))
        for target in states.PROGRESS.get(phase, frozenset()):
            assert f"`{target}`" in row.split("|")[2]
        cancel = states.cancel_target(phase)
        assert (f"`{cancel}`" if cancel else "no change") in row.split("|")[3]


# --- custom resource fields ------------------------------------------------------------------

def field_paths(schema: Mapping[str, Any], prefix: str = "") -> Iterator[str]:
    """Every property path of a CRD schema, read independently of docs/hooks.py."""
    for name, child in (schema.get("properties") or {}).items():
        yield prefix + name
        items = child.get("items") or {}
        if items.get("properties"):
            yield from field_paths(items, f"{prefix}{name}[].")
        yield from field_paths(child, f"{prefix}{name}.")


def crd_section(name: str, section: str) -> Mapping[str, Any]:
    crd = yaml.safe_load((REPO / "crds" / f"{name}.yaml").read_text())
    schema: Mapping[str, Any] = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"][
        "properties"][section]
    return schema


@pytest.mark.parametrize(("crd", "built", "sections"), [
    ("computeresources", "compute-resources", ["spec", "status"]),
    ("specialisations", "writing-a-specialisation", ["spec", "status"]),
    ("workflowjobs", "concepts", ["spec", "status"]),
])
def test_a_page_names_every_field_of_its_resource(
    site: Path, crd: str, built: str, sections: list[str]
) -> None:
    text = page(site, built)
    for section in sections:
        schema = crd_section(crd, section)
        paths = list(field_paths(schema))
        assert paths
        for path in paths:
            assert f"<code>{path}</code>" in text, f"{built} does not name {section}.{path}"


def test_field_rows_carry_type_default_and_description() -> None:
    table = hooks.crd_fields("computeresources", "spec")
    assert ("| `jobs.scheduler` | string: `none` \\| `slurm` \\| `torque` \\| `gridengine` | "
            "`none` | The batch scheduler:") in table
    assert "| `jobs.protocol` | string: `local` \\| `ssh`, **required** |" in table
    assert "an ssh compute resource needs hostKeys" in table


# --- markers -------------------------------------------------------------------------------

def test_an_unknown_marker_fails() -> None:
    with pytest.raises(PluginError, match="unknown marker"):
        hooks.expand("<!-- generated: no-such-thing -->", "page.md")


def test_an_include_outside_the_repository_fails() -> None:
    with pytest.raises(PluginError, match="not a file of the repository"):
        hooks.expand("<!-- generated: include ../../etc/passwd text -->", "page.md")


def test_test_lines_are_removed_from_code_blocks_only() -> None:
    text = "```bash\n# test: run\n# test: expect x\necho hi\n```\n\n# test: kept\n"
    assert hooks.expand(text, "page.md") == "```bash\necho hi\n```\n\n# test: kept\n"


def test_an_included_file_is_shown_verbatim() -> None:
    shown = hooks.expand("<!-- generated: include examples/workflow-job.yaml yaml -->", "a.md")
    assert shown == ("`examples/workflow-job.yaml`:\n\n```yaml\n"
                     + (REPO / "examples" / "workflow-job.yaml").read_text().rstrip("\n")
                     + "\n```")


def test_the_metrics_table_names_every_metric_the_apiserver_exposes(site: Path) -> None:
    from cerise.apiserver import metrics

    text = page(site, "operating")
    for family in metrics.REGISTRY.collect():
        exposed = f"{family.name}_total" if family.type == "counter" else family.name
        assert f"<code>{exposed}</code>" in text, exposed
