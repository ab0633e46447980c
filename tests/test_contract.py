"""The records are the one schema: a new field needs no other change; old sessions keep opening;
no module imports another that imports it back."""

from __future__ import annotations

import ast
import csv
import dataclasses
import json
from pathlib import Path

import pytest
from canned import CANNED_CONFIG, CANNED_INFO, aio, canned_records, drawn

from sgdwalk import records
from sgdwalk.records import FINISHED, StepMeasured
from sgdwalk.session import TABLES, SessionWriter, open_session
from sgdwalk.tui.figures.export import ExportRequest, run_export

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).parent / "fixtures" / "sessions"


def step_with_sharpness() -> type:
    """A copy of ``StepMeasured`` with one more measurement, as records.py would declare it."""
    fields = [(f.name, f.type, f) for f in dataclasses.fields(StepMeasured)]
    fields.append(("sharpness", "float | None", dataclasses.field(default=None)))
    cls = dataclasses.make_dataclass("StepMeasured", fields, frozen=True, slots=True,
                                     namespace={"measured": StepMeasured.measured})  # fmt: skip
    cls.__module__ = records.__name__  # its annotations read as records.py's do
    return cls


@pytest.fixture
def sharper(monkeypatch):
    cls = step_with_sharpness()
    monkeypatch.setitem(TABLES, "steps", dataclasses.replace(TABLES["steps"], record=cls))
    return cls


def test_a_new_step_field_round_trips_through_the_store_and_the_exports(tmp_path, sharper):
    written = []
    w = SessionWriter(tmp_path / "s", CANNED_CONFIG, CANNED_INFO)
    for rec in canned_records(epochs=1, curvature=False):
        if isinstance(rec, StepMeasured):
            values = {f.name: getattr(rec, f.name) for f in dataclasses.fields(rec)}
            rec = sharper(**values, sharpness=rec.step / 7)
            written.append(rec)
        w.write(rec)
    w.close(FINISHED)
    with open_session(tmp_path / "s") as s:
        assert list(s.steps()) == written
    for fmt in ("csv", "json"):
        out = tmp_path / f"s.{fmt}"
        run_export(ExportRequest([str(tmp_path / "s")], output=str(out), steps="1:"))
        if fmt == "csv":
            with out.open(newline="") as fh:
                got = [float(row["sharpness"]) for row in csv.DictReader(fh)]
        else:
            got = [row["sharpness"] for row in json.loads(out.read_text())]
        assert got == [r.sharpness for r in written]


def test_a_session_written_before_the_field_reads_it_as_empty(sharper):
    with open_session(FIXTURES / "v1-digits") as s:
        steps = list(s.steps())
    assert len(steps) == 12 and all(r.sharpness is None for r in steps)
    assert all(len(r.slice) == 11 and r.alphas[1] == 0.1 for r in steps)


@pytest.mark.parametrize("name", ["v1-digits", "v1-diverged"])
def test_sessions_of_the_first_format_open_and_export(tmp_path, name):
    with open_session(FIXTURES / name) as s:
        assert s.status == FINISHED and s.config["dataset"] == "digits"
        assert len(list(s.steps())) in (6, 12) and list(s.epochs())
    figures = ("slices", "loss", "barriers") + (("cosine",) if name == "v1-digits" else ())
    for figure in figures:
        for fmt in ("txt", "csv"):
            out = tmp_path / f"{name}-{figure}.{fmt}"
            run_export(ExportRequest([str(FIXTURES / name)], figure=figure, output=str(out)))
            assert out.stat().st_size > 0


@aio
async def test_a_session_of_the_first_format_replays(tmp_path):
    from sgdwalk.tui.dashboard.app import make_app
    from sgdwalk.tui.dashboard.replay import ReplaySource

    app = make_app(ReplaySource(open_session(FIXTURES / "v1-digits")))
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("end")
        await drawn(pilot, app)
        assert "step 12/12" in app.dashboard.query_one("#status").text
        assert app.dashboard.chart("alignment").data.curvature


def _module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    parts = ["sgdwalk", *parts[1:]] if parts[0] == "engine" else ["sgdwalk", *parts]
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path, modules: set[str]) -> set[str]:
    """Every sgdwalk module ``path`` imports, at module level or inside a function."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names = [f"{node.module}.{a.name}" for a in node.names] + [node.module]
        out |= {n for n in names if n in modules}
    return out


def test_no_module_imports_one_that_imports_it_back():
    files = [p for folder in ("engine", "tui") for p in (ROOT / folder).rglob("*.py")]
    modules = {_module_name(p) for p in files}
    graph = {_module_name(p): _imports(p, modules) for p in files}
    for name in graph:  # a package imported for one of its modules is not an edge back
        graph[name] -= {m for m in graph[name] if m == name or name.startswith(m + ".")}

    def cycle_from(start: str) -> list[str] | None:
        stack, seen = [(start, [start])], set()
        while stack:
            node, path = stack.pop()
            for nxt in graph.get(node, ()):
                if nxt == start:
                    return [*path, start]
                if nxt not in seen:
                    seen.add(nxt)
                    stack.append((nxt, [*path, nxt]))
        return None

    cycles = [c for name in sorted(graph) if (c := cycle_from(name))]
    assert not cycles, " -> ".join(cycles[0])


def test_every_package_folder_is_installed():
    """A folder with an ``__init__.py`` under engine/ or tui/ that pyproject does not list would be
    missing from a wheel (an editable install hides it)."""
    import tomllib

    root = Path(__file__).parent.parent
    project = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(project["packages"])
    for top, name in (("engine", "sgdwalk"), ("tui", "sgdwalk.tui")):
        for init in (root / top).rglob("__init__.py"):
            parts = init.parent.relative_to(root / top).parts
            assert ".".join((name, *parts)) in listed, init
