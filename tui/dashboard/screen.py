"""The dashboard screen shared by ``run``, ``watch`` and ``replay``: what every mode does alike.

Drawing is ``view.DashboardView``'s (widgets, layout, the repaint timer); this adds records in
(``add_records``, and the trainer's ``paused``/``resumed`` events), the status line's state and
notes, and the keys of every mode. Each mode's screen (``run_screen``, ``watch_screen``,
``replay_screen``) adds its own keys and state and says where its records come from.
"""

from __future__ import annotations

from textual.binding import Binding

from sgdwalk.records import PAUSED_EVENT, RESUMED_EVENT, EventLogged, Record
from sgdwalk.tui.dashboard.buffers import RunFacts
from sgdwalk.tui.dashboard.dialogs import HelpScreen
from sgdwalk.tui.dashboard.grid import ChartGrid
from sgdwalk.tui.dashboard.status import join, run_fields
from sgdwalk.tui.dashboard.view import WINDOWS, DashboardView
from sgdwalk.tui.dashboard.widgets import FigureChart


class DashboardScreen(DashboardView):
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
        super().__init__(facts)
        self.note = ""  # a transient message for the status line (errors, hints)
        self.held_at: int | None = None  # the step after which the trainer said it holds (paused)

    # ------------------------------------------------------------ records

    def add_records(self, records: list[Record]) -> None:
        had = self.buffers.curve_panels()
        for rec in records:
            self.buffers.add(rec)
            if isinstance(rec, EventLogged) and rec.kind in (PAUSED_EVENT, RESUMED_EVENT):
                self.held_at = rec.step if rec.kind == PAUSED_EVENT else None
                self.buffers.dirty.add("status")
        if self.buffers.curve_panels() != had:
            self.apply_layout()

    def worker_ended(self, status: object, error: BaseException | None) -> None:
        """The engine worker ended with ``status`` or ``error`` (a mode with one says how)."""

    # ------------------------------------------------------------ status line

    def status_text(self) -> str:
        fields = [self.state_text(), *self.notes(), *self.fields()]
        return join([f for f in fields if f], self.size.width)

    def fields(self) -> list[str]:
        """Where the run is: step, epoch, rate and ETA (while it trains), lr, batch, device."""
        return run_fields(self.buffers, self.size.width, not self.training())

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
