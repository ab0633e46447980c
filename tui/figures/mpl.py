"""Publication figures (png, pdf) with matplotlib, the optional ``plots`` extra.

Why this shape: matplotlib is heavy and optional, so it is imported here only, and only when a png
or pdf is asked for. Figures are built on ``matplotlib.figure.Figure`` directly, never through
pyplot, so no GUI backend is ever chosen: export works over SSH, in cron and in CI with no display.
Each figure's own module draws on the axes (``Figure.mpl``) from the same series as the terminal
figures; ``build_figure`` returns the Figure so tests can count its series before it is saved.
"""

from __future__ import annotations

import io
from typing import Any

from sgdwalk.errors import UsageError
from sgdwalk.tui.figures.base import Figure, FigureData, Options

INSTALL = "pip install 'sgdwalk[plots]'"
FIGSIZE = (7.0, 3.6)


def require_matplotlib() -> None:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise UsageError(f"png and pdf need matplotlib; install it with: {INSTALL}") from None


def build_figure(figure: Figure, data: list[FigureData], opts: Options | None = None) -> Any:
    """A matplotlib Figure (not attached to pyplot) with one axes drawing ``figure``."""
    from matplotlib.figure import Figure as MplFigure

    fig = MplFigure(figsize=FIGSIZE, layout="constrained")
    ax = fig.add_subplot()
    shown = [d for d in data if figure.has_data(d)]
    if shown:
        figure.mpl(ax, shown, opts or Options())
    skipped = sum(figure.skipped(d) for d in shown)
    if skipped:  # a diverged run: say what is missing rather than draw a misleading picture
        ax.text(0.99, 0.01, f"{skipped} NaN/inf values not drawn", transform=ax.transAxes,
                ha="right", va="bottom", fontsize=7, color="0.35")  # fmt: skip
    if ax.get_legend() is None and ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8, frameon=False)
    ax.spines[["top"]].set_visible(False)
    return fig


def render_mpl(figure: Figure, fmt: str, data: list[FigureData], opts: Options) -> bytes:
    """png (200 dpi) or pdf (vector, with no creation date so identical runs give identical files)."""
    fig = build_figure(figure, data, opts)
    buf = io.BytesIO()
    meta = {"CreationDate": None} if fmt == "pdf" else {"Software": "sgdwalk"}
    fig.savefig(buf, format=fmt, dpi=200, metadata=meta)
    return buf.getvalue()
