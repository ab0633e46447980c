"""The dashboard as drawn: its widgets, laid out for the terminal, repainted from the buffers.

Records land in ``Buffers`` as they arrive; a timer (``REDRAW_HZ``) redraws only the panels whose
data changed, inside one ``batch_update``, so a fast run cannot flood a slow SSH link. The layout
follows the terminal: below 80x24 a "terminal too small" note; at 80x24 the slices beside barriers
and one more panel (Tab brings the focused panel into that slot); from 110x34 every panel at once.
This is the drawing half of every dashboard; ``screen.DashboardScreen`` adds what the three modes
share (records in, the status line's state, the keys), and each mode's screen where its records
come from.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from textual.app import ComposeResult
from textual.containers import Vertical
from textual.screen import Screen
from textual.widgets import Footer, Static

from sgdwalk.tui.dashboard.buffers import Buffers, RunFacts
from sgdwalk.tui.dashboard.grid import PANELS, ChartGrid
from sgdwalk.tui.dashboard.widgets import EventLog, FigureChart, StatusLine
from sgdwalk.tui.figures import FIGURES

REDRAW_HZ = 2.0
CHARTS_PER_TICK = 2  # charts the timer repaints at once (each a plotext build)
MIN_SIZE = (80, 24)
WIDE_SIZE = (110, 34)
WINDOWS = (5, 10, 20, 40, 80, 160, 200)


class Repaints:
    """What the screen still has to repaint, and in which order.

    Each chart repaint is a plotext build of tens of milliseconds, and a key press waits for the
    frame in progress; so the timer repaints the slices first, then the charts that have waited
    longest, and leaves the others pending for the next tick. The status line and the event log
    are cheap and always go first. A chart hidden by the layout waits until it is shown.
    """

    def __init__(self, pending: set[str]) -> None:
        self.pending = pending
        self.drawn_at: dict[str, float] = {}  # when each chart was last repainted

    def add(self, names: set[str]) -> None:
        self.pending |= names

    def due(self, charts: int | None, shown: Callable[[str], bool]) -> list[str]:
        """The names to draw now (taken off the list): every cheap one, ``charts`` charts."""
        out = []
        for name in sorted(self.pending, key=self._urgency):
            if name in PANELS:
                if not shown(name) or (charts is not None and charts <= 0):
                    continue
                charts = None if charts is None else charts - 1
                self.drawn_at[name] = time.monotonic()
            out.append(name)
        self.pending -= set(out)
        return out

    def _urgency(self, name: str) -> tuple[int, float]:
        if name not in PANELS:
            return (0, 0.0)
        return (1 if name == "slices" else 2, self.drawn_at.get(name, 0.0))


class DashboardView(Screen[None]):
    """The widgets, the layout and the repaint timer; subclasses say what the status line shows
    (``status_text``) and where records come from (``feed``)."""

    DEFAULT_CSS = """
    DashboardView #too-small { display: none; width: 100%; height: 100%;
        content-align: center middle; text-style: bold; }
    DashboardView.-tiny #too-small { display: block; }
    DashboardView.-tiny #main, DashboardView.-tiny Footer { display: none; }
    DashboardView.-wide EventLog { height: 7; }
    """

    def __init__(self, facts: RunFacts) -> None:
        super().__init__()
        self.buffers = Buffers(facts=facts)
        self.window_index = WINDOWS.index(20)  # the slice window (``+`` and ``-`` change it)
        self.repaints = Repaints(set(PANELS) | {"status", "events"})
        self.skipped: dict[str, int] = {}  # non-finite values each panel leaves out
        self.drawing_errors: dict[str, str] = {}  # drawing failures already logged

    def compose(self) -> ComposeResult:
        yield Static(id="too-small")
        with Vertical(id="main"):
            yield StatusLine(id="status")
            yield ChartGrid(id="charts")
            yield EventLog(id="events")
        yield Footer()

    def on_mount(self) -> None:
        self.chart("slices").focus()
        self.set_interval(1 / REDRAW_HZ, self.tick, name="redraw")
        self.apply_layout()

    def on_resize(self) -> None:
        self.apply_layout()

    @property
    def wide(self) -> bool:
        return self.size.width >= WIDE_SIZE[0] and self.size.height >= WIDE_SIZE[1]

    def apply_layout(self) -> None:
        w, h = self.size
        tiny = w < MIN_SIZE[0] or h < MIN_SIZE[1]
        self.set_class(tiny, "-tiny")
        self.set_class(self.wide, "-wide")
        self.query_one("#too-small", Static).update(
            f"terminal too small: {w}x{h}\nsgdwalk needs at least {MIN_SIZE[0]}x{MIN_SIZE[1]}"
        )
        self.query_one(ChartGrid).show_panels(self.wide, self.buffers.curve_panels())
        self.redraw(set())

    def chart(self, name: str) -> FigureChart:
        return self.query_one(ChartGrid).chart(name)

    @property
    def closing(self) -> bool:
        """The app is closing and the widgets are gone (a worker can end after a quit)."""
        return not self.query(ChartGrid)

    def tick(self) -> None:
        """Timer: take new records, then redraw what changed, a few charts at a time."""
        if self.closing:
            return
        self.feed()
        self.redraw(self.buffers.take_dirty(), charts=CHARTS_PER_TICK)
        for name in PANELS:
            error = self.chart(name).error
            if error and self.drawing_errors.get(name) != error:
                self.drawing_errors[name] = error
                self.log_event(f"✖ could not draw {name}: {error}")

    def feed(self) -> None:
        """Subclasses move records into ``self.buffers``."""

    def redraw(self, dirty: set[str], charts: int | None = None) -> None:
        """Draw what is pending; with ``charts``, at most that many charts now (``Repaints``)."""
        self.repaints.add(dirty)
        if self.has_class("-tiny"):
            return
        with self.app.batch_update():
            for name in self.repaints.due(charts, self._shown):
                self.draw(name)

    def _shown(self, name: str) -> bool:
        return name not in PANELS or bool(self.chart(name).display)

    def draw(self, name: str) -> None:
        b = self.buffers
        if name in FIGURES:
            figure = FIGURES[name]
            window = WINDOWS[self.window_index]
            data = b.figure_data(figure, window)
            self.chart(name).show(data, figure.panel_title(data, b.live(window)))
            self.skipped[name] = figure.skipped(data)
        elif name == "events":
            self.query_one(EventLog).show(list(b.events))
        elif name == "status":
            self.query_one(StatusLine).update_text(self.status_text())

    def status_text(self) -> str:
        """The status line (each mode says what it holds)."""
        return ""

    def log_event(self, line: str) -> None:
        self.buffers.events.append(line)
        self.redraw({"events"})
