"""The grid of chart panels, and how it follows the terminal.

At 80x24 (compact) the slices stand beside barriers and one more panel; the others (every other
figure of the table: loss, cosine, alignment) take turns in that slot, and moving focus to one
brings it in. From 110x34 (wide) every panel shows at once. Alignment appears once there is
curvature to draw.
"""

from __future__ import annotations

from textual.app import ComposeResult
from textual.containers import Container

from sgdwalk.tui.dashboard.widgets import FigureChart
from sgdwalk.tui.figures import FIGURES

FIXED = ("slices", "barriers")  # always shown
SWAP = tuple(name for name, f in FIGURES.items() if f.panel and name not in FIXED)  # one slot
# when compact; figures that are not panels (sharpness) are exported only
PANELS = (*FIXED, *SWAP)


class ChartGrid(Container):
    """The chart panels, laid out for the terminal size; focus moves between them."""

    DEFAULT_CSS = """
    ChartGrid { layout: grid; grid-size: 2 2; grid-columns: 3fr 2fr; height: 1fr; }
    ChartGrid #slices { row-span: 2; }
    ChartGrid.-wide { grid-size: 3 2; grid-columns: 1fr 1fr 1fr; grid-rows: 3fr 2fr; }
    ChartGrid.-wide #slices { row-span: 1; column-span: 2; }
    """

    def __init__(self, **kw: object) -> None:
        super().__init__(**kw)  # type: ignore[arg-type]
        self.swap = "loss"  # the panel in the compact layout's third slot
        self.wide = False
        self.with_alignment = False

    def compose(self) -> ComposeResult:
        for name in PANELS:
            yield FigureChart(FIGURES[name])

    def chart(self, name: str) -> FigureChart:
        return self.query_one(f"#{name}", FigureChart)

    def show_panels(self, wide: bool, with_alignment: bool) -> None:
        """Show the panels the layout has room for."""
        self.wide, self.with_alignment = wide, with_alignment
        self.set_class(wide, "-wide")
        for name in SWAP:
            shown = name == self.swap or wide
            self.chart(name).display = shown and (name != "alignment" or with_alignment)
        self.chart("loss").styles.column_span = 2 if wide and not with_alignment else 1

    def panels(self) -> list[str]:
        """The panels focus can move to."""
        return [n for n in PANELS if n != "alignment" or self.with_alignment]

    def move_focus(self, delta: int) -> None:
        """Focus the next (``delta`` 1) or previous panel; compact: bring it into its slot."""
        names = self.panels()
        focused = self.screen.focused
        current = (focused.id if isinstance(focused, FigureChart) and focused.id in names
                   else names[0])  # fmt: skip
        target = names[(names.index(current) + delta) % len(names)]
        if target in SWAP and not self.wide:
            self.swap = target
            self.show_panels(self.wide, self.with_alignment)
        self.chart(target).focus()
