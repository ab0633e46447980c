"""The grid of chart panels, and how it follows the terminal.

At 80x24 (compact) the slices stand beside barriers and one more panel; the others (every other
figure of the table: loss, cosine, alignment, sharpness, decomposition) take turns in that slot,
and moving focus to one brings it in. From 110x34 (wide) slices, barriers, loss and cosine show at
once beside one curvature slot, which alignment, sharpness and the step decomposition share the
same way. Alignment and sharpness appear once there is curvature to draw, the decomposition once
a step was decomposed (``run --decompose``).
"""

from __future__ import annotations

from collections.abc import Collection

from textual.app import ComposeResult
from textual.containers import Container

from sgdwalk.tui.dashboard.widgets import FigureChart
from sgdwalk.tui.figures import FIGURES

FIXED = ("slices", "barriers")  # always shown
SWAP = tuple(name for name in FIGURES if name not in FIXED)  # one slot when compact
CURVE = ("alignment", "sharpness", "decomposition", "layers", "density")  # one slot when wide;
# shown with data only
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
        self.curve = "alignment"  # the panel in the wide layout's curvature slot
        self.wide = False
        self.available: frozenset[str] = frozenset()  # the CURVE panels with data

    def compose(self) -> ComposeResult:
        for name in PANELS:
            yield FigureChart(FIGURES[name])

    def chart(self, name: str) -> FigureChart:
        return self.query_one(f"#{name}", FigureChart)

    def show_panels(self, wide: bool, available: Collection[str]) -> None:
        """Show the panels the layout has room for (``available``: the CURVE panels with data)."""
        self.wide, self.available = wide, frozenset(available)
        self.set_class(wide, "-wide")
        if self.curve not in self.available:
            self.curve = next((n for n in CURVE if n in self.available), self.curve)
        for name in SWAP:
            if name in CURVE and name not in self.available:
                shown = False
            elif wide:
                shown = name not in CURVE or name == self.curve
            else:
                shown = name == self.swap
            self.chart(name).display = shown
        self.chart("loss").styles.column_span = 2 if wide and not self.available else 1

    def panels(self) -> list[str]:
        """The panels focus can move to."""
        return [n for n in PANELS if n not in CURVE or n in self.available]

    def move_focus(self, delta: int) -> None:
        """Focus the next (``delta`` 1) or previous panel, bringing it into its slot."""
        names = self.panels()
        focused = self.screen.focused
        current = (focused.id if isinstance(focused, FigureChart) and focused.id in names
                   else names[0])  # fmt: skip
        target = names[(names.index(current) + delta) % len(names)]
        if target in SWAP and not self.wide:
            self.swap = target
        if target in CURVE and self.wide:
            self.curve = target
        self.show_panels(self.wide, self.available)
        self.chart(target).focus()
