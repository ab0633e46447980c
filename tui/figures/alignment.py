"""The paper's Figures 5-6: how well mini-batch gradients align with the top Hessian eigenvectors,
against batch size, one series per curvature measurement.

The paper's claim to check: larger batches align more. ``Options.metric`` picks the number drawn
(the subspace alignment ‖V_kᵀg‖/‖g‖ by default); the rows keep them all.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from sgdwalk.records import Alignment, CurvatureMeasured
from sgdwalk.tui.figures.base import (
    PALETTE,
    Figure,
    FigureData,
    Needs,
    Options,
    count_nonfinite,
    finite,
    finite_pairs,
    label_mpl,
    label_plotext,
    run_title,
    series_name,
)
from sgdwalk.tui.figures.rows import record_row

METRICS = ("subspace", "eig_cos", "rayleigh", "full_cos")
TITLES = {
    "subspace": "subspace alignment ‖V_kᵀg‖/‖g‖",
    "eig_cos": "mean |cos(g, v_i)|",
    "rayleigh": "Rayleigh quotient gᵀHg/‖g‖²",
    "full_cos": "cos(g_b, g_full)",
}
SHOWN = 4  # the dashboard panel shows the latest few measurements: more are unreadable there


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else math.nan


def value(a: Alignment, metric: str) -> float:
    """One alignment number of a batch size: subspace, eig_cos (mean over i), rayleigh, full_cos."""
    if metric == "subspace":
        return a.subspace_mean
    if metric == "eig_cos":
        return _mean(a.eig_cos_mean)
    if metric == "rayleigh":
        return a.rayleigh_mean
    if metric == "full_cos":
        return a.full_cos_mean
    raise ValueError(f"unknown alignment metric {metric!r}; one of {', '.join(METRICS)}")


def spread(a: Alignment, metric: str) -> float:
    """The std over the sampled batches of ``value``."""
    if metric == "eig_cos":
        return _mean(a.eig_cos_std)
    return {"subspace": a.subspace_std, "rayleigh": a.rayleigh_std,
            "full_cos": a.full_cos_std}[metric]  # fmt: skip


def alignment_series(
    curvature: Sequence[CurvatureMeasured], metric: str = "subspace"
) -> list[tuple[CurvatureMeasured, list[int], list[float], list[float]]]:
    """Per curvature record: batch sizes, the metric and its std, sorted by batch size, finite."""
    out = []
    for c in curvature:
        by_size = sorted(c.alignment, key=lambda a: a.batch_size)
        points = [(a.batch_size, value(a, metric), spread(a, metric)) for a in by_size]
        kept = [p for p in points if finite(p[1])]
        xs, ys = finite_pairs([p[0] for p in kept], [p[1] for p in kept])
        if xs:
            errs = [p[2] if finite(p[2]) else 0.0 for p in kept]
            out.append((c, xs, ys, errs))
    return out


def has_data(d: FigureData) -> bool:
    return bool(alignment_series(d.curvature))


def pass_label(c: CurvatureMeasured, passes: Sequence[CurvatureMeasured]) -> str:
    """ "epoch 3" for a pass, or "step 36" when the passes shown share epochs (``Ns`` schedules)."""
    epochs = [p.epoch for p in passes]
    return f"epoch {c.epoch}" if len(set(epochs)) == len(epochs) else f"step {c.step}"


def skipped(d: FigureData) -> int:
    return sum(count_nonfinite([a.subspace_mean for a in c.alignment]) for c in d.curvature)


def draw_plotext(plt: Any, data: list[FigureData], opts: Options) -> None:
    sizes: set[int] = set()
    n = len(data)
    for i, d in enumerate(data):
        for j, (c, xs, ys, _) in enumerate(alignment_series(d.curvature, opts.metric)):
            col = PALETTE[(i if n > 1 else j) % len(PALETTE)]
            plt.plot(xs, ys, marker="braille", color=col,
                     label=series_name(d.label, pass_label(c, d.curvature)))  # fmt: skip
            plt.scatter(xs, ys, marker="●", color=col)
            sizes.update(xs)
    if not sizes:
        return
    ordered = sorted(sizes)
    if ordered[0] > 0:
        plt.xscale("log")
    plt.xticks(ordered, [str(b) for b in ordered])
    label_plotext(plt, f"Figures 5-6: {TITLES[opts.metric]} against batch size", "batch size",
                  opts.metric)  # fmt: skip


def draw_mpl(ax: Any, data: list[FigureData], opts: Options) -> None:
    """Alignment against batch size, mean ± std over the sampled batches."""
    from matplotlib import colormaps
    from matplotlib.ticker import NullFormatter

    sizes: set[int] = set()
    for i, d in enumerate(data):
        series = alignment_series(d.curvature, opts.metric)
        for j, (c, xs, ys, errs) in enumerate(series):
            shade = 0.35 + 0.65 * (j + 1) / len(series)
            color = colormaps["viridis"](j / max(1, len(series) - 1)) if len(data) == 1 else f"C{i}"
            ax.errorbar(xs, ys, yerr=errs, fmt="-o", ms=3, capsize=2, color=color,
                        alpha=1.0 if len(data) == 1 else shade,
                        label=series_name(d.label, pass_label(c, d.curvature), ": "))  # fmt: skip
            sizes.update(xs)
    if sizes and min(sizes) > 0:
        ax.set_xscale("log")
        ax.set_xticks(sorted(sizes), [str(b) for b in sorted(sizes)])
        ax.xaxis.set_minor_formatter(NullFormatter())
    label_mpl(ax, f"Gradient alignment with the top Hessian eigenvectors · {run_title(data)}",
              "batch size", TITLES[opts.metric])  # fmt: skip


def rows(d: FigureData) -> list[dict[str, Any]]:
    return [record_row(a, session=d.name, step=c.step, epoch=c.epoch)
            for c in d.curvature for a in c.alignment]  # fmt: skip


FIGURE = Figure(
    name="alignment",
    needs=Needs(curvature=SHOWN),
    what="curvature records (run with --hessian-every N)",
    has_data=has_data,
    skipped=skipped,
    plotext=draw_plotext,
    mpl=draw_mpl,
    rows=rows,
    # where λ1 stands against 2/η is the sharpness panel's title (this one has no room for it)
    panel_title=lambda d, live: f"alignment · {live.measurements} measurements",
    empty_panel="alignment appears with curvature records",
)
