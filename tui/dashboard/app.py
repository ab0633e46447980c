"""The Textual app: routes a source of records to its dashboard screen, and nothing more.

``make_app`` is the one factory the CLI and the tests share (a source of records in: a run trained
here, a session watched, or a session replayed; an app out, showing that mode's screen). The
engine worker's end, good or bad, reaches one handler (``on_engine_state``) that hands it to the
screen, which shows it in the status line and the event log; ``drive()`` has already marked the
session failed and written error.txt.
"""

from __future__ import annotations

import asyncio
import signal
from typing import Any

from textual import on
from textual.app import App
from textual.binding import Binding
from textual.worker import Worker, WorkerState

from sgdwalk.tui.dashboard.dialogs import QuitScreen
from sgdwalk.tui.dashboard.replay import ReplaySource
from sgdwalk.tui.dashboard.replay_screen import ReplayScreen
from sgdwalk.tui.dashboard.run_screen import RunScreen
from sgdwalk.tui.dashboard.sources import RunSource, WatchSource
from sgdwalk.tui.dashboard.watch_screen import WatchScreen

ENGINE_WORKER = "engine"


class SgdwalkApp(App[None]):
    TITLE = "sgdwalk"
    ENABLE_COMMAND_PALETTE = False
    # Ctrl+C and Ctrl+Q mean what q means: the quit question (stop the run, or leave it running)
    BINDINGS = [
        Binding("ctrl+q", "ask_quit", "quit", show=False, priority=True),
        Binding("ctrl+c", "ask_quit", "quit", show=False, priority=True),
    ]

    def __init__(self, source: RunSource | WatchSource | ReplaySource) -> None:
        super().__init__()
        self.source = source
        self.dashboard = _screen_for(source)
        self.exit_when_done = False
        self.engine_error: BaseException | None = None

    def get_default_screen(self) -> RunScreen | WatchScreen | ReplayScreen:
        return self.dashboard

    def on_mount(self) -> None:
        if isinstance(self.source, RunSource | WatchSource):
            self.run_worker(self.source.work, name=ENGINE_WORKER, thread=True,
                            exit_on_error=False)  # fmt: skip
            self._catch_hangup()

    def _catch_hangup(self) -> None:
        """SSH drop (SIGHUP) or SIGTERM: a run trained here stops cleanly; the app exits."""
        loop = asyncio.get_running_loop()
        for sig in (getattr(signal, "SIGHUP", None), signal.SIGTERM):
            if sig is not None:
                try:
                    loop.add_signal_handler(sig, self._hung_up)
                except (NotImplementedError, RuntimeError, ValueError):
                    continue  # not the main thread (tests) or no signals on this platform

    def action_ask_quit(self) -> None:
        """Ctrl+C / Ctrl+Q: the quit question, from any page (the help closes first)."""
        if isinstance(self.screen, QuitScreen):
            return  # already asking
        while self.screen is not self.dashboard and len(self.screen_stack) > 1:
            self.pop_screen()
        self.dashboard.action_quit_dashboard()

    def _hung_up(self) -> None:
        self.source.stop()  # type: ignore[union-attr]
        self.exit()

    @on(Worker.StateChanged)
    def on_engine_state(self, event: Worker.StateChanged) -> None:
        worker = event.worker
        if worker.name != ENGINE_WORKER:
            return
        if event.state not in (WorkerState.ERROR, WorkerState.SUCCESS):
            return
        if event.state == WorkerState.ERROR:
            self.engine_error = worker.error
        if not self.dashboard.closing:
            self.dashboard.worker_ended(worker.result if worker.error is None else "",
                                        worker.error)  # fmt: skip
        if self.exit_when_done:
            self.exit()


def _screen_for(source: Any) -> RunScreen | WatchScreen | ReplayScreen:
    if isinstance(source, RunSource):
        return RunScreen(source)
    if isinstance(source, WatchSource):
        return WatchScreen(source)
    if isinstance(source, ReplaySource):
        return ReplayScreen(source)
    raise TypeError(f"no dashboard for {type(source).__name__}")


def make_app(source: RunSource | WatchSource | ReplaySource) -> SgdwalkApp:
    """The dashboard for a run trained here, a session followed live, or a replay."""
    return SgdwalkApp(source)
