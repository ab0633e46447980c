"""The figure table (sgdwalk.tui.figures): each figure's series and its plotext drawing, which the
dashboard and export share."""

from __future__ import annotations

import math

import pytest

from sgdwalk.records import StepMeasured
from sgdwalk.session import open_session
from sgdwalk.tui.figures import FIGURES, FigureData, Options, alignment, barriers, cosine, slices
from sgdwalk.tui.figures.base import step_lines
from sgdwalk.tui.figures.text import build_text


@pytest.fixture
def canned(canned_session):
    with open_session(canned_session) as s:
        return FigureData("canned", None, s.config, list(s.steps()), list(s.epochs()),
                          list(s.curvature()))  # fmt: skip


def _step(step: int, sl: list[float] | None, **kw) -> StepMeasured:
    k = 0 if sl is None else len(sl) - 1
    alphas = None if sl is None else [j / k for j in range(k + 1)]
    return StepMeasured(step=step, epoch=1, lr=0.1, batch_size=8, batch_loss=1.0, elapsed=0.0,
                        alphas=alphas, slice=sl, **kw)  # fmt: skip


def render_text(figure, data, opts, height: int = 30) -> str:
    return build_text(figure, data, opts, height, colored=False)


def _only(d: FigureData, figure: str) -> FigureData:
    """The canned data cut as the figure's panel would be (slices: a 40-step window)."""
    steps = d.steps[:40] if FIGURES[figure].needs.steps == "measured" else d.steps
    return FigureData(d.name, None, d.config, steps, d.epochs, d.curvature)


@pytest.mark.parametrize("name", FIGURES)
def test_each_figure_renders_without_escape_codes(canned, name):
    text = render_text(FIGURES[name], [_only(canned, name)], Options(width=80), height=20)
    assert "\x1b" not in text
    assert len(text.splitlines()) == 20
    assert ("Figure" in text) == (
        name not in ("loss", "sharpness", "decomposition", "layers", "density")
    )  # the paper's


def test_colour_only_when_asked(canned):
    loss = FIGURES["loss"]
    assert "\x1b[" in build_text(loss, [canned], Options(), 30, colored=True)
    assert "\x1b" not in build_text(loss, [canned], Options(), 30, colored=False)


@pytest.mark.parametrize("name", FIGURES)
def test_empty_data_draws_nothing(name):
    text = render_text(FIGURES[name], [FigureData("empty")], Options(width=40), height=10)
    assert "Figure" not in text and "●" not in text
    assert not FIGURES[name].has_data(FigureData("empty"))


def test_state_is_cleared_between_figures(canned):
    render_text(FIGURES["barriers"], [canned], Options())
    text = render_text(FIGURES["cosine"], [canned], Options())
    assert "barriers" not in text


@pytest.mark.parametrize("name", FIGURES)
def test_draws_on_a_textual_plotext_plot_with_labels(canned, name):
    from textual_plotext.plot import Plot

    from sgdwalk.tui.figures.base import draw_plotext

    plt = Plot()
    plt.plotsize(60, 15)
    other = _only(canned, name)
    runs = [FigureData("a", "run-a", other.config, other.steps, other.epochs, other.curvature),
            FigureData("b", "run-b", other.config, other.steps, other.epochs, other.curvature)]  # fmt: skip
    assert draw_plotext(FIGURES[name], plt, runs, Options(width=60))
    assert "run-a" in plt.build()


def test_slice_series_geometry():
    a = _step(1, [3.0, 1.0, 2.0], floor_loss=1.0, floor_alpha=0.5)
    b = _step(2, None)  # unmeasured: skipped
    c = _step(4, [2.0, 0.5, 1.0], floor_loss=0.5, floor_alpha=0.5, barrier=True)
    s = slices.slice_series([a, b, c])
    # a dot at each step's start, and at the end of a step that no next step continues
    assert s.step_x == [1.0, 2.0, 4.0, 5.0] and s.step_y == [3.0, 2.0, 2.0, 1.0]
    assert s.floor_x == [1.5, 4.5] and s.floor_y == [1.0, 0.5]
    assert s.barrier_x == [4.0]
    assert s.curve_y[3] is None  # the gap between step 1 and step 4 is not joined
    inside = [(x, y) for x, y in zip(s.curve_x, s.curve_y, strict=True)
              if y is not None and not float(x).is_integer()]  # fmt: skip
    assert inside == [(1.5, 1.0), (4.5, 0.5)]  # the points between the steps


def test_non_finite_values_are_skipped_and_counted():
    steps = [_step(1, [math.nan, 1.0, math.inf], floor_loss=math.nan, floor_alpha=0.5)]
    s = slices.slice_series(steps)
    assert s.step_x == [] and s.floor_x == []
    assert s.curve_y == [None, 1.0, None]
    assert slices.skipped(FigureData("x", steps=steps)) == 2
    series = cosine.cosine_series(
        [_step(1, None, grad_cos=math.nan, update_cos=0.1), _step(2, None, grad_cos=0.5,
                                                                  update_cos=0.2)]
    )  # fmt: skip
    assert series[cosine.GRAD] == ([2], [0.5])


def test_plain_sgd_draws_one_cosine_curve():
    same = [_step(i, None, grad_cos=0.1 * i, update_cos=0.1 * i + 1e-9) for i in range(1, 5)]
    assert list(cosine.cosine_series(same)) == [cosine.BOTH]
    differ = [_step(i, None, grad_cos=0.1 * i, update_cos=0.05 * i) for i in range(1, 5)]
    assert list(cosine.cosine_series(differ)) == [cosine.GRAD, cosine.UPDATE]


def test_alignment_metrics(canned):
    a = canned.curvature[0].alignment[0]
    assert alignment.value(a, "subspace") == a.subspace_mean
    assert alignment.value(a, "eig_cos") == pytest.approx(sum(a.eig_cos_mean) / 10)
    assert alignment.value(a, "rayleigh") == a.rayleigh_mean
    assert alignment.value(a, "full_cos") == a.full_cos_mean
    with pytest.raises(ValueError):
        alignment.value(a, "nope")


def test_barrier_running_total_and_integer_ticks(canned):
    xs, per, running = barriers.barrier_series(canned.epochs)
    assert xs == [1, 2, 3, 4]
    assert running[-1] == sum(per) == sum(bool(r.barrier) for r in canned.steps)
    assert barriers.count_ticks(0) == [0, 1] and barriers.count_ticks(3) == [0, 1, 2, 3]
    assert barriers.count_ticks(10) == [0, 3, 6, 9, 12]


def test_zero_barriers_read_from_zero():
    from sgdwalk.records import EpochEnded

    epochs = [EpochEnded(e, 24 * e, 1.0, 0.5, 1.0, 0.5, 0, 0.1) for e in (1, 2, 3)]
    text = render_text(FIGURES["barriers"], [FigureData("z", epochs=epochs)], Options(width=60),
                       height=14)  # fmt: skip
    ticks = [line.split("┤")[0].strip() for line in text.splitlines() if "┤" in line]
    assert ticks == ["1", "0"] and "-" not in "".join(ticks)


def test_the_step_line_rule():
    assert step_lines(20, 80) and not step_lines(21, 80) and not step_lines(0, 80)


def test_alignment_series_are_named_by_epoch_or_by_step_when_epochs_repeat():
    from sgdwalk.records import CurvatureMeasured

    def at(step: int, epoch: int) -> CurvatureMeasured:
        return CurvatureMeasured(step, epoch, [1.0], [0.0], 30, [])

    per_epoch = [at(0, 0), at(24, 1), at(48, 2)]
    assert [alignment.pass_label(c, per_epoch) for c in per_epoch] == ["epoch 0", "epoch 1",
                                                                       "epoch 2"]  # fmt: skip
    per_steps = [at(12, 1), at(24, 1), at(36, 2)]  # --hessian-every 12s: two in epoch 1
    assert [alignment.pass_label(c, per_steps) for c in per_steps] == ["step 12", "step 24",
                                                                       "step 36"]  # fmt: skip


def test_a_series_without_points_has_no_legend_entry():
    """A Walker session has no validation split (val loss NaN): the loss figure does not list one;
    the cosines are named as the paper names them, never by their field names."""
    from sgdwalk.records import EpochEnded
    from sgdwalk.tui.figures import loss

    nan = math.nan
    steps = [_step(i, None, grad_cos=0.1 * i, update_cos=0.05 * i) for i in range(1, 6)]
    epochs = [EpochEnded(1, 5, 0.9, nan, nan, nan, 0, 0.5)]
    text = render_text(loss.FIGURE, [FigureData("w", None, {}, steps, epochs)], Options())
    assert "train loss" in text and "val loss" not in text
    text = render_text(cosine.FIGURE, [FigureData("w", None, {}, steps)], Options())
    assert "cos(g(t-1), g(t))" in text and "grad_cos" not in text


def test_a_step_far_off_the_scale_does_not_flatten_the_slices_panel():
    """An epoch's short last batch at a high lr spans 20x the other slices: the panel keeps the
    others' scale and names it in its title; the numbers are unchanged."""
    from sgdwalk.tui.figures.base import Live

    def sl(base: float, span: float) -> list[float]:
        return [base, base - span / 2, base - span, base - span / 2, base - span / 4]

    steps = [_step(i, sl(1.0 - 0.01 * i, 0.01)) for i in range(1, 12)]
    steps[7] = StepMeasured(**{**{f: getattr(steps[7], f) for f in ("step", "epoch", "lr",
                               "batch_loss", "elapsed", "alphas")}, "batch_size": 3,
                               "slice": sl(0.93, 0.2)})  # fmt: skip
    assert [r.step for r in slices.off_scale(steps)] == [8]
    d = FigureData("x", None, {}, steps)
    assert slices.FIGURE.panel_title(d, Live(window=20)).endswith("· step 8 (batch 3) off scale")
    text = render_text(slices.FIGURE, [d], Options(width=80), height=20)
    ticks = [float(line.split("┤")[0]) for line in text.splitlines() if "┤" in line]
    assert min(ticks) > 0.8  # the scale of the other steps (0.88..1.0), not down to 0.73
    assert slices.off_scale(steps[:4]) == []  # too few steps to judge


def test_sharpness_follows_the_optimizers_edge_and_goes_log_when_the_lr_spans_decades():
    """An AdamW run under a schedule whose lr falls 1e-1 -> 1e-5: the preconditioned sharpness
    against (2+2β1)/((1−β1)η) from each step's lr, on a log axis; the panel says how near."""
    from sgdwalk.records import CurvatureMeasured
    from sgdwalk.tui.figures import sharpness
    from sgdwalk.tui.figures.base import Live

    lrs = [0.1 * 10 ** (-4 * t / 99) for t in range(100)]
    steps = [StepMeasured(step=t + 1, epoch=1, lr=lr, batch_size=8, batch_loss=1.0, elapsed=0.0)
             for t, lr in enumerate(lrs)]  # fmt: skip
    c0 = (2 + 2 * 0.9) / (1 - 0.9)
    passes = [CurvatureMeasured(step=s, epoch=1, eigenvalues=[5.0], residuals=[0.0], hvps=10,
                                alignment=[], edge_ratio=r, threshold=c0 / lrs[max(s - 1, 0)],
                                sharpness=r * c0 / lrs[max(s - 1, 0)],
                                edge_line="(2+2β1)/((1−β1)η)",
                                sharpness_name="preconditioned sharpness")
              for s, r in ((0, 0.2), (50, 0.7), (99, 0.95))]  # fmt: skip
    d = FigureData("w", None, {"optimizer": "AdamW"}, steps, [], passes)
    series = sharpness.sharpness_series(d)
    assert list(series) == ["preconditioned sharpness", "(2+2β1)/((1−β1)η)"]
    line = series["(2+2β1)/((1−β1)η)"]
    assert line[1][0] == pytest.approx(c0 / lrs[0]) and line[1][-1] == pytest.approx(c0 / lrs[-1])
    assert sharpness.log_scale([d])
    text = render_text(sharpness.FIGURE, [d], Options(width=90), height=24)
    assert "(log scale)" in text and "1e2" in text and "1e6" in text
    title = sharpness.FIGURE.panel_title(d, Live(window=20))
    assert title == "sharpness · preconditioned sharpness at 0.95 of (2+2β1)/((1−β1)η)"
    rows = sharpness.FIGURE.rows(d)
    assert [r["edge_ratio"] for r in rows] == [0.2, 0.7, 0.95]
