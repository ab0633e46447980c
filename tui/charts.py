"""One function per figure of the paper, drawn onto a plotext-compatible object.

Why this shape: the dashboard (textual-plotext's ``PlotextPlot.plt``) and ``sgdwalk export`` (the
``plotext`` module itself) must draw the same picture from the same records (STYLE.md "Keep the same
chart code for screen and export"). So each ``draw_*`` function only adds series, labels and a title
to ``plt``; the caller owns the figure's life (clear, size, theme, build). The numbers behind each
figure come from small pure ``*_series`` functions, which the matplotlib export and the csv/json
export reuse, so every format shows the same points.

All functions accept empty sequences (they draw nothing) and skip non-finite values (a diverged run
stores NaN/inf), because plotext would otherwise stretch its axes to infinity or fail.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sgdwalk.records import Alignment, CurvatureMeasured, EpochEnded, StepMeasured

ALIGN_METRICS = ("subspace", "eig_cos", "rayleigh", "full_cos")
ALIGN_TITLES = {
    "subspace": "subspace alignment ‖V_kᵀg‖/‖g‖",
    "eig_cos": "mean |cos(g, v_i)|",
    "rayleigh": "Rayleigh quotient gᵀHg/‖g‖²",
    "full_cos": "cos(g_b, g_full)",
}
STEP_LINES_MAX = 30  # more steps than this and gray step lines would paint the plot gray
PALETTE = ("blue+", "red+", "green+", "magenta+", "cyan+", "orange", "yellow", "gray")
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def _name(label: str | None, what: str) -> str:
    return what if label is None else f"{label} {what}"


def _finite_pairs(xs: Sequence[float], ys: Sequence[float | None]) -> tuple[list, list]:
    """Drop points whose y is None, NaN or infinite."""
    px, py = [], []
    for x, y in zip(xs, ys, strict=True):
        if y is not None and math.isfinite(y):
            px.append(x)
            py.append(y)
    return px, py


# ---------------------------------------------------------------- Figure 1: slices


@dataclass
class SliceSeries:
    """Points of Figure 1; x = step + α, so step t's slice spans [t, t+1]."""

    curve_x: list[float] = field(default_factory=list)  # every slice point, runs split by None
    curve_y: list[float | None] = field(default_factory=list)
    step_x: list[float] = field(default_factory=list)  # L_0 at each measured step
    step_y: list[float] = field(default_factory=list)
    floor_x: list[float] = field(default_factory=list)  # valley floor: t + floor_alpha
    floor_y: list[float] = field(default_factory=list)
    barrier_x: list[float] = field(default_factory=list)  # steps whose slice has a barrier

    def interpolated(self) -> tuple[list[float], list[float]]:
        """The interior points α ∈ (0, 1) only (the ones between consecutive steps)."""
        pts = [(x, y) for x, y in zip(self.curve_x, self.curve_y, strict=True)
               if y is not None and not float(x).is_integer()]  # fmt: skip
        return [p[0] for p in pts], [p[1] for p in pts]


def slice_series(steps: Sequence[StepMeasured]) -> SliceSeries:
    s = SliceSeries()
    prev: int | None = None
    for r in steps:
        if r.slice is None or r.alphas is None:
            continue
        if prev is not None and r.step != prev + 1:  # a gap: do not join across it
            s.curve_x.append(float(r.step))
            s.curve_y.append(None)
        xs = [r.step + a for a in r.alphas]
        s.curve_x.extend(xs)
        s.curve_y.extend(v if math.isfinite(v) else None for v in r.slice)
        if math.isfinite(r.slice[0]):
            s.step_x.append(float(r.step))
            s.step_y.append(r.slice[0])
        if r.floor_loss is not None and math.isfinite(r.floor_loss):
            s.floor_x.append(r.step + (r.floor_alpha or 0.0))
            s.floor_y.append(r.floor_loss)
        if r.barrier:
            s.barrier_x.append(float(r.step))
        prev = r.step
    return s


def _runs(xs: list[float], ys: list[float | None]) -> list[tuple[list[float], list[float]]]:
    """Split a curve at None into contiguous runs."""
    runs: list[tuple[list[float], list[float]]] = [([], [])]
    for x, y in zip(xs, ys, strict=True):
        if y is None:
            if runs[-1][0]:
                runs.append(([], []))
            continue
        runs[-1][0].append(x)
        runs[-1][1].append(y)
    return [r for r in runs if r[0]]


def draw_slices(
    plt: Any,
    steps: Sequence[StepMeasured],
    *,
    label: str | None = None,
    color: str | None = None,
    step_lines: bool | None = None,
) -> None:
    """The paper's Figure 1: loss along each step's interpolation, valley floor dashed."""
    s = slice_series(steps)
    if not s.step_x:
        return
    if step_lines if step_lines is not None else len(s.step_x) <= STEP_LINES_MAX:
        for x in s.step_x:
            plt.vline(x, "gray")
    # The floor first, so the interpolated curve is drawn over it where they meet.
    plt.plot(s.floor_x, s.floor_y, marker="·", color=color or "green+",
             label=_name(label, "valley floor"))  # fmt: skip
    for i, (xs, ys) in enumerate(_runs(s.curve_x, s.curve_y)):
        plt.plot(xs, ys, marker="braille", color=color or "blue+",
                 label=_name(label, "interpolated") if i == 0 else None)  # fmt: skip
    plt.scatter(s.step_x, s.step_y, marker="●", color=color or "red+",
                label=_name(label, "loss at step"))  # fmt: skip
    plt.title("Figure 1: loss along each step's interpolation θ_t + α Δ_t")
    plt.xlabel("step + α")
    plt.ylabel("loss")


# ---------------------------------------------------------------- Figure 4: barriers


def barrier_series(epochs: Sequence[EpochEnded]) -> tuple[list[int], list[int], list[int]]:
    """Epochs, barriers per epoch and the running total."""
    xs = [e.epoch for e in epochs]
    per = [e.barriers for e in epochs]
    total, running = 0, []
    for b in per:
        total += b
        running.append(total)
    return xs, per, running


def draw_barriers(
    plt: Any,
    epochs: Sequence[EpochEnded],
    *,
    label: str | None = None,
    color: str | None = None,
    total: bool = True,
) -> None:
    """Figure 4: barriers crossed per epoch (bars) and the running total (a line, right axis)."""
    xs, per, running = barrier_series(epochs)
    if not xs:
        return
    plt.bar(xs, per, color=color or "orange", width=0.6, label=_name(label, "barriers"))
    if total:
        plt.plot(xs, running, marker="braille", color=color or "cyan+", yside="right",
                 label=_name(label, "total"))  # fmt: skip
    plt.xticks(xs)
    plt.title(f"Figure 4: barriers per epoch ({running[-1]} in total)")
    plt.xlabel("epoch")
    plt.ylabel("barriers")


# ---------------------------------------------------------------- Figures 5-6: alignment


def alignment_value(a: Alignment, metric: str) -> float:
    """One alignment number of a batch size: subspace, eig_cos (mean over i), rayleigh, full_cos."""
    if metric == "subspace":
        return a.subspace_mean
    if metric == "eig_cos":
        return sum(a.eig_cos_mean) / len(a.eig_cos_mean) if a.eig_cos_mean else math.nan
    if metric == "rayleigh":
        return a.rayleigh_mean
    if metric == "full_cos":
        return a.full_cos_mean
    raise ValueError(f"unknown alignment metric {metric!r}; one of {', '.join(ALIGN_METRICS)}")


def alignment_series(
    curvature: Sequence[CurvatureMeasured], metric: str = "subspace"
) -> list[tuple[CurvatureMeasured, list[int], list[float]]]:
    """Per curvature record: batch sizes and the metric, sorted by batch size."""
    out = []
    for c in curvature:
        pts = sorted((a.batch_size, alignment_value(a, metric)) for a in c.alignment)
        xs, ys = _finite_pairs([p[0] for p in pts], [p[1] for p in pts])
        if xs:
            out.append((c, xs, ys))
    return out


def draw_alignment(
    plt: Any,
    curvature: Sequence[CurvatureMeasured],
    *,
    metric: str = "subspace",
    label: str | None = None,
    color: str | None = None,
) -> None:
    """Figures 5-6: gradient–Hessian alignment against batch size, one series per measurement."""
    series = alignment_series(curvature, metric)
    if not series:
        return
    for i, (c, xs, ys) in enumerate(series):
        col = color or PALETTE[i % len(PALETTE)]
        plt.plot(xs, ys, marker="braille", color=col, label=_name(label, f"epoch {c.epoch}"))
        plt.scatter(xs, ys, marker="●", color=col)
    sizes = sorted({b for _, bs, _ in series for b in bs})
    if sizes[0] > 0:
        plt.xscale("log")
    plt.xticks(sizes, [str(b) for b in sizes])
    plt.title(f"Figures 5-6: {ALIGN_TITLES[metric]} against batch size")
    plt.xlabel("batch size")
    plt.ylabel(metric)


# ---------------------------------------------------------------- Figure 7: cosines


def cosine_series(steps: Sequence[StepMeasured]) -> dict[str, tuple[list, list]]:
    xs = [r.step for r in steps]
    return {
        "grad_cos": _finite_pairs(xs, [r.grad_cos for r in steps]),
        "update_cos": _finite_pairs(xs, [r.update_cos for r in steps]),
    }


def draw_cosines(
    plt: Any, steps: Sequence[StepMeasured], *, label: str | None = None, color: str | None = None
) -> None:
    """Figure 7: cosine of consecutive mini-batch gradients (and of consecutive updates)."""
    series = cosine_series(steps)
    colors = {"grad_cos": color or "blue+", "update_cos": color or "magenta+"}
    markers = {"grad_cos": "braille", "update_cos": "·" if color else "braille"}
    drew = False
    for key, (xs, ys) in series.items():
        if xs:
            plt.plot(xs, ys, marker=markers[key], color=colors[key], label=_name(label, key))
            drew = True
    if drew:
        plt.title("Figure 7: cosine of consecutive gradients and updates")
        plt.xlabel("step")
        plt.ylabel("cosine")


# ---------------------------------------------------------------- loss


def loss_series(
    steps: Sequence[StepMeasured], epochs: Sequence[EpochEnded]
) -> dict[str, tuple[list, list]]:
    return {
        "batch loss": _finite_pairs([r.step for r in steps], [r.batch_loss for r in steps]),
        "train loss": _finite_pairs([e.steps for e in epochs], [e.train_loss for e in epochs]),
        "val loss": _finite_pairs([e.steps for e in epochs], [e.val_loss for e in epochs]),
    }


def draw_loss(
    plt: Any,
    steps: Sequence[StepMeasured],
    epochs: Sequence[EpochEnded],
    *,
    label: str | None = None,
    color: str | None = None,
) -> None:
    """Mini-batch loss per step, with train and validation loss (on P) at each epoch's end."""
    series = loss_series(steps, epochs)
    style = {"batch loss": ("braille", color or "blue+"), "train loss": ("●", color or "red+"),
             "val loss": ("◆", color or "green+")}  # fmt: skip
    drew = False
    for key, (xs, ys) in series.items():
        if not xs:
            continue
        marker, c = style[key]
        draw = plt.plot if key == "batch loss" else plt.scatter
        draw(xs, ys, marker=marker, color=c, label=_name(label, key))
        drew = True
    if drew:
        plt.title("loss")
        plt.xlabel("step")
        plt.ylabel("loss")


# ---------------------------------------------------------------- text rendering


def no_color() -> bool:
    """True when the user asked for no colour (https://no-color.org: NO_COLOR set, non-empty)."""
    return bool(os.environ.get("NO_COLOR"))


def strip_ansi(text: str) -> str:
    return _ANSI.sub("", text)


def render_text(
    draw: Callable[..., None],
    *args: Any,
    width: int = 100,
    height: int = 30,
    color: bool = False,
    **kw: Any,
) -> str:
    """Draw one figure with the plotext module into a string; ANSI colour only if ``color``
    and NO_COLOR is unset."""
    return build_text(draw, *args, width=width, height=height, colored=color and not no_color(),
                      **kw)  # fmt: skip


def build_text(
    draw: Callable[..., None], *args: Any, width: int, height: int, colored: bool, **kw: Any
) -> str:
    """``render_text`` without the NO_COLOR check (files such as svg are not a terminal)."""
    import plotext

    plotext.clear_figure()  # plotext keeps module-level state between figures
    try:
        plotext.limitsize(False, False)  # else plotext clips to the terminal (80x24 without one)
        plotext.plotsize(width, height)
        plotext.theme("pro" if colored else "clear")
        draw(plotext, *args, **kw)
        text = plotext.build()
    finally:
        plotext.clear_figure()
    return text if colored else strip_ansi(text)
