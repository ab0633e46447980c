"""``sgdwalk compare``: rows of runs side by side, a sweep's folder, and the live view."""

from __future__ import annotations

from canned import aio, write_canned_session

from sgdwalk.sweep import grid, plan
from sgdwalk.tui.commands.compare import resolve, rows


def _sweep(tmp_path):
    folder = tmp_path / "sessions" / "grid"
    swept, shared = grid({"lr": "0.1,0.5", "epochs": 4})
    pts = plan(folder, swept, shared)
    for p in pts:
        write_canned_session(folder / p.name)
    write_canned_session(folder / f"{pts[0].name}.stopped-1", status="interrupted")
    return folder, pts


def test_a_sweep_resolves_to_its_points_and_each_row_has_its_shares(tmp_path):
    folder, pts = _sweep(tmp_path)
    paths = resolve(["grid"], tmp_path / "sessions")
    assert [p.name for p in paths] == sorted(p.name for p in pts)  # the stopped one left out
    got = rows(paths)
    assert [r["name"] for r in got] == [p.name for p in paths]
    r = got[0]
    assert r["steps"] == r["measured_steps"] == 96
    assert r["interior_min_low"] == r["interior_min_fraction"] == r["interior_min_high"]  # all
    assert r["barriers_per_epoch"] == r["barriers"] / 4 and r["lambda1"] > 0


@aio
async def test_the_view_shows_a_row_per_run_and_cycles_the_overlaid_figure(tmp_path):
    from textual.widgets import DataTable

    from sgdwalk.tui.dashboard.compare import SHOWN, CompareApp
    from sgdwalk.tui.dashboard.widgets import FigureChart

    folder, pts = _sweep(tmp_path)
    app = CompareApp(resolve(["grid"], tmp_path / "sessions"), rows)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        assert app.query_one(DataTable).row_count == 2
        chart = app.query_one("#slices", FigureChart)
        assert chart.display and len(chart.overlay) == 2
        await pilot.press("tab")
        await pilot.pause()
        shown = [n for n in SHOWN if app.query_one(f"#{n}", FigureChart).display]
        assert shown == ["barriers"] and len(app.query_one("#barriers", FigureChart).overlay) == 2
        await pilot.press("shift+tab", "right_square_bracket", "right_square_bracket")
        await pilot.pause()
        assert app.epoch == 2
        steps = {r.epoch for d in app.query_one("#slices", FigureChart).overlay for r in d.steps}
        assert steps == {2}
