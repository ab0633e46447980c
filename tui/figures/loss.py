"""Loss: the mini-batch loss of every step, and the train (probe set) and validation loss at each
epoch's end."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from sgdwalk.records import EpochEnded, StepMeasured
from sgdwalk.tui.figures.barriers import epoch_share
from sgdwalk.tui.figures.base import (
    Figure,
    FigureData,
    Live,
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

_EPOCH_FIELDS = ("train_loss", "train_acc", "val_loss", "val_acc")


def loss_series(
    steps: Sequence[StepMeasured], epochs: Sequence[EpochEnded]
) -> dict[str, tuple[list, list]]:
    return {
        "batch loss": finite_pairs([r.step for r in steps], [r.batch_loss for r in steps]),
        "train loss": finite_pairs([e.steps for e in epochs], [e.train_loss for e in epochs]),
        "val loss": finite_pairs([e.steps for e in epochs], [e.val_loss for e in epochs]),
    }


def has_data(d: FigureData) -> bool:
    return any(xs for xs, _ in loss_series(d.steps, d.epochs).values())


def skipped(d: FigureData) -> int:
    """Non-finite values left out. A series with no finite value at all is absent, not skipped:
    a user's loop that reports no batch loss, a Walker session (no validation split)."""
    series = ([r.batch_loss for r in d.steps], [e.train_loss for e in d.epochs],
              [e.val_loss for e in d.epochs])  # fmt: skip
    return sum(count_nonfinite(v) for v in series if count_nonfinite(v) < len(v))


_PLOTEXT = {"batch loss": ("braille", "blue+"), "train loss": ("●", "red+"),
            "val loss": ("◆", "green+")}  # fmt: skip


def draw_plotext(plt: Any, data: list[FigureData], opts: Options) -> None:
    n = len(data)
    for i, d in enumerate(data):
        for key, (xs, ys) in loss_series(d.steps, d.epochs).items():
            if not xs:
                continue  # a Walker session has no validation split: no "val loss" entry
            marker, col = _PLOTEXT[key]
            draw = plt.plot if key == "batch loss" else plt.scatter
            draw(xs, ys, marker=marker, color=colour(i, n, col), label=series_name(d.label, key))
    label_plotext(plt, "loss", "step", "loss")


_MPL = {"batch loss": dict(fmt="-", lw=0.7, alpha=0.8, color="C0", label="mini-batch loss"),
        "train loss": dict(fmt="o", ms=4, color="C3", label="train loss (epoch end)"),
        "val loss": dict(fmt="s", ms=4, mfc="none", color="C2", label="validation loss")}  # fmt: skip


def draw_mpl(ax: Any, data: list[FigureData], opts: Options) -> None:
    n = len(data)
    for i, d in enumerate(data):
        for key, (xs, ys) in loss_series(d.steps, d.epochs).items():
            if not xs:
                continue
            style = dict(_MPL[key])
            fmt, name = style.pop("fmt"), style.pop("label")
            if n > 1:
                style["color"] = f"C{i}"
            ax.plot(xs, ys, fmt, label=series_name(d.label, name, ": "), **style)
    label_mpl(ax, f"Loss · {run_title(data)}", "step", "loss")


def rows(d: FigureData) -> list[dict[str, Any]]:
    ends = {e.steps: e for e in d.epochs}
    out = []
    for r in d.steps:
        row = record_row(r, only=("step", "epoch", "batch_loss"), session=d.name)
        e = ends.get(r.step)
        out.append(row | {k: None if e is None else getattr(e, k) for k in _EPOCH_FIELDS})
    return out


def panel_title(d: FigureData, live: Live) -> str:
    """The last epoch's validation accuracy and interior-minimum share (the epoch summary)."""
    last = d.epochs[-1] if d.epochs else None
    if last is None:
        return "loss"
    acc = f" · val acc {last.val_acc:.1%}" if math.isfinite(last.val_acc) else ""
    return f"loss{acc} · {epoch_share(d.epochs)}"


FIGURE = Figure(
    name="loss",
    needs=Needs(steps="all", epochs=True),
    what="steps in the chosen range",
    has_data=has_data,
    skipped=skipped,
    plotext=draw_plotext,
    mpl=draw_mpl,
    rows=rows,
    panel_title=panel_title,
    empty_panel="loss appears with the first step",
)
