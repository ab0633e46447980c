"""NaN, inf and None anywhere: every figure draws (on the terminal and in matplotlib) and says how
many values it left out, and a diverged run with curvature on goes on as --allow-divergence says."""

from __future__ import annotations

import dataclasses
import math
import subprocess
import sys
from pathlib import Path

import pytest
from canned import HANG, aio, canned_records, drawn, run_cli
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sgdwalk.records import Alignment, CurvatureMeasured, EpochEnded, StepMeasured
from sgdwalk.session import open_session
from sgdwalk.tui.figures import FIGURES, FigureData, Options
from sgdwalk.tui.figures.text import build_text

SGDWALK = str(Path(sys.executable).with_name("sgdwalk"))
ODD = st.sampled_from([math.nan, math.inf, -math.inf, None, 1e308, -1e308, 1e-320, 0.0])
CANNED = list(canned_records(epochs=2))


def spoil(rec: object, draw: st.DrawFn) -> object:
    """``rec`` with some of its float fields (and list items) replaced by odd values."""
    changes = {}
    for f in dataclasses.fields(rec):
        value = getattr(rec, f.name)
        if isinstance(value, float) and draw(st.booleans()):
            odd = draw(ODD)
            if odd is not None or "None" in str(f.type):
                changes[f.name] = odd
        elif isinstance(value, list) and value and isinstance(value[0], float):
            changes[f.name] = [draw(ODD) if draw(st.booleans()) else v for v in value]
            changes[f.name] = [math.nan if v is None else v for v in changes[f.name]]
        elif isinstance(value, list) and value and isinstance(value[0], Alignment):
            changes[f.name] = [spoil(a, draw) for a in value]
    return dataclasses.replace(rec, **changes)


@st.composite
def spoiled_data(draw: st.DrawFn) -> FigureData:
    picked = [r for r in CANNED if draw(st.integers(0, 3))]
    recs = [spoil(r, draw) if draw(st.booleans()) else r for r in picked]
    return FigureData(
        "odd", None, {"model": "mlp", "dataset": "digits", "lr": 0.1, "batch_size": "64"},
        steps=[r for r in recs if isinstance(r, StepMeasured)],
        epochs=[r for r in recs if isinstance(r, EpochEnded)],
        curvature=[r for r in recs if isinstance(r, CurvatureMeasured)],
    )  # fmt: skip


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=spoiled_data(), name=st.sampled_from(list(FIGURES)), width=st.integers(20, 140),
       height=st.integers(8, 40))  # fmt: skip
def test_every_figure_draws_odd_values_in_text(data, name, width, height):
    figure = FIGURES[name]
    text = build_text(figure, [data], Options(width=width, height=height), height, colored=False)
    assert len(text.splitlines()) == height
    assert figure.skipped(data) >= 0
    figure.rows(data)


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=spoiled_data(), name=st.sampled_from(list(FIGURES)))
def test_every_figure_draws_odd_values_in_matplotlib(data, name):
    from sgdwalk.tui.figures.mpl import render_mpl

    png = render_mpl(FIGURES[name], "png", [data], Options())
    assert png.startswith(b"\x89PNG")


@pytest.fixture(scope="module")
def diverged(tmp_path_factory) -> Path:
    """A real run at lr 1e30 with curvature on and --allow-divergence (two epochs)."""
    folder = tmp_path_factory.mktemp("diverged")
    proc = subprocess.run(
        [SGDWALK, "run", "--headless", "--lr", "1e30", "--allow-divergence", "--epochs", "2",
         "--train-size", "300", "--top-k", "3", "--sessions-dir", str(folder), "--session", "d"],
        capture_output=True, text=True, timeout=HANG,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    return folder / "d"


@pytest.mark.slow
def test_a_diverged_run_with_curvature_goes_on_and_records_nan(diverged):
    with open_session(diverged) as s:
        assert s.status == "finished"
        curvature = list(s.curvature())
        assert len(curvature) == 3 and all(math.isnan(c.eigenvalues[0]) for c in curvature[1:])
        warnings = [e for e in s.events() if e.kind == "warning"]
        assert len(warnings) >= 2 and "not finite" in warnings[0].message


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["txt", "svg", "html", "png", "pdf", "csv", "json"])
def test_every_figure_of_a_diverged_session_exports(diverged, tmp_path, fmt):
    for figure in FIGURES:
        code, _, err = run_cli("export", str(diverged), "--figure", figure, "--format", fmt,
                               "-o", str(tmp_path / f"{figure}.{fmt}"))  # fmt: skip
        if code == 2:  # a figure with nothing finite to draw says so in one line
            assert err.count("\n") == 1 and "nothing to draw" in err, err
        else:
            assert code == 0 and (tmp_path / f"{figure}.{fmt}").stat().st_size > 0, err
            if fmt not in ("csv", "json") and figure == "slices":
                assert "non-finite values (NaN/inf) not drawn" in err


@pytest.mark.slow
@aio
async def test_replay_of_a_diverged_session_draws_and_says_what_it_left_out(diverged):
    from sgdwalk.tui.dashboard.app import make_app
    from sgdwalk.tui.dashboard.replay import ReplaySource

    app = make_app(ReplaySource(open_session(diverged)))
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("end")
        await drawn(pilot, app)
        assert "NaN/inf not drawn" in app.dashboard.query_one("#status").text
        for name in FIGURES:
            assert app.dashboard.chart(name).error is None
    assert not app.return_code
