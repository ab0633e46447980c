"""Sharpness against the stability threshold: λ1 at each curvature pass, and the line (2 + 2β)/η
from each step's learning rate, so a schedule shows (see ``sgdwalk.sharpness``). With weight decay
the curvature drawn is λ1 + wd, the Hessian of the objective being descended."""

from __future__ import annotations

import math
from typing import Any

from sgdwalk.sharpness import edge_ratio, threshold
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


def _hyper(d: FigureData) -> tuple[float, float]:
    """Momentum β and weight decay of a session (0 when absent, or not numbers)."""
    values = []
    for key in ("momentum", "weight_decay"):
        v = d.config.get(key)
        values.append(float(v) if isinstance(v, int | float) and not isinstance(v, bool) else 0.0)
    return values[0], values[1]


def sharpness_series(d: FigureData) -> dict[str, tuple[list, list]]:
    beta, wd = _hyper(d)
    lam = finite_pairs([c.step for c in d.curvature],
                       [c.eigenvalues[0] + wd if c.eigenvalues else None for c in d.curvature])  # fmt: skip
    line = finite_pairs([r.step for r in d.steps], [threshold(r.lr, beta) for r in d.steps])
    return {"λ1 + wd" if wd else "λ1": lam, "(2+2β)/η" if beta else "2/η": line}


def edge_text(d: FigureData) -> str:
    """ "λ1 at 0.69 of 2/η" for the latest curvature pass (the lr of its step, else the
    config's), or ""."""
    beta, wd = _hyper(d)
    last = d.curvature[-1] if d.curvature else None
    lr = d.config.get("lr")
    if last is not None and d.steps:  # the lr of the pass's step, where the steps are at hand
        lr = next((r.lr for r in reversed(d.steps) if r.step <= last.step), d.steps[0].lr)
    if last is None or not last.eigenvalues or not isinstance(lr, int | float) or not lr > 0:
        return ""
    ratio = edge_ratio(last.eigenvalues[0], float(lr), beta, wd)
    return f"λ1 at {ratio:.2f} of {'(2+2β)/η' if beta else '2/η'}" if math.isfinite(ratio) else ""


def has_data(d: FigureData) -> bool:
    return bool(sharpness_series(d)["λ1 + wd" if _hyper(d)[1] else "λ1"][0])


def skipped(d: FigureData) -> int:
    return count_nonfinite([c.eigenvalues[0] for c in d.curvature if c.eigenvalues])


_PLOTEXT = ("red+", "gray")


def draw_plotext(plt: Any, data: list[FigureData], opts: Options) -> None:
    n = len(data)
    for i, d in enumerate(data):
        (lam_key, lam), (line_key, line) = sharpness_series(d).items()
        if line[0]:
            plt.plot(*line, marker="braille", color=colour(i, n, _PLOTEXT[1]),
                     label=series_name(d.label, line_key))  # fmt: skip
        if lam[0]:
            plt.plot(*lam, marker="braille", color=colour(i, n, _PLOTEXT[0]),
                     label=series_name(d.label, lam_key))  # fmt: skip
            plt.scatter(*lam, marker="●", color=colour(i, n, _PLOTEXT[0]))  # the passes
    label_plotext(plt, "sharpness λ1 against the stability threshold", "step", "curvature")


def draw_mpl(ax: Any, data: list[FigureData], opts: Options) -> None:
    n = len(data)
    for i, d in enumerate(data):
        (lam_key, lam), (line_key, line) = sharpness_series(d).items()
        col = "C3" if n == 1 else f"C{i}"
        if line[0]:
            name = series_name(d.label, f"{line_key} (stability threshold)", ": ")
            ax.plot(*line, "--", lw=1.0, color="0.4" if n == 1 else col, label=name)
        if lam[0]:
            name = series_name(d.label, f"{lam_key} (top Hessian eigenvalue)", ": ")
            ax.plot(*lam, "-o", ms=4, color=col, label=name)
    label_mpl(ax, f"Sharpness and the edge of stability · {run_title(data)}", "step", "curvature")


def rows(d: FigureData) -> list[dict[str, Any]]:
    beta, wd = _hyper(d)
    lrs = {r.step: r.lr for r in d.steps}
    first = d.steps[0].lr if d.steps else None
    out = []
    for c in d.curvature:
        lr = lrs.get(c.step, first) if c.step else first  # the pass at θ_0 uses the first lr
        lam = c.eigenvalues[0] if c.eigenvalues else None
        ok = lam is not None and lr is not None
        out.append({"session": d.name, "step": c.step, "epoch": c.epoch, "lr": lr,
                    "lambda1": lam, "weight_decay": wd, "momentum": beta,
                    "threshold": threshold(lr, beta) if lr is not None else None,
                    "edge_ratio": edge_ratio(lam, lr, beta, wd) if ok else None})  # type: ignore[arg-type]  # fmt: skip
    return out


FIGURE = Figure(
    name="sharpness",
    needs=Needs(steps="all", curvature=0),  # every pass: λ1 over the steps
    what="curvature records (run with --hessian-every N)",
    has_data=has_data,
    skipped=skipped,
    plotext=draw_plotext,
    mpl=draw_mpl,
    rows=rows,
    panel_title=lambda d, live: " · ".join(t for t in ("sharpness", edge_text(d)) if t),
    empty_panel="sharpness appears with curvature records",
)
