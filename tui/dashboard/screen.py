"""The dashboard screen shared by ``run``, ``watch`` and ``replay``.

Records land in ``Buffers`` as they arrive; a timer (``REDRAW_HZ``) redraws only the panels whose
data changed, inside one ``batch_update``, so a fast run cannot flood a slow SSH link. The layout
follows the terminal: below 80x24 a "terminal too small" note; at 80x24 the slices beside barriers
and one more panel (Tab brings the focused panel into that slot); from 110x34 every panel at once.
Subclasses (``tui.screens``) add the keys of their mode and say where records come from.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import Screen
from textual.widgets import Footer, Static

from sgdwalk.records import PAUSED_EVENT, RESUMED_EVENT, EventLogged, Record
from sgdwalk.tui.dashboard.buffers import Buffers, RunFacts
from sgdwalk.tui.dashboard.dialogs import HelpScreen
from sgdwalk.tui.dashboard.grid import PANELS, ChartGrid
from sgdwalk.tui.dashboard.status import join, run_fields
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


class DashboardScreen(Screen[None]):
    DEFAULT_CSS = """
    DashboardScreen #too-small { display: none; width: 100%; height: 100%;
        content-align: center middle; text-style: bold; }
    DashboardScreen.-tiny #too-small { display: block; }
    DashboardScreen.-tiny #main, DashboardScreen.-tiny Footer { display: none; }
    DashboardScreen.-wide EventLog { height: 7; }
    """
    BINDINGS = [
        Binding("question_mark", "help", "help"),
        Binding("q", "quit_dashboard", "quit"),
        Binding("plus,equals_sign", "window(1)", "wider", key_display="+"),
        Binding("minus", "window(-1)", "narrower", key_display="-"),
        Binding("tab", "panel(1)", "panel", priority=True),
        Binding("shift+tab", "panel(-1)", "prev panel", show=False, priority=True),
        Binding("z", "zoom", "zoom", show=False),
    ]
    KEYS_HELP: list[tuple[str, str]] = [
        ("?", "this help"),
        ("q", "quit (asks what happens to a live run)"),
        ("+ / -", "widen / narrow the slice window"),
        ("tab / shift+tab", "move focus between panels (compact: shows it)"),
        ("z", "zoom the focused panel / back"),
    ]
    TITLE = "sgdwalk"

    def __init__(self, facts: RunFacts) -> None:
        super().__init__()
        self.buffers = Buffers(facts=facts)
        self.window_index = WINDOWS.index(20)
        self.repaints = Repaints(set(PANELS) | {"status", "events"})
        self.note = ""  # a transient message for the status line (errors, hints)
        self.held_at: int | None = None  # the step after which the trainer said it holds (paused)
        self.skipped: dict[str, int] = {}  # non-finite values each panel leaves out
        self.drawing_errors: dict[str, str] = {}  # drawing failures already logged

    # ------------------------------------------------------------ layout

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

    # ------------------------------------------------------------ data flow

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

    def add_records(self, records: list[Record]) -> None:
        had = self.buffers.curve_panels()
        for rec in records:
            self.buffers.add(rec)
            if isinstance(rec, EventLogged) and rec.kind in (PAUSED_EVENT, RESUMED_EVENT):
                self.held_at = rec.step if rec.kind == PAUSED_EVENT else None
                self.buffers.dirty.add("status")
        if self.buffers.curve_panels() != had:
            self.apply_layout()

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
        quiet = not self.training()
        fields = [
            self.state_text(),
            *self.notes(),
            *run_fields(self.buffers, self.size.width, quiet),
        ]
        return join([f for f in fields if f], self.size.width)

    def training(self) -> bool:
        """Whether steps are being taken now (else the status line shows no rate or ETA)."""
        return self.held_at is None

    def notes(self) -> list[str]:
        """A transient note, and how many non-finite values the panels leave out."""
        skipped = sum(self.skipped.values())
        return [self.note, f"{skipped} NaN/inf not drawn" if skipped else ""]

    def state_text(self) -> str:
        return ""

    def set_note(self, text: str) -> None:
        self.note = text
        self.redraw({"status"})

    def log_event(self, line: str) -> None:
        self.buffers.events.append(line)
        self.redraw({"events"})

    # ------------------------------------------------------------ keys

    def action_help(self) -> None:
        self.app.push_screen(HelpScreen(self.KEYS_HELP, self.TITLE))

    def action_window(self, delta: int) -> None:
        self.window_index = max(0, min(len(WINDOWS) - 1, self.window_index + delta))
        self.redraw({"slices"})

    def action_panel(self, delta: int) -> None:
        self.query_one(ChartGrid).move_focus(delta)
        self.redraw(set())  # a panel brought into view draws now

    def action_zoom(self) -> None:
        if self.maximized is not None:
            self.minimize()
        elif isinstance(self.focused, FigureChart):
            self.maximize(self.focused, container=False)

    def action_quit_dashboard(self) -> None:
        self.app.exit()
