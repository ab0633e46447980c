"""Dominant and bulk parts of each step (Gur-Ari et al. 2018; Song, Ahn and Yun 2024): with the top-k
Hessian eigenvectors V_k of the latest curvature pass, the loss change of the whole step
L(θ_t + Δ_t) − L(θ_t), of its dominant part L(θ_t + V_kV_kᵀΔ_t) − L(θ_t), and of its bulk
L(θ_t + (I − V_kV_kᵀ)Δ_t) − L(θ_t); the rows add the dominant fraction ‖V_kV_kᵀΔ_t‖²/‖Δ_t‖².
Recorded with ``run --decompose`` (or ``Walker(decompose=True)``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sgdwalk.records import StepMeasured
from sgdwalk.tui.figures.base import (
    Figure,
    FigureData,
    Needs,
    Options,
    colour,
    count_nonfinite,
    finite_pairs,
    label_mpl,
    label_plotext,
    run_title,
    series_name,
)
from sgdwalk.tui.figures.rows import record_row

FIELDS = ("dominant_fraction", "dominant_loss", "bulk_loss", "basis_step")


def decomposed(steps: Sequence[StepMeasured]) -> list[StepMeasured]:
    return [r for r in steps if r.slice and r.dominant_loss is not None]


def decomposition_series(steps: Sequence[StepMeasured]) -> dict[str, tuple[list, list]]:
    rs = decomposed(steps)
    xs = [r.step for r in rs]
    start = [r.slice[0] if r.slice else None for r in rs]

    def change(ends: list[float | None]) -> list[float | None]:
        return [None if a is None or b is None else b - a for a, b in zip(start, ends, strict=True)]

    return {
        "whole step": finite_pairs(xs, change([r.slice[-1] if r.slice else None for r in rs])),
        "dominant part": finite_pairs(xs, change([r.dominant_loss for r in rs])),
        "bulk part": finite_pairs(xs, change([r.bulk_loss for r in rs])),
    }


def has_data(d: FigureData) -> bool:
    return bool(decomposed(d.steps))


def skipped(d: FigureData) -> int:
    rs = decomposed(d.steps)
    return count_nonfinite([r.dominant_loss for r in rs] + [r.bulk_loss for r in rs])


_PLOTEXT = {"whole step": "gray", "dominant part": "red+", "bulk part": "blue+"}
_MPL = {"whole step": ("-", "0.4"), "dominant part": ("-", "C3"), "bulk part": ("-", "C0")}


def draw_plotext(plt: Any, data: list[FigureData], opts: Options) -> None:
    n = len(data)
    for i, d in enumerate(data):
        for key, (xs, ys) in decomposition_series(d.steps).items():
            if xs:
                plt.plot(xs, ys, marker="braille", color=colour(i, n, _PLOTEXT[key]),
                         label=series_name(d.label, key))  # fmt: skip
    label_plotext(plt, "loss change of each step and of its dominant (top-k) and bulk parts",
                  "step", "Δ loss")  # fmt: skip


def draw_mpl(ax: Any, data: list[FigureData], opts: Options) -> None:
    n = len(data)
    for i, d in enumerate(data):
        for key, (xs, ys) in decomposition_series(d.steps).items():
            style, col = _MPL[key]
            ax.plot(xs, ys, style, lw=0.9, color=col if n == 1 else f"C{i}",
                    alpha=1.0 if n == 1 or key != "whole step" else 0.5,
                    label=series_name(d.label, key, ": "))  # fmt: skip
    ax.axhline(0.0, color="0.6", lw=0.6)
    label_mpl(ax, f"Dominant (top-k Hessian) and bulk parts of each step · {run_title(data)}",
              "step", "loss change over the step (probe set)")  # fmt: skip


def rows(d: FigureData) -> list[dict[str, Any]]:
    return [record_row(r, only=("step", "epoch", *FIELDS), session=d.name,
                       loss_before=r.slice[0] if r.slice else None,
                       loss_after=r.slice[-1] if r.slice else None)
            for r in decomposed(d.steps)]  # fmt: skip


FIGURE = Figure(
    name="decomposition",
    needs=Needs(steps="all"),
    what="decomposed steps (run with --decompose and --hessian-every N)",
    has_data=has_data,
    skipped=skipped,
    plotext=draw_plotext,
    mpl=draw_mpl,
    rows=rows,
    panel_title=lambda d, live: "step decomposition",  # the legend names the three series
    empty_panel="the decomposition appears with --decompose and curvature records",
)
