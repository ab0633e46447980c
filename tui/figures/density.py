"""The Hessian's spectral density at the latest curvature pass (``run --density``): stochastic
Lanczos quadrature (``sgdwalk.curvature.spectrum``), its weighted nodes smoothed with a Gaussian a
hundredth of the spectrum's width, on a log axis as Ghorbani, Krishnan and Xiao (2019) draw it:
a bulk near zero and a few outliers, the outliers being what the top-k eigenvalues track."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from sgdwalk.records import CurvatureMeasured
from sgdwalk.tui.figures.base import (
    Figure,
    FigureData,
    Needs,
    Options,
    count_nonfinite,
    finite,
    label_mpl,
    label_plotext,
    run_title,
    series_name,
)

POINTS = 200  # grid points of the smoothed density
FLOOR = 1e-8  # densities below this are drawn at it (a log axis holds no zero)


def smooth(nodes: Sequence[float], weights: Sequence[float], grid: Sequence[float],
           width: float) -> list[float]:  # fmt: skip
    """The density on ``grid``: the weighted nodes as Gaussians of standard deviation ``width``."""
    norm = 1.0 / (width * math.sqrt(2 * math.pi))
    pairs = list(zip(nodes, weights, strict=True))
    return [norm * sum(w * math.exp(-0.5 * ((t - x) / width) ** 2) for x, w in pairs)
            for t in grid]  # fmt: skip


def latest(d: FigureData) -> CurvatureMeasured | None:
    return next((c for c in reversed(d.curvature) if c.density_nodes and c.density_weights),
                None)  # fmt: skip


def density_series(d: FigureData) -> tuple[list[float], list[float]]:
    """The smoothed density of the latest pass: (eigenvalue grid, log10 density)."""
    c = latest(d)
    if c is None:
        return [], []
    pairs = [(x, w) for x, w in zip(c.density_nodes or [], c.density_weights or [], strict=True)
             if finite(x) and finite(w)]  # fmt: skip
    if not pairs:
        return [], []
    nodes, weights = [p[0] for p in pairs], [p[1] for p in pairs]
    lo, hi = min(nodes), max(nodes)
    span = (hi - lo) or abs(hi) or 1.0
    grid = [lo - 0.05 * span + i * 1.1 * span / (POINTS - 1) for i in range(POINTS)]
    values = smooth(nodes, weights, grid, span / 100)
    return grid, [math.log10(max(v, FLOOR)) for v in values]


def has_data(d: FigureData) -> bool:
    return bool(density_series(d)[0])


def skipped(d: FigureData) -> int:
    c = latest(d)
    return 0 if c is None else count_nonfinite(c.density_nodes or [])


def draw_plotext(plt: Any, data: list[FigureData], opts: Options) -> None:
    for d in data:
        xs, ys = density_series(d)
        if xs:
            plt.plot(xs, ys, marker="braille", label=series_name(d.label, "density"))
    label_plotext(plt, "Hessian spectral density (latest pass)", "eigenvalue",
                  "log10 density")  # fmt: skip


def draw_mpl(ax: Any, data: list[FigureData], opts: Options) -> None:
    for d in data:
        xs, ys = density_series(d)
        if xs:
            ax.plot(xs, [10**y for y in ys], lw=1.0, label=series_name(d.label, "density", ": "))
    ax.set_yscale("log")
    c = latest(data[0])
    at = f" at step {c.step}" if c is not None else ""
    label_mpl(ax, f"Hessian spectral density{at} · {run_title(data)}", "eigenvalue",
              "density (stochastic Lanczos quadrature)")  # fmt: skip


def rows(d: FigureData) -> list[dict[str, Any]]:
    return [{"session": d.name, "step": c.step, "epoch": c.epoch, "node": x, "weight": w}
            for c in d.curvature
            for x, w in zip(c.density_nodes or [], c.density_weights or [], strict=True)]  # fmt: skip


def panel_title(d: FigureData, live: Any) -> str:
    c = latest(d)
    return "density" if c is None else f"density · step {c.step}"


FIGURE = Figure(
    name="density",
    needs=Needs(curvature=0),
    what="spectral densities (run with --density and --hessian-every N)",
    has_data=has_data,
    skipped=skipped,
    plotext=draw_plotext,
    mpl=draw_mpl,
    rows=rows,
    panel_title=panel_title,
    empty_panel="the spectral density appears with curvature records (--density)",
)
