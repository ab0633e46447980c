"""``sgdwalk watch``: the dashboard over a session another process writes, live or finished.

Its records come from ``WatchSource``'s follower. The writer is another process, so what this
screen knows of it comes from the session file: whether it is alive (its heartbeat), the long
computation it is in (the heartbeat's phase), and whether it holds (its ``paused`` event). p and s
signal it only when it runs on this machine; quitting leaves it running unless this dashboard
started it for ``sgdwalk run`` or ``sgdwalk exec`` without ``--detach``.
"""

from __future__ import annotations

import math
import time

from textual.binding import Binding

from sgdwalk.errors import SessionError
from sgdwalk.records import RESUMED_EVENT, RUNNING, EventLogged
from sgdwalk.tui.commands.children import stop_grace
from sgdwalk.tui.dashboard.buffers import facts_of
from sgdwalk.tui.dashboard.dialogs import QuitScreen
from sgdwalk.tui.dashboard.screen import DashboardScreen
from sgdwalk.tui.dashboard.sources import WatchSource
from sgdwalk.tui.dashboard.status import STATE_MARKS
from sgdwalk.tui.text import plain

SILENT_AFTER = 3.0  # seconds without a heartbeat before the status line says so


def phase_text(phase: dict | None) -> str:
    """ "curvature 12/63 · 41 s" from a heartbeat's phase record ("" when there is none)."""
    if not phase:
        return ""
    done, total, since = phase.get("done"), phase.get("total"), phase.get("since")
    text = plain(phase.get("phase", ""))
    if isinstance(done, int) and isinstance(total, int):
        text += f" {done}/{total}"
    if isinstance(since, int | float) and math.isfinite(since):
        text += f" · {max(0.0, time.time() - since):.0f} s"
    return text


class WatchScreen(DashboardScreen):
    """``sgdwalk watch``: follows a session that another process writes."""

    BINDINGS = [Binding("p", "pause", "pause/resume"), Binding("s", "stop", "stop run")]
    KEYS_HELP = [
        ("p", "pause / resume training (a trainer on this machine)"),
        ("s", "stop the trainer cleanly (a trainer on this machine)"),
        *DashboardScreen.KEYS_HELP,
    ]
    TITLE = "sgdwalk watch"

    def __init__(self, source: WatchSource) -> None:
        super().__init__(facts_of(source.name, source.info, source.session.config))
        self.source = source
        self._checked = 0.0  # when the writer's liveness was last read (once a second)
        self._liveness = ""  # what the status line says of the writer
        self._resuming = False  # resume asked, the trainer's ``resumed`` event not seen yet
        self._keys_shown = True  # whether the footer shows p and s

    def feed(self) -> None:
        records = self.source.drain()
        if any(isinstance(r, EventLogged) and r.kind == RESUMED_EVENT for r in records):
            self._resuming = False
        self.add_records(records)
        now = time.monotonic()
        if now - self._checked >= 1.0:
            self._checked = now
            self._liveness = self._check_writer()
            self.buffers.phase = phase_text(self.source.phase) if self.source.writer_alive else ""
            self.buffers.dirty.add("status")
            if self.source.can_pause != self._keys_shown:
                self._keys_shown = self.source.can_pause
                self.refresh_bindings()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """p and s only for a live writer on this machine (the footer shows the keys that work)."""
        if action in ("pause", "stop"):
            return self.source.can_pause
        return True

    def _check_writer(self) -> str:
        try:
            return self._liveness_of(self.source)
        except SessionError as e:
            return f"✖ {e}"

    def _liveness_of(self, src: WatchSource) -> str:
        status = src.status
        if status != RUNNING:
            mark = STATE_MARKS.get(status, "■")
            dead = src.stored_status == RUNNING  # the writer never recorded an ending
            return f"{mark} {status}" + (" (writer stopped: no heartbeat)" if dead else "")
        age = src.heartbeat_age
        return f"● live, writer silent {age:.0f}s" if age > SILENT_AFTER else "● live"

    def training(self) -> bool:
        return self.held_at is None and self.source.writer_alive

    def state_text(self) -> str:
        """Paused only once the trainer says it holds (its ``paused`` event), not when asked."""
        if self.source.writer_alive:
            if self.held_at is not None:
                return "▶ resuming" if self._resuming else f"⏸ paused after step {self.held_at}"
            if self.source.paused:
                return "⏸ pausing"
        return self._liveness or "● following"

    def action_pause(self) -> None:
        src = self.source
        if not src.can_pause:
            self.set_note("cannot pause it from here: its trainer is not running on this machine")
            return
        held = src.paused or self.held_at is not None
        if src.resume() if held else src.pause():
            self._resuming = held
            self.buffers.dirty.add("status")
        else:
            self.set_note("the run is not running")

    def action_stop(self) -> None:
        if self.source.stop_writer():
            self.set_note("asked the run to stop")
        else:
            self.set_note("cannot stop it from here: its trainer is not running on this machine")

    def action_quit_dashboard(self) -> None:
        if not self.source.writer_alive:
            self.app.exit()
            return
        if self.source.owned:
            self.app.push_screen(QuitScreen(self._owned_text(), can_leave=False), self._chosen)
            return
        text = (f"The run goes on in its own process; `sgdwalk watch {self.source.name}` "
                "reattaches later.")  # fmt: skip
        self.app.push_screen(
            QuitScreen(text, can_leave=True, can_stop=self.source.pid is not None), self._chosen
        )

    def _owned_text(self) -> str:
        """What quitting means for a run this dashboard started: ``exec``'s script (a Walker's
        session) or ``run``'s trainer."""
        script = self.source.session.config.get("source") == "walker"
        what, how = ("script", "exec --detach -- ...") if script else ("run", "run --detach")
        return (f"Quitting stops this {what} (saved as interrupted, everything committed; one "
                f"that will not stop is killed after {stop_grace():.0f} s). Start it with "
                f"`sgdwalk {how}` to leave it going after you quit.")  # fmt: skip

    def _chosen(self, choice: str | None) -> None:
        if choice == "stop":
            self.source.stop_writer()
        if choice in ("stop", "leave"):
            self.source.stop()
            self.app.exit()

    def worker_ended(self, status: object, error: BaseException | None) -> None:
        self.tick()
        if error is not None:
            self.log_event(f"✖ reading the session failed: {type(error).__name__}: {error}")
        self._liveness = self._check_writer()
        self.redraw({"status"})
