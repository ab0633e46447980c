"""The paper's Figure 7: the cosine of consecutive mini-batch gradients, cos(g_{t-1}, g_t), and
of consecutive updates, cos(Δ_{t-1}, Δ_t).

With plain SGD (no momentum, no weight decay) Δ_t = −η g_t, so the two cosines are the same number
and one curve would hide the other while the legend listed both: then one curve is drawn, labelled
as both.
"""

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

SAME = 1e-6  # cosines closer than this are one curve
GRAD, UPDATE, BOTH = "cos(g(t-1), g(t))", "cos(Δ(t-1), Δ(t))", "cos(g) = cos(Δ)"  # legends


def cosine_series(steps: Sequence[StepMeasured]) -> dict[str, tuple[list, list]]:
    """The finite points of each cosine; a single "cos(g) = cos(Δ)" series when they coincide."""
    xs = [r.step for r in steps]
    grad = finite_pairs(xs, [r.grad_cos for r in steps])
    update = finite_pairs(xs, [r.update_cos for r in steps])
    if (
        grad[0]
        and grad[0] == update[0]
        and all(abs(a - b) <= SAME for a, b in zip(grad[1], update[1], strict=True))
    ):
        return {BOTH: grad}
    return {GRAD: grad, UPDATE: update}


def has_data(d: FigureData) -> bool:
    return any(xs for xs, _ in cosine_series(d.steps).values())


def skipped(d: FigureData) -> int:
    return count_nonfinite([r.grad_cos for r in d.steps] + [r.update_cos for r in d.steps])


def draw_plotext(plt: Any, data: list[FigureData], opts: Options) -> None:
    n = len(data)
    colours = {GRAD: "blue+", UPDATE: "magenta+", BOTH: "blue+"}
    for i, d in enumerate(data):
        for key, (xs, ys) in cosine_series(d.steps).items():
            if not xs:
                continue  # no legend entry for a curve that is not there
            marker = "·" if n > 1 and key == UPDATE else "braille"
            plt.plot(xs, ys, marker=marker, color=colour(i, n, colours[key]),
                     label=series_name(d.label, key))  # fmt: skip
    label_plotext(plt, "Figure 7: cosine of consecutive gradients and updates", "step", "cosine")


# matplotlib's mathtext: subscripts drawn as such, not as the literal "g_{t-1}"
_MPL = {GRAD: ("-", "C0", r"$\cos(g_{t-1}, g_t)$"), UPDATE: (":", "C2", r"$\cos(\Delta_{t-1}, \Delta_t)$"),
        BOTH: ("-", "C0", r"$\cos(g_{t-1}, g_t) = \cos(\Delta_{t-1}, \Delta_t)$ (plain SGD)")}  # fmt: skip


def draw_mpl(ax: Any, data: list[FigureData], opts: Options) -> None:
    n = len(data)
    for i, d in enumerate(data):
        for key, (xs, ys) in cosine_series(d.steps).items():
            if not xs:
                continue
            style, col, name = _MPL[key]
            ax.plot(xs, ys, style, lw=0.8, color=col if n == 1 else f"C{i}",
                    label=series_name(d.label, name, ": "))  # fmt: skip
    ax.axhline(0.0, color="0.6", lw=0.6, zorder=0)
    label_mpl(ax, f"Cosine of consecutive gradients and updates · {run_title(data)}", "step",
              "cosine")  # fmt: skip


def rows(d: FigureData) -> list[dict[str, Any]]:
    return [record_row(r, only=("step", "epoch", "grad_cos", "update_cos"), session=d.name)
            for r in d.steps]  # fmt: skip


FIGURE = Figure(
    name="cosine",
    needs=Needs(steps="all"),
    what="gradient cosines in the chosen range",
    has_data=has_data,
    skipped=skipped,
    plotext=draw_plotext,
    mpl=draw_mpl,
    rows=rows,
    panel_title=lambda d, live: "cosines",
    empty_panel="cosines appear from the second step",
)
