"""The paper's Figure 1: the loss along each step's straight line θ_t + αΔ_t, step after step.

x = step + α, so step t's slice spans [t, t+1] and consecutive slices join where one step's
α = 1 is the next step's α = 0. Red dots mark the loss at each step (and at the end of the last),
gray lines the steps (when there is room: ``step_lines``), and a dashed orange line joins the
valley floors (each slice's minimum): below the dots when SGD bounces across a valley.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sgdwalk.records import StepMeasured
from sgdwalk.tui.figures.base import (
    MPL_COLUMNS,
    Figure,
    FigureData,
    Live,
    Needs,
    Options,
    colour,
    count_nonfinite,
    describe_run,
    finite,
    label_mpl,
    label_plotext,
    series_name,
    step_lines,
    step_range,
)
from sgdwalk.tui.figures.rows import record_row

TITLE = "Figure 1: loss along each step's interpolation θ_t + α Δ_t"
OFF_SCALE = 5.0  # a step whose slice spans this many times the median span is off the scale
OFF_SCALE_MIN_STEPS = 5  # judged among at least this many measured steps


@dataclass
class SliceSeries:
    """Points of Figure 1."""

    curve_x: list[float] = field(default_factory=list)  # every slice point, runs split by None
    curve_y: list[float | None] = field(default_factory=list)
    step_x: list[float] = field(default_factory=list)  # the loss at each step (L_0), and at the
    step_y: list[float] = field(default_factory=list)  # end of the last step (its L_K)
    floor_x: list[float] = field(default_factory=list)  # valley floor: t + floor_alpha
    floor_y: list[float] = field(default_factory=list)
    barrier_x: list[float] = field(default_factory=list)  # steps whose slice has a barrier


def measured(steps: Sequence[StepMeasured]) -> list[StepMeasured]:
    return [r for r in steps if r.slice is not None and r.alphas is not None]


def slice_series(steps: Sequence[StepMeasured]) -> SliceSeries:
    s = SliceSeries()
    prev: StepMeasured | None = None
    for r in measured(steps):
        assert r.slice is not None and r.alphas is not None
        if prev is not None and r.step != prev.step + 1:  # a gap: do not join across it
            s.curve_x.append(float(r.step))
            s.curve_y.append(None)
            _end_dot(s, prev)
        s.curve_x.extend(r.step + a if finite(a) else math.nan for a in r.alphas)
        s.curve_y.extend(v if finite(v) else None for v in r.slice)
        if finite(r.slice[0]):
            s.step_x.append(float(r.step))
            s.step_y.append(r.slice[0])
        if finite(r.floor_loss) and finite(r.floor_alpha):
            s.floor_x.append(r.step + (r.floor_alpha or 0.0))
            s.floor_y.append(r.floor_loss)  # type: ignore[arg-type]
        if r.barrier:
            s.barrier_x.append(float(r.step))
        prev = r
    if prev is not None:
        _end_dot(s, prev)
    return s


def _end_dot(s: SliceSeries, r: StepMeasured) -> None:
    """The loss where step t ended (L_K), when no next step's dot stands there."""
    assert r.slice is not None
    if finite(r.slice[-1]):
        s.step_x.append(float(r.step + 1))
        s.step_y.append(r.slice[-1])


def runs(xs: list[float], ys: list[float | None]) -> list[tuple[list[float], list[float]]]:
    """Split a curve at None into contiguous runs."""
    out: list[tuple[list[float], list[float]]] = [([], [])]
    for x, y in zip(xs, ys, strict=True):
        if y is None:
            if out[-1][0]:
                out.append(([], []))
            continue
        out[-1][0].append(x)
        out[-1][1].append(y)
    return [r for r in out if r[0]]


def off_scale(steps: Sequence[StepMeasured]) -> list[StepMeasured]:
    """Steps whose slice spans more than ``OFF_SCALE`` times the median span (an epoch's short
    last batch at a high lr, a spike): in a terminal panel drawn clipped to the others' scale, so
    one step does not flatten the rest, and named in the panel's title."""
    spans = {r.step: _span(r) for r in measured(steps)}
    finite_spans = sorted(v for v in spans.values() if finite(v))
    if len(finite_spans) < OFF_SCALE_MIN_STEPS:
        return []
    median = finite_spans[len(finite_spans) // 2]
    return [r for r in measured(steps) if median > 0 and spans[r.step] > OFF_SCALE * median]


def _span(r: StepMeasured) -> float:
    values = [v for v in r.slice or [] if finite(v)]
    return max(values) - min(values) if values else math.nan


def _frame(steps: Sequence[StepMeasured], out: list[StepMeasured]) -> tuple[float, float] | None:
    """The y range of the steps on the scale, padded: where the others are clipped to."""
    values = [v for r in measured(steps) if r not in out for v in r.slice or [] if finite(v)]
    if not values:
        return None
    lo, hi = min(values), max(values)
    pad = 0.08 * (hi - lo or abs(hi) or 1.0)
    return lo - pad, hi + pad


def clipped(s: SliceSeries, frame: tuple[float, float]) -> SliceSeries:
    """The series with every y held inside ``frame`` (off-scale points drawn at its edge)."""
    lo, hi = frame

    def clip(ys: list) -> list:
        return [y if y is None else min(max(y, lo), hi) for y in ys]

    return SliceSeries(s.curve_x, clip(s.curve_y), s.step_x, clip(s.step_y), s.floor_x,
                       clip(s.floor_y), s.barrier_x)  # fmt: skip


def has_data(d: FigureData) -> bool:
    return bool(measured(d.steps))


def skipped(d: FigureData) -> int:
    return sum(count_nonfinite(r.slice or []) for r in d.steps)


def draw_plotext(plt: Any, data: list[FigureData], opts: Options) -> None:
    n = len(data)
    for i, d in enumerate(data):
        s = slice_series(d.steps)
        off = off_scale(d.steps) if n == 1 else []
        frame = _frame(d.steps, off) if off else None
        if frame is not None:
            s = clipped(s, frame)
        if n == 1 and step_lines(len(measured(d.steps)), opts.width):
            for x in s.step_x:
                plt.vline(x, "gray")
        # the floor first, so the interpolated curve is drawn over it where they meet
        plt.plot(s.floor_x, s.floor_y, marker="·", color=colour(i, n, "orange"),
                 label=series_name(d.label, "valley floor"))  # fmt: skip
        for j, (xs, ys) in enumerate(runs(s.curve_x, s.curve_y)):
            plt.plot(xs, ys, marker="braille", color=colour(i, n, "blue+"),
                     label=series_name(d.label, "interpolated") if j == 0 else None)  # fmt: skip
        plt.scatter(s.step_x, s.step_y, marker="●", color=colour(i, n, "red+"),
                    label=series_name(d.label, "loss at step"))  # fmt: skip
    label_plotext(plt, TITLE, "step + α", "loss")


def draw_mpl(ax: Any, data: list[FigureData], opts: Options) -> None:
    """Gray step lines, blue interpolated loss, red loss at the steps, dashed orange floor."""
    n = len(data)
    for i, d in enumerate(data):
        s = slice_series(d.steps)
        if i == 0 and step_lines(len(measured(d.steps)), MPL_COLUMNS):
            ax.vlines(s.step_x, 0, 1, transform=ax.get_xaxis_transform(), colors="0.85", lw=0.6,
                      zorder=0)  # one collection: fast for many steps  # fmt: skip
        curve_y = [math.nan if y is None else y for y in s.curve_y]  # NaN breaks the line at gaps
        c = f"C{i}" if n > 1 else None
        ax.plot(s.curve_x, curve_y, "-", marker=".", ms=2.5, lw=1.0, color=c or "C0",
                label=series_name(d.label, "interpolated loss", ": "))  # fmt: skip
        ax.plot(s.step_x, s.step_y, "o", ms=4, color=c or "C3",
                label=series_name(d.label, "loss at step", ": "))  # fmt: skip
        ax.plot(s.floor_x, s.floor_y, "--", lw=1.2, color=c or "C1",
                label=series_name(d.label, "valley floor", ": "))  # fmt: skip
    title = f"{describe_run(data[0])} · {step_range(measured(data[0].steps))}" if n == 1 else None
    label_mpl(ax, title, "step + α  (θ_t + αΔ_t between step t and t+1)",
              "training loss (probe set)")  # fmt: skip
    if title is None:  # an overlay: the legend names the runs
        ax.set_title("Loss interpolated between consecutive steps")


def rows(d: FigureData) -> list[dict[str, Any]]:
    return [record_row(r, session=d.name) for r in d.steps]


def panel_title(d: FigureData, live: Live) -> str:
    steps = measured(d.steps)
    barriers = sum(bool(s.barrier) for s in steps)
    interior = sum(bool(s.interior_min) for s in steps)
    share = f" · interior min {interior / len(steps):.0%}" if steps else ""
    split = [s.dominant_fraction for s in steps if s.dominant_fraction is not None]
    top = f" · top-k {split[-1]:.0%} of Δ" if split and math.isfinite(split[-1]) else ""
    return f"slices · last {live.window} steps · {barriers} barriers{share}{top}{_off(steps)}"


def _off(steps: list[StepMeasured]) -> str:
    """ " · step 24 off scale (batch 28)": the steps drawn past the frame, and why, if short."""
    out = off_scale(steps)
    if not out:
        return ""
    usual = max(r.batch_size for r in steps)
    why = [f"step {r.step}" + (f" (batch {r.batch_size})" if r.batch_size < usual else "")
           for r in out[-2:]]  # fmt: skip
    return f" · {', '.join(why)} off scale"


FIGURE = Figure(
    name="slices",
    needs=Needs(steps="measured"),
    what="measured steps (slices)",
    has_data=has_data,
    skipped=skipped,
    plotext=draw_plotext,
    mpl=draw_mpl,
    rows=rows,
    panel_title=panel_title,
    empty_panel="waiting for the first measured step",
)
