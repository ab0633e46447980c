"""Sharpness against the stability threshold: the optimizer's sharpness at each curvature pass and
its threshold c₀/η from each step's learning rate, so a schedule shows (``sgdwalk.geometry``: for
plain SGD λ1 (+ wd) against (2 + 2β)/η; for Adam the preconditioned sharpness against
(2 + 2β1)/((1 − β1)η)). Sessions recorded before the passes carried the optimizer's own edge are
drawn as plain SGD (``sgdwalk.sharpness``), but only when they trained with SGD: a session of
another optimizer whose passes carry no edge yet (Adam's before its first step) or at all (an
optimizer sgdwalk does not know) gets no line, never SGD's in its place. Where the values span
more than two decades (a schedule that sends η to near zero) the y axis is logarithmic."""

from __future__ import annotations

import math
from typing import Any

from sgdwalk.records import CurvatureMeasured
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
from sgdwalk.tui.text import optimizer_of


def _hyper(d: FigureData) -> tuple[float, float]:
    """Momentum β and weight decay of a session (0 when absent, or not numbers)."""
    values = []
    for key in ("momentum", "weight_decay"):
        v = d.config.get(key)
        values.append(float(v) if isinstance(v, int | float) and not isinstance(v, bool) else 0.0)
    return values[0], values[1]


def _edged(d: FigureData) -> list[CurvatureMeasured]:
    """The passes that carry the optimizer's own edge (sessions since it was recorded)."""
    return [c for c in d.curvature if c.edge_ratio is not None and c.threshold is not None]


def _as_sgd(d: FigureData) -> bool:
    """Whether a session with no pass carrying the optimizer's edge is read as plain SGD: one
    recorded before passes carried it (their edge_line is None too), trained with SGD."""
    return all(c.edge_line is None for c in d.curvature) and optimizer_of(d.config) == "sgd"


def _lr_at(d: FigureData, step: int) -> float | None:
    """The lr of ``step`` (the pass at θ_0: the first step's)."""
    return next((r.lr for r in d.steps if r.step >= max(step, 1)), None)


def _constants(d: FigureData, edged: list[CurvatureMeasured]) -> list[float | None]:
    """For each step, the optimizer's constant c₀ (threshold · η at a pass) of the latest pass at
    or before it (the first pass's before that): c₀ moves when a schedule cycles β (OneCycle's
    Adam β1: c₀ = (2+2β1)/(1−β1) went from 34 to 67 in one run)."""
    marks = [(c.step, c.threshold * lr) for c in edged
             if c.threshold is not None and (lr := _lr_at(d, c.step))]  # fmt: skip
    out, j = [], 0
    for r in d.steps:
        while j + 1 < len(marks) and marks[j + 1][0] <= r.step:
            j += 1
        out.append(marks[j][1] if marks else None)
    return out


def sharpness_series(d: FigureData) -> dict[str, tuple[list, list]]:
    """The sharpness at each pass, and the stability threshold from each step's lr: the
    optimizer's own (c₀/η_t, c₀ from the latest pass before) where the passes carry it, else
    plain SGD's (λ1 + wd against (2 + 2β)/η_t) for a session recorded before."""
    edged = _edged(d)
    if edged:
        last = edged[-1]
        lam = finite_pairs([c.step for c in edged], [c.sharpness for c in edged])
        line = finite_pairs([r.step for r in d.steps],
                            [c0 / r.lr if c0 and r.lr > 0 else None
                             for r, c0 in zip(d.steps, _constants(d, edged), strict=True)])  # fmt: skip
        return {last.sharpness_name or "sharpness": lam, last.edge_line or "threshold": line}
    if not _as_sgd(d):
        return {"sharpness": ([], []), "threshold": ([], [])}
    beta, wd = _hyper(d)
    lam = finite_pairs([c.step for c in d.curvature],
                       [c.eigenvalues[0] + wd if c.eigenvalues else None for c in d.curvature])  # fmt: skip
    line = finite_pairs([r.step for r in d.steps], [threshold(r.lr, beta) for r in d.steps])
    return {"λ1 + wd" if wd else "λ1": lam, "(2+2β)/η" if beta else "2/η": line}


def tracked_series(d: FigureData) -> tuple[list, list]:
    """``--track-sharpness``: the sharpness at every measured step, its edge ratio times the
    threshold c₀/η of that step's lr (c₀ from the latest pass), on the passes' scale."""
    edged = _edged(d)
    if not edged:
        return [], []
    return finite_pairs([r.step for r in d.steps],
                        [r.edge_ratio * c0 / r.lr if c0 and r.edge_ratio is not None and r.lr > 0
                         else None
                         for r, c0 in zip(d.steps, _constants(d, edged), strict=True)])  # fmt: skip


def edge_text(d: FigureData) -> str:
    """ "λ1 at 0.69 of 2/η" for the latest curvature pass, or ""."""
    edged = _edged(d)
    if edged:
        last = edged[-1]
        return f"{last.sharpness_name} at {last.edge_ratio:.2f} of {last.edge_line}"
    if not _as_sgd(d):
        return ""
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
    return bool(next(iter(sharpness_series(d).values()))[0])


def log_scale(data: list[FigureData]) -> bool:
    """Whether the plotted values span more than two decades (a schedule's lr falling to near
    zero sends the threshold up by orders): then the y axis is logarithmic."""
    values = [y for d in data for _, ys in sharpness_series(d).values() for y in ys]
    values += [y for d in data for y in tracked_series(d)[1]]
    if not values or min(values) <= 0:  # a log axis cannot hold them (a negative λ1)
        return False
    return max(values) / min(values) > 100


def skipped(d: FigureData) -> int:
    return count_nonfinite([c.eigenvalues[0] for c in d.curvature if c.eigenvalues])


_PLOTEXT = ("red+", "gray")


def draw_plotext(plt: Any, data: list[FigureData], opts: Options) -> None:
    n, log = len(data), log_scale(data)

    def y(values: list) -> list:  # on a log axis, plotted as log10 with decade ticks
        return [math.log10(v) for v in values] if log else values

    for i, d in enumerate(data):
        (lam_key, lam), (line_key, line) = sharpness_series(d).items()
        if line[0]:
            plt.plot(line[0], y(line[1]), marker="braille", color=colour(i, n, _PLOTEXT[1]),
                     label=series_name(d.label, line_key))  # fmt: skip
        every = tracked_series(d)
        if every[0]:
            plt.plot(every[0], y(every[1]), marker="braille", color=colour(i, n, "orange"),
                     label=series_name(d.label, "every step"))  # fmt: skip
        if lam[0]:
            plt.plot(lam[0], y(lam[1]), marker="braille", color=colour(i, n, _PLOTEXT[0]),
                     label=series_name(d.label, lam_key))  # fmt: skip
            plt.scatter(lam[0], y(lam[1]), marker="●", color=colour(i, n, _PLOTEXT[0]))
    if log:
        values = [v for d in data for _, ys in sharpness_series(d).values() for v in ys]
        values += [v for d in data for v in tracked_series(d)[1]]
        decades = range(math.floor(math.log10(min(values))), math.ceil(math.log10(max(values))) + 1)
        plt.yticks(list(decades), [f"1e{k}" for k in decades])
    label_plotext(plt, "sharpness against the stability threshold" + (" (log scale)" if log else ""),
                  "step", "curvature")  # fmt: skip


def draw_mpl(ax: Any, data: list[FigureData], opts: Options) -> None:
    n = len(data)
    for i, d in enumerate(data):
        (lam_key, lam), (line_key, line) = sharpness_series(d).items()
        col = "C3" if n == 1 else f"C{i}"
        if line[0]:
            name = series_name(d.label, f"{line_key} (stability threshold)", ": ")
            ax.plot(*line, "--", lw=1.0, color="0.4" if n == 1 else col, label=name)
        every = tracked_series(d)
        if every[0]:
            name = series_name(d.label, f"{lam_key} (every step, tracked)", ": ")
            ax.plot(*every, "-", lw=0.8, alpha=0.7, color="C1" if n == 1 else col, label=name)
        if lam[0]:
            name = series_name(d.label, f"{lam_key} (each curvature pass)", ": ")
            ax.plot(*lam, "-o", ms=4, color=col, label=name)
    if log_scale(data):
        ax.set_yscale("log")
    label_mpl(ax, f"Sharpness and the edge of stability · {run_title(data)}", "step", "curvature")


def rows(d: FigureData) -> list[dict[str, Any]]:
    beta, wd = _hyper(d)
    out = []
    for c in d.curvature:
        lr = _lr_at(d, c.step)
        lam = c.eigenvalues[0] if c.eigenvalues else None
        legacy = c.edge_ratio is None and lam is not None and lr is not None
        out.append({"session": d.name, "step": c.step, "epoch": c.epoch, "lr": lr,
                    "lambda1": lam, "weight_decay": wd, "momentum": beta,
                    "sharpness": c.sharpness if not legacy else lam + wd,  # type: ignore[operator]
                    "threshold": c.threshold if not legacy else threshold(lr, beta),  # type: ignore[arg-type]
                    "edge_ratio": c.edge_ratio if not legacy else edge_ratio(lam, lr, beta, wd)})  # type: ignore[arg-type]  # fmt: skip
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
