"""``sgdwalk run`` in the dashboard's own process: the engine trains in a worker thread here.

Its records come from ``RunSource``'s queue; p and s reach the trainer through the same controls a
signalled headless trainer obeys, and quitting stops the run (it lives in this process).
"""

from __future__ import annotations

from textual.binding import Binding

from sgdwalk.records import FAILED
from sgdwalk.tui.dashboard.buffers import facts_of
from sgdwalk.tui.dashboard.dialogs import QuitScreen
from sgdwalk.tui.dashboard.screen import DashboardScreen
from sgdwalk.tui.dashboard.sources import RunSource
from sgdwalk.tui.dashboard.status import STATE_MARKS
from sgdwalk.tui.text import plain


class RunScreen(DashboardScreen):
    """``sgdwalk run``: the engine trains in this process, in a worker thread."""

    BINDINGS = [
        Binding("p", "pause", "pause/resume"),
        Binding("s", "stop", "stop run"),
    ]
    KEYS_HELP = [
        ("p", "pause / resume training"),
        ("s", "stop the run cleanly (saved as interrupted)"),
        *DashboardScreen.KEYS_HELP,
    ]
    TITLE = "sgdwalk run"

    def __init__(self, source: RunSource) -> None:
        super().__init__(facts_of(source.name, source.info, source.run.cfg.as_dict()))
        self.source = source
        self.outcome = ""  # the worker's end: a status, or "failed: message"

    def feed(self) -> None:
        self.add_records(self.source.drain())

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """p and s only while the run trains (the footer shows just the keys that work)."""
        if action in ("pause", "stop"):
            return not (self.source.done.is_set() or self.source.stop_event.is_set())
        return True

    def training(self) -> bool:
        src = self.source
        return self.held_at is None and not (
            self.outcome or src.done.is_set() or src.stop_event.is_set()
        )

    def state_text(self) -> str:
        if self.outcome:
            return f"{STATE_MARKS.get(self.outcome.split(':')[0], '■')} {self.outcome}"
        if self.source.stop_event.is_set():
            return "■ stopping"
        if self.held_at is not None:  # the trainer said it holds
            return f"⏸ paused after step {self.held_at}" if self.source.paused else "▶ resuming"
        return "⏸ pausing" if self.source.paused else "▶ running"

    def action_pause(self) -> None:
        if self.source.done.is_set():
            return
        if self.source.paused:
            self.source.resume()
        else:
            self.source.pause()
        self.redraw({"status"})

    def action_stop(self) -> None:
        if not self.source.done.is_set():
            self.source.stop()
            self.refresh_bindings()
            self.redraw({"status"})

    def action_quit_dashboard(self) -> None:
        if self.source.done.is_set():
            self.app.exit()
            return
        text = ("This run trains inside the dashboard, so quitting stops it (saved as "
                "interrupted, everything committed). Start it with `sgdwalk run --detach` "
                "to leave a run going after you quit.")  # fmt: skip
        self.app.push_screen(QuitScreen(text, can_leave=False), self._quit_chosen)

    def _quit_chosen(self, choice: str | None) -> None:
        if choice == "stop":
            self.app.exit_when_done = True  # type: ignore[attr-defined]
            self.source.stop()
            self.redraw({"status"})

    def worker_ended(self, status: str, error: BaseException | None) -> None:
        """The engine worker finished (``status``) or raised (``error``)."""
        self.tick()
        if error is not None:
            self.outcome = f"{FAILED}: {type(error).__name__}: {error}"
            where = self.source.writer.directory / "error.txt"
            self.log_event(f"✖ engine failed: {type(error).__name__}: {error} (traceback: {where})")
            self.app.notify(plain(f"training failed: {error}"), severity="error", timeout=10)
        else:
            self.outcome = status
        self.refresh_bindings()
        self.redraw({"status"})
