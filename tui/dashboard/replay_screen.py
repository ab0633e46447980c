"""``sgdwalk replay``: the dashboard over a saved session, with a cursor to play, pause and seek.

Its records come from ``ReplaySource``: a seek's ``History`` replaces what the buffers hold, a
played frame's records are added to them like a run's. Two timers play: one paced at
``REPLAY_FPS`` for the recorded speeds, one at ``MAX_FPS`` (paused unless needed) for max speed,
which draws every step. A seek repaints the slices and the status line at once and lets the other
panels repaint on the next timer tick, so holding → moves the cursor fast.
"""

from __future__ import annotations

import time

from textual.binding import Binding

from sgdwalk.errors import SessionError
from sgdwalk.tui.dashboard.buffers import facts_of
from sgdwalk.tui.dashboard.dialogs import SeekScreen
from sgdwalk.tui.dashboard.grid import PANELS
from sgdwalk.tui.dashboard.replay import MAX_SPEED, ReplaySource, epoch_jump, parse_target
from sgdwalk.tui.dashboard.screen import DashboardScreen
from sgdwalk.tui.dashboard.status import replay_fields
from sgdwalk.tui.dashboard.widgets import FigureChart

REPLAY_FPS = 10.0
MAX_FPS = 50.0


class ReplayScreen(DashboardScreen):
    """``sgdwalk replay``: a cursor over a saved session."""

    BINDINGS = [
        Binding("space", "play", "play/pause"),
        Binding("right,l", "step(1)", "step", key_display="→"),
        Binding("left,h", "step(-1)", "back", show=False),
        Binding("right_square_bracket", "epoch(1)", "epoch", key_display="]"),
        Binding("left_square_bracket", "epoch(-1)", "prev epoch", show=False),
        Binding("greater_than_sign,full_stop", "speed(1)", "faster", key_display=">"),
        Binding("less_than_sign,comma", "speed(-1)", "slower", show=False),
        Binding("colon", "seek", "go to", key_display=":"),
        Binding("home", "goto('start')", "start", show=False),
        Binding("end", "goto('end')", "end", show=False),
    ]
    KEYS_HELP = [
        ("space", "play / pause"),
        ("→ / ←  (l / h)", "one step forward / back"),
        ("] / [", "next / previous epoch"),
        ("> / <  (. / ,)", "faster / slower: 1x (as recorded) .. 1024x, then max"),
        (":", "go to a step (1234), an epoch (e3) or jump (+100 / -100)"),
        ("home / end", "first / last step"),
        *DashboardScreen.KEYS_HELP,
    ]
    TITLE = "sgdwalk replay"

    def __init__(self, source: ReplaySource) -> None:
        facts = facts_of(source.name, source.info, source.session.config)
        facts.total_steps = source.bounds.last
        super().__init__(facts)
        self.source = source
        self._last_frame = time.monotonic()
        self._deferred: list[FigureChart] = []  # panels a seek left to repaint on the next tick

    def on_mount(self) -> None:
        """The replay's timers and first position. Textual runs ``DashboardView.on_mount`` (the
        redraw timer, the layout) after this: it calls each class's handler itself."""
        self.set_interval(1 / REPLAY_FPS, self.play_frame, name="replay")
        self._fast = self.set_interval(1 / MAX_FPS, self.play_frame, name="replay-max", pause=True)
        self.seek(self.source.bounds.first)
        if self.source.message:
            self.log_event(f"· session {self.source.status}: {self.source.message}")

    # ------------------------------------------------------------ records

    def play_frame(self) -> None:
        now = time.monotonic()
        dt, self._last_frame = now - self._last_frame, now
        try:
            records = self.source.frame(dt)
        except SessionError as e:
            self.damaged(e)
            return
        if records:
            self.add_records(records)
            self.redraw(self.buffers.take_dirty() | {"status"})
        elif not self.source.playing:
            self._fast.pause()

    def seek(self, step: int) -> None:
        """Jump: the slices and the status line repaint at once; the context panels take their
        data now and repaint on the next timer tick, so a seek shows the new step fast."""
        had_curvature = bool(self.buffers.curvature)
        try:
            history = self.source.seek(step)
        except SessionError as e:
            self.damaged(e)
            return
        self.buffers.load(history)
        if bool(self.buffers.curvature) != had_curvature:
            self.apply_layout()  # a layout pass repaints every panel: only when it changes
        context = [self.chart(name) for name in PANELS if name != "slices"]
        for chart in context:
            chart.defer()
        self.redraw(self.buffers.take_dirty() | {"status", "events"})
        self._deferred = context

    def damaged(self, e: SessionError) -> None:
        """A damaged row met while reading: say so, stop playing, keep what is shown."""
        self.source.playing = False
        self._sync_timers()
        self.set_note("damaged rows here: see the events")
        self.log_event(f"✖ {e}")

    def tick(self) -> None:
        for chart in self._deferred:
            chart.resume()
        self._deferred = []
        super().tick()

    # ------------------------------------------------------------ status line

    def state_text(self) -> str:
        mark = "▶" if self.source.playing else "⏸"
        return f"{mark} {self.source.speed_label()}"

    def fields(self) -> list[str]:
        s = self.source
        return replay_fields(self.buffers, s.cursor, s.bounds.last, s.epoch, s.status)

    # ------------------------------------------------------------ keys

    def action_play(self) -> None:
        self.source.toggle()
        self._last_frame = time.monotonic()
        self._sync_timers()
        self.redraw({"status"})

    def _sync_timers(self) -> None:
        if self.source.playing and self.source.speed == MAX_SPEED:
            self._fast.resume()
        else:
            self._fast.pause()

    def action_step(self, delta: int) -> None:
        self.source.playing = False
        self._sync_timers()
        self.seek(self.source.cursor + delta)

    def action_epoch(self, delta: int) -> None:
        self.seek(epoch_jump(self.source, delta))

    def action_speed(self, delta: int) -> None:
        (self.source.faster if delta > 0 else self.source.slower)()
        self._sync_timers()
        self.redraw({"status"})

    def action_goto(self, where: str) -> None:
        self.seek(self.source.bounds.first if where == "start" else self.source.bounds.last)

    def action_seek(self) -> None:
        self.app.push_screen(SeekScreen(), self._seek_to)

    def _seek_to(self, text: str | None) -> None:
        if not text:
            return
        try:
            step = parse_target(text, self.source)
        except ValueError as e:
            self.set_note(str(e))
            return
        self.note = ""
        self.seek(step)
