"""The paper's Figure 4: barriers crossed per epoch, and the running total.

Counts are integers from 0: the axes start at 0 with whole-number ticks, also when no barrier was
crossed at all (the usual case for small models, where a symmetric axis around 0 would suggest
negative counts).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from sgdwalk.records import EpochEnded
from sgdwalk.tui.figures.base import (
    Figure,
    FigureData,
    Live,
    Needs,
    Options,
    colour,
    label_mpl,
    label_plotext,
    run_title,
    series_name,
)
from sgdwalk.tui.figures.rows import record_row
from sgdwalk.tui.text import share_text


def barrier_series(epochs: Sequence[EpochEnded]) -> tuple[list[int], list[int], list[int]]:
    """Epochs, barriers per epoch and the running total."""
    xs = [e.epoch for e in epochs]
    per = [e.barriers for e in epochs]
    total, running = 0, []
    for b in per:
        total += b
        running.append(total)
    return xs, per, running


def estimates(epochs: Sequence[EpochEnded]) -> list[tuple[int, float, float, float]]:
    """For each epoch of which only a sample of steps was measured: (its index, the estimated
    count of barriers among all its steps, the 95% interval's ends)."""
    out, before = [], 0
    for j, e in enumerate(epochs):
        n, m, before = e.steps - before, e.measured_steps, e.steps
        if m and m < n and e.barriers_low is not None and e.barriers_high is not None:
            out.append((j, n * e.barriers / m, e.barriers_low, e.barriers_high))
    return out


def count_ticks(top: int, rows: int = 30) -> list[int]:
    """Whole-number ticks from 0 to at least ``top``: about five, fewer on a short plot (plotext
    drops tick labels that collide, and which one it drops varies)."""
    top = max(1, top)
    most = max(1, min(4, (rows - 4) // 3))  # intervals: a label every third row at the least
    step = max(1, math.ceil(top / most))
    return list(range(0, top + step, step))


def draw_plotext(plt: Any, data: list[FigureData], opts: Options) -> None:
    """Bars per epoch; the running total is in the title (one legend-free axis reads best)."""
    n = len(data)
    width = 0.8 / n
    top = 0
    totals = []
    for i, d in enumerate(data):
        xs, per, running = barrier_series(d.epochs)
        per = [max(0, b) for b in per]  # a negative count (a damaged file) is not drawn: plotext
        offset = (i - (n - 1) / 2) * width  # would fill a bar row by row far below the axis
        plt.bar([x + offset for x in xs], per, color=colour(i, n, "orange"), width=width,
                label=series_name(d.label, "barriers") if n > 1 else None)  # fmt: skip
        top = max([top, *per])
        totals.append(running[-1] if running else 0)
    ticks = count_ticks(top, opts.height)
    plt.ylim(0, ticks[-1])
    plt.yticks(ticks, [str(t) for t in ticks])
    epochs = sorted({e.epoch for d in data for e in d.epochs})
    plt.xticks(epochs, [str(e) for e in epochs])
    total = f"{totals[0]} in total" if n == 1 else "totals " + ", ".join(map(str, totals))
    label_plotext(plt, f"Figure 4: barriers per epoch ({total})", "epoch", "barriers")


def draw_mpl(ax: Any, data: list[FigureData], opts: Options) -> None:
    from matplotlib.ticker import MaxNLocator

    n = len(data)
    width = 0.8 / n
    twin = ax.twinx()
    tops = [0.0, 0.0]
    for i, d in enumerate(data):
        xs, per, running = barrier_series(d.epochs)
        offset = (i - (n - 1) / 2) * width
        sampled = estimates(d.epochs)
        what = "barriers among the measured steps" if sampled else "barriers per epoch"
        ax.bar([x + offset for x in xs], per, width=width, color=f"C{i}" if n > 1 else "C1",
               label=series_name(d.label, what, ": "))  # fmt: skip
        if sampled:  # a sample of an epoch's steps measured: the epoch's count, estimated
            ax.errorbar([xs[j] + offset for j, _, _, _ in sampled], [s[1] for s in sampled],
                        yerr=[[s[1] - s[2] for s in sampled], [s[3] - s[1] for s in sampled]],
                        fmt="o", ms=3, color="0.3", capsize=2, lw=0.8,
                        label=series_name(d.label, "estimated, 95% interval", ": "))  # fmt: skip
        tops[0] = max([tops[0], *(s[3] for s in sampled)])
        twin.plot(xs, running, "--o", ms=3, color=f"C{i}" if n > 1 else "C0",
                  label=series_name(d.label, "total", ": "))  # fmt: skip
        tops = [max([tops[0], *per]), max([tops[1], *running])]
    for axis, top in ((ax, tops[0]), (twin, tops[1])):
        axis.set_ylim(0, max(1, top) * 1.1)
        axis.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    label_mpl(ax, f"Barriers crossed per epoch · {run_title(data)}", "epoch", "barriers crossed")
    twin.set_ylabel("total barriers")
    handles = ax.get_legend_handles_labels()
    more = twin.get_legend_handles_labels()
    ax.legend(handles[0] + more[0], handles[1] + more[1], fontsize=8, frameon=False)


def rows(d: FigureData) -> list[dict[str, Any]]:
    _, _, running = barrier_series(d.epochs)
    return [record_row(e, session=d.name) | {"total_barriers": t}
            for e, t in zip(d.epochs, running, strict=True)]  # fmt: skip


def panel_title(d: FigureData, live: Live) -> str:
    return f"barriers · {live.barriers} total · {live.epoch_barriers} this epoch"


def epoch_share(epochs: Sequence[EpochEnded]) -> str:
    """The last epoch's interior-minimum share, with its interval and how many steps were
    measured when not all ("interior min 77% ±6%, 41 of 64 measured (epoch 3)")."""
    if not epochs:
        return ""
    e = epochs[-1]
    steps = e.steps - (epochs[-2].steps if len(epochs) > 1 else 0)
    share = share_text(e.interior_min_fraction, e.interior_min_low, e.interior_min_high,
                       e.measured_steps, steps)  # fmt: skip
    return f"interior min {share} (epoch {e.epoch})"


FIGURE = Figure(
    name="barriers",
    needs=Needs(epochs=True),
    what="finished epochs",
    has_data=lambda d: bool(d.epochs),
    skipped=lambda d: 0,  # counts are integers (a negative one, from a damaged file, is drawn
    # as 0, and the title's total shows it)
    plotext=draw_plotext,
    mpl=draw_mpl,
    rows=rows,
    panel_title=panel_title,
    empty_panel="barriers appear when an epoch ends",
)
