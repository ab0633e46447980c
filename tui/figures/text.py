"""Figures as terminal text: plotext into a string, and that string as svg or html.

plotext keeps module-level state between figures, so every build starts from a clear figure and
clears it again afterwards. A txt file gets no escape codes; svg and html are coloured documents.
"""

from __future__ import annotations

import io
import re

from sgdwalk.tui.figures.base import Figure, FigureData, Options, draw_plotext

_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def strip_ansi(text: str) -> str:
    return _ANSI.sub("", text)


def build_text(
    figure: Figure, data: list[FigureData], opts: Options, height: int, colored: bool
) -> str:
    """``figure`` drawn by the plotext module at ``opts.width`` x ``height`` characters."""
    import plotext

    plotext.clear_figure()
    try:
        plotext.limitsize(False, False)  # else plotext clips to the terminal (80x24 without one)
        plotext.plotsize(opts.width, height)
        plotext.theme("pro" if colored else "clear")
        draw_plotext(figure, plotext, data, opts)
        text = plotext.build()
    finally:
        plotext.clear_figure()
    return text if colored else strip_ansi(text)


def rich_document(ansi: str, fmt: str, title: str, width: int) -> str:
    """A coloured terminal figure as a standalone svg or html document."""
    from rich.console import Console
    from rich.text import Text

    console = Console(record=True, width=width, file=io.StringIO(), force_terminal=True,
                      color_system="truecolor")  # fmt: skip
    console.print(Text.from_ansi(ansi), no_wrap=True, crop=False)
    if fmt == "svg":
        return console.export_svg(title=title)
    return console.export_html(inline_styles=True)
