"""The shared figure functions (tui.charts): the dashboard and export draw with them."""

from __future__ import annotations

import math

import pytest
from sgdwalk.records import StepMeasured
from sgdwalk.session import open_session
from sgdwalk.tui import charts


@pytest.fixture
def canned(canned_session):
    with open_session(canned_session) as s:
        yield list(s.steps()), list(s.epochs()), list(s.curvature())


def _step(step: int, sl: list[float] | None, **kw) -> StepMeasured:
    k = 0 if sl is None else len(sl) - 1
    alphas = None if sl is None else [j / k for j in range(k + 1)]
    return StepMeasured(step=step, epoch=1, lr=0.1, batch_size=8, batch_loss=1.0, elapsed=0.0,
                        alphas=alphas, slice=sl, **kw)  # fmt: skip


FIGURES = {
    "slices": lambda d: (charts.draw_slices, d[0][:40]),
    "barriers": lambda d: (charts.draw_barriers, d[1]),
    "alignment": lambda d: (charts.draw_alignment, d[2]),
    "cosine": lambda d: (charts.draw_cosines, d[0]),
}


@pytest.mark.parametrize("name", FIGURES)
def test_each_figure_renders_without_escape_codes(canned, name):
    draw, data = FIGURES[name](canned)
    text = charts.render_text(draw, data, width=80, height=20)
    assert "\x1b" not in text
    assert len(text.splitlines()) == 20
    assert "Figure" in text


def test_loss_figure_and_colour(canned, monkeypatch):
    monkeypatch.delenv("NO_COLOR", raising=False)
    steps, epochs, _ = canned
    assert "\x1b[" in charts.render_text(charts.draw_loss, steps, epochs, color=True)
    monkeypatch.setenv("NO_COLOR", "1")
    assert "\x1b" not in charts.render_text(charts.draw_loss, steps, epochs, color=True)


@pytest.mark.parametrize(
    "draw, args",
    [(charts.draw_slices, ([],)), (charts.draw_barriers, ([],)), (charts.draw_alignment, ([],)),
     (charts.draw_cosines, ([],)), (charts.draw_loss, ([], []))],
)  # fmt: skip
def test_empty_data_draws_nothing(draw, args):
    text = charts.render_text(draw, *args, width=40, height=10)
    assert "Figure" not in text and "●" not in text


def test_state_is_cleared_between_figures(canned):
    charts.render_text(charts.draw_barriers, canned[1])
    text = charts.render_text(charts.draw_cosines, canned[0])
    assert "barriers" not in text


def test_draws_on_a_textual_plotext_plot(canned):
    from textual_plotext.plot import Plot

    steps, epochs, curv = canned
    for draw, args in [(charts.draw_slices, (steps[:40],)), (charts.draw_barriers, (epochs,)),
                       (charts.draw_alignment, (curv,)), (charts.draw_cosines, (steps,)),
                       (charts.draw_loss, (steps, epochs))]:  # fmt: skip
        plt = Plot()
        plt.plotsize(60, 15)
        draw(plt, *args, label="run")
        assert "run" in plt.build()


def test_slice_series_geometry():
    a = _step(1, [3.0, 1.0, 2.0], floor_loss=1.0, floor_alpha=0.5)
    b = _step(2, None)  # unmeasured: skipped
    c = _step(4, [2.0, 0.5, 1.0], floor_loss=0.5, floor_alpha=0.5, barrier=True)
    s = charts.slice_series([a, b, c])
    assert s.step_x == [1.0, 4.0] and s.step_y == [3.0, 2.0]
    assert s.floor_x == [1.5, 4.5] and s.floor_y == [1.0, 0.5]
    assert s.barrier_x == [4.0]
    assert s.curve_y[3] is None  # the gap between step 1 and step 4 is not joined
    assert s.interpolated() == ([1.5, 4.5], [1.0, 0.5])


def test_non_finite_values_are_skipped():
    s = charts.slice_series([_step(1, [math.nan, 1.0, math.inf], floor_loss=math.nan)])
    assert s.step_x == [] and s.floor_x == []
    assert s.curve_y == [None, 1.0, None]
    xs, ys = charts.cosine_series(
        [_step(1, None, grad_cos=math.nan), _step(2, None, grad_cos=0.5)]
    )["grad_cos"]
    assert (xs, ys) == ([2], [0.5])


def test_alignment_metrics(canned):
    a = canned[2][0].alignment[0]
    assert charts.alignment_value(a, "subspace") == a.subspace_mean
    assert charts.alignment_value(a, "eig_cos") == pytest.approx(sum(a.eig_cos_mean) / 10)
    assert charts.alignment_value(a, "rayleigh") == a.rayleigh_mean
    assert charts.alignment_value(a, "full_cos") == a.full_cos_mean
    with pytest.raises(ValueError):
        charts.alignment_value(a, "nope")


def test_barrier_running_total(canned):
    xs, per, running = charts.barrier_series(canned[1])
    assert xs == [1, 2, 3, 4]
    assert running[-1] == sum(per) == sum(r.barrier for r in canned[0])
