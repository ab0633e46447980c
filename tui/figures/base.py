"""What a figure is: its declaration, the data it is drawn from, and guarded plotext drawing.

Why one declaration per figure (``Figure``): the dashboard panel, the txt/svg/html export (plotext),
the png/pdf export (matplotlib) and the csv/json export all draw or write the same figure from the
same records. A figure module (``slices``, ``barriers``, ...) says once which records it needs, how
its series are built from them, how each backend draws them, what its rows are, and what to say when
a session has none; everything else (``sgdwalk.tui.dashboard``, ``export``) is generic.

Drawing is guarded (``SafePlot``): sessions of diverged runs hold NaN and inf, and plotext fails on
both (an empty labelled series breaks its legend, inf its axis), so every series is filtered to
finite points, a series left empty is not added at all, and axis labels of huge or tiny numbers are
kept short. The number of values left out is reported by ``Figure.skipped``.

Every figure is titled and labelled the same way in both backends (``label_plotext``,
``label_mpl``, ``series_name``), so the figure modules say only their own words.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sgdwalk.records import CurvatureMeasured, EpochEnded, StepMeasured
from sgdwalk.tui.text import optimizer_of

PALETTE = ("blue+", "red+", "green+", "magenta+", "cyan+", "orange", "yellow", "gray")
COLUMNS_PER_STEP_LINE = 4  # a gray step line needs this many columns of plot width to itself
DRAWABLE = 1e300  # beyond this plotext's and matplotlib's axis arithmetic overflows
MPL_COLUMNS = 800  # the width a png/pdf figure counts as, for the step-line rule (200 lines)
# Config keys that say what a run trained (the science), used to label overlaid runs.
SCIENCE_KEYS = ("model", "dataset", "optimizer", "lr", "batch_size", "momentum", "weight_decay",
                "betas", "eps", "seed", "epochs", "points", "probe", "measure_every", "batchnorm",
                "augment", "train_size", "wrn_depth", "wrn_width", "drop_last", "preset")  # fmt: skip


@dataclass
class FigureData:
    """What one session contributes to one figure (also what a dashboard panel shows)."""

    name: str
    label: str | None = None  # how an overlay names this run ("lr=0.1"); None when alone
    config: dict[str, Any] = field(default_factory=dict)
    steps: list[StepMeasured] = field(default_factory=list)
    epochs: list[EpochEnded] = field(default_factory=list)
    curvature: list[CurvatureMeasured] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)  # the session's info (layer names)


@dataclass(frozen=True)
class Needs:
    """The records a figure is drawn from. ``steps``: "measured" (steps with a slice, a window
    of them), "all" (every step), or None; ``curvature``: whether curvature records are used."""

    steps: str | None = None
    epochs: bool = False
    curvature: int | None = None  # the dashboard draws the latest N; an export draws all


@dataclass(frozen=True)
class Options:
    """How to draw: the alignment metric, and the size in characters (step lines, tick counts)."""

    metric: str = "subspace"
    width: int = 100
    height: int = 30


@dataclass(frozen=True)
class Live:
    """What a dashboard panel's title adds to its data: the window and the running counts."""

    window: int = 20
    barriers: int = 0
    epoch_barriers: int = 0
    measurements: int = 0  # curvature records so far


@dataclass(frozen=True)
class Figure:
    """One figure, declared once (see the module notes)."""

    name: str
    needs: Needs
    what: str  # what a session lacks when there is nothing to draw ("finished epochs")
    has_data: Callable[[FigureData], bool]
    skipped: Callable[[FigureData], int]  # non-finite values the drawing leaves out
    plotext: Callable[[Any, list[FigureData], Options], None]
    mpl: Callable[[Any, list[FigureData], Options], None]
    rows: Callable[[FigureData], list[dict[str, Any]]]
    panel_title: Callable[[FigureData, Live], str]
    empty_panel: str  # what the dashboard panel says before there is data


def step_lines(n_steps: int, width: int) -> bool:
    """The one rule for gray step lines: only when each has room (else they paint it gray)."""
    return 0 < n_steps * COLUMNS_PER_STEP_LINE <= width


def finite(v: float | None) -> bool:
    """A value that can be drawn: not None, NaN or ±inf, and within ±1e300 (the axis arithmetic
    of plotext and matplotlib overflows near the largest floats)."""
    return v is not None and math.isfinite(v) and abs(v) <= DRAWABLE


def finite_pairs(xs: Sequence[float], ys: Sequence[float | None]) -> tuple[list, list]:
    """Drop points whose y is None, NaN or infinite."""
    pairs = [(x, y) for x, y in zip(xs, ys, strict=True) if finite(y)]
    return [p[0] for p in pairs], [p[1] for p in pairs]


def count_nonfinite(values: Sequence[float | None]) -> int:
    """Values that cannot be drawn among ``values`` (None means 'not measured': not counted)."""
    return sum(1 for v in values if v is not None and not finite(v))


def series_name(label: str | None, what: str, sep: str = " ") -> str:
    """A series' legend entry: ``what``, after the run's overlay label when there is one
    ("lr=0.1 valley floor" in plotext; matplotlib legends use ``sep`` ": ")."""
    return what if label is None else f"{label}{sep}{what}"


def colour(i: int, n: int, single: str) -> str:
    """plotext colour of overlay ``i`` of ``n`` (``single`` when alone)."""
    return single if n == 1 else PALETTE[i % len(PALETTE)]


def short_number(v: float) -> str:
    return f"{v:.3g}"


def describe_run(d: FigureData) -> str:
    """What a run trained, for a figure's title: model, dataset, the optimizer (unless plain SGD,
    the paper's), lr, batch size."""
    c = d.config
    parts = [f"{c.get('model', '?')} on {c.get('dataset', '?')}"]
    if optimizer_of(c) not in ("sgd", None):
        parts.append(str(optimizer_of(c)))
    rates = [r.lr for r in d.steps if math.isfinite(r.lr)]
    if rates and (max(rates) != rates[-1] or rates[-1] != c.get("lr")):  # a schedule: what it used
        peak, last = max(rates), rates[-1]
        parts.append(f"lr {peak:.3g} peak, {last:.3g} last" if peak != last else f"lr {peak:.3g}")
    elif c.get("lr") is not None:
        parts.append(f"lr {c['lr']:g}" if isinstance(c["lr"], int | float) else f"lr {c['lr']}")
    if c.get("batch_size") is not None:
        parts.append(f"batch {c['batch_size']}")
    return ", ".join(parts)


def run_title(data: Sequence[FigureData]) -> str:
    """Which run a publication figure shows (``describe_run``), or "all runs" for an overlay."""
    return describe_run(data[0]) if len(data) == 1 else "all runs"


def label_plotext(plt: Any, title: str, x: str, y: str) -> None:
    """A terminal figure's title and axis labels."""
    plt.title(title)
    plt.xlabel(x)
    plt.ylabel(y)


def label_mpl(ax: Any, title: str | None, x: str, y: str) -> None:
    """A publication figure's axis labels and its title, small (a long one names the run)."""
    ax.set_xlabel(x)
    ax.set_ylabel(y)
    if title is not None:
        ax.set_title(title, fontsize=9)


def step_range(steps: Sequence[StepMeasured]) -> str:
    """ "epoch 2, steps 25-64" for the steps a figure shows."""
    if not steps:
        return ""
    epochs = sorted({s.epoch for s in steps})
    ep = f"epoch {epochs[0]}" if len(epochs) == 1 else f"epochs {epochs[0]}-{epochs[-1]}"
    return f"{ep}, steps {steps[0].step}-{steps[-1].step}"


def _drawable(v: float) -> float:
    """``v`` as plotext can take it: subnormal magnitudes flushed to 0."""
    v = float(v)
    return 0.0 if abs(v) < 1e-300 else v


class SafePlot:
    """A plotext figure (the module, or textual-plotext's ``Plot``) that only takes finite points.

    ``plot``, ``scatter`` and ``bar`` drop non-finite points (and magnitudes beyond 1e300, which
    plotext's axis arithmetic overflows on) and add nothing when none are left (plotext's legend
    fails on an empty labelled series). ``finish`` shortens the y-axis labels of
    huge or tiny numbers, which plotext prints in full (1e30 would take 31 columns).
    """

    def __init__(self, plt: Any) -> None:
        self.plt = plt
        self.ys: list[float] = []
        self.drew = False

    def _add(self, kind: str, xs: Sequence[float], ys: Sequence[float | None], **kw: Any) -> None:
        pairs = [(_drawable(x), _drawable(y)) for x, y in zip(xs, ys, strict=True)  # type: ignore[arg-type]
                 if finite(y) and finite(x)]  # fmt: skip
        if not pairs:
            return
        fx, fy = [p[0] for p in pairs], [p[1] for p in pairs]
        if kw.get("label") is None:
            kw.pop("label", None)
        getattr(self.plt, kind)(fx, fy, **kw)
        if kw.get("yside", "left") == "left":
            self.ys.extend(fy)
        self.drew = True

    def plot(self, xs: Sequence[float], ys: Sequence[float | None], **kw: Any) -> None:
        self._add("plot", xs, ys, **kw)

    def scatter(self, xs: Sequence[float], ys: Sequence[float | None], **kw: Any) -> None:
        self._add("scatter", xs, ys, **kw)

    def bar(self, xs: Sequence[float], ys: Sequence[float | None], **kw: Any) -> None:
        self._add("bar", xs, ys, **kw)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.plt, name)  # titles, labels, ticks, vlines, scales

    def finish(self) -> None:
        """Compact y ticks when plotext's own would be too wide."""
        if not self.ys:
            return
        lo, hi = min(self.ys), max(self.ys)
        big = max(abs(lo), abs(hi))
        if big < 1e5 and (big == 0 or big >= 1e-3):
            return
        ticks = [lo + (hi - lo) * i / 4 for i in range(5)] if hi > lo else [lo]
        self.plt.yticks(ticks, [short_number(t) for t in ticks])


def draw_plotext(figure: Figure, plt: Any, data: list[FigureData], opts: Options) -> bool:
    """Draw ``figure`` on a plotext object through ``SafePlot``; True when anything was drawn."""
    shown = [d for d in data if figure.has_data(d)]
    if not shown:
        return False
    safe = SafePlot(plt)
    figure.plotext(safe, shown, opts)
    safe.finish()
    return safe.drew
