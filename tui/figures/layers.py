"""Each layer's sharpness: the top eigenvalue of each module's diagonal block of the Hessian at
every curvature pass (``run --layer-curvature``; ``sgdwalk.curvature.spectrum``), so which layer is
sharpest, and how that moves, shows beside the global λ1. Layers are named as the session's info
names them (the modules that own parameters, in order)."""

from __future__ import annotations

from typing import Any

from sgdwalk.records import CurvatureMeasured
from sgdwalk.tui.figures.base import (
    PALETTE,
    Figure,
    FigureData,
    Needs,
    Options,
    count_nonfinite,
    finite_pairs,
    label_mpl,
    label_plotext,
    run_title,
    series_name,
)

SHOWN = 8  # the sharpest layers drawn (the csv has them all)


def passes(d: FigureData) -> list[CurvatureMeasured]:
    return [c for c in d.curvature if c.layer_eigenvalues]


def names(d: FigureData, n: int) -> list[str]:
    given = d.info.get("layers")
    if isinstance(given, list) and len(given) == n:
        return [str(x) for x in given]
    return [f"layer {i + 1}" for i in range(n)]


def layer_series(d: FigureData) -> dict[str, tuple[list, list]]:
    """Each layer's top eigenvalue over the passes, the sharpest (at the last pass) first."""
    ps = passes(d)
    if not ps:
        return {}
    n = len(ps[-1].layer_eigenvalues or [])
    series = {}
    for j, name in enumerate(names(d, n)):
        ys = [c.layer_eigenvalues[j] if c.layer_eigenvalues and j < len(c.layer_eigenvalues)
              else None for c in ps]  # fmt: skip
        series[name] = finite_pairs([c.step for c in ps], ys)
    last = {k: v[1][-1] if v[1] else float("-inf") for k, v in series.items()}
    return dict(sorted(series.items(), key=lambda kv: -last[kv[0]])[:SHOWN])


def has_data(d: FigureData) -> bool:
    return any(xs for xs, _ in layer_series(d).values())


def skipped(d: FigureData) -> int:
    return sum(count_nonfinite(c.layer_eigenvalues or []) for c in passes(d))


def draw_plotext(plt: Any, data: list[FigureData], opts: Options) -> None:
    for d in data:
        for j, (name, (xs, ys)) in enumerate(layer_series(d).items()):
            if xs:
                plt.plot(xs, ys, marker="braille", color=PALETTE[j % len(PALETTE)],
                         label=series_name(d.label, name))  # fmt: skip
    label_plotext(plt, "each layer's top Hessian eigenvalue", "step", "λ1 of the layer's block")


def draw_mpl(ax: Any, data: list[FigureData], opts: Options) -> None:
    for d in data:
        for name, (xs, ys) in layer_series(d).items():
            if xs:
                ax.plot(xs, ys, "-o", ms=3, lw=1.0, label=series_name(d.label, name, ": "))
    label_mpl(ax, f"Each layer's top Hessian eigenvalue · {run_title(data)}", "step",
              "top eigenvalue of the layer's diagonal block of H")  # fmt: skip


def rows(d: FigureData) -> list[dict[str, Any]]:
    out = []
    for c in passes(d):
        values = c.layer_eigenvalues or []
        for name, value in zip(names(d, len(values)), values, strict=True):
            out.append({"session": d.name, "step": c.step, "epoch": c.epoch, "layer": name,
                        "top_eigenvalue": value})  # fmt: skip
    return out


def panel_title(d: FigureData, live: Any) -> str:
    series = layer_series(d)
    if not series:
        return "layers"
    name, (_, ys) = next(iter(series.items()))
    return f"layers · sharpest {name}: λ1 {ys[-1]:.3g}" if ys else "layers"


FIGURE = Figure(
    name="layers",
    needs=Needs(curvature=0),
    what="per-layer curvature (run with --layer-curvature and --hessian-every N)",
    has_data=has_data,
    skipped=skipped,
    plotext=draw_plotext,
    mpl=draw_mpl,
    rows=rows,
    panel_title=panel_title,
    empty_panel="per-layer curvature appears with curvature records (--layer-curvature)",
)
