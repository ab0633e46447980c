"""Run control: what stops or pauses a training run, and the status its ending gives a session.

Why one module: the built-in trainer (``sgdwalk run``, driven by ``sgdwalk.runner``), a user's
script measured by ``sgdwalk.Walker``, the session writer and the Lightning callback all turn the
same events into the same outcomes, so each rule is written once here:
- ``Controls``: a stop and a pause asked for (by a signal, or a dashboard in the same process).
- ``SignalHandlers``: SIGINT/SIGTERM/SIGHUP stop, SIGUSR1 pauses, SIGUSR2 resumes. The trainer
  polls the stop between steps and probe chunks; in a user's script (``interrupt=True``) a stop
  raises ``KeyboardInterrupt`` as Ctrl+C would, but never in the middle of the Walker's own work
  (``Controls.busy``), where it is held until that work is done.
- ``hold``: the one pause loop, which says when training really holds and when it goes on.
- ``ending``: the session status and message of an exception that ended a run (an exit with a
  code is one: 0 finished, anything else failed).
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from sgdwalk.records import (
    FAILED,
    FINISHED,
    INTERRUPTED,
    PAUSED_EVENT,
    RESUMED_EVENT,
    EventLogged,
    Record,
)

PAUSE_SIGNAL = getattr(signal, "SIGUSR1", None)  # what a dashboard sends a trainer to pause it
RESUME_SIGNAL = getattr(signal, "SIGUSR2", None)
STOP_SIGNALS = tuple(
    s for s in (signal.SIGINT, signal.SIGTERM, getattr(signal, "SIGHUP", None)) if s is not None
)
POLL = 0.05  # seconds between looks at the pause flag while training holds


class Controls:
    """A stop and a pause asked of a running trainer (thread-safe flags)."""

    def __init__(self) -> None:
        self.stop = threading.Event()
        self.paused = threading.Event()
        self.stopped_by = ""  # the signal that asked for the stop, if one did
        self.busy = False  # the Walker is inside its own work: a stop waits for its end
        self.stop_pending = False  # a stop held back by ``busy``

    def should_stop(self) -> bool:
        return self.stop.is_set()

    def pausable(self, records: Iterator[Record]) -> Iterator[Record]:
        """Pass a (lazy) trainer's records on, holding it between two records while paused."""
        started = time.monotonic()
        step = epoch = 0
        for rec in records:
            step, epoch = getattr(rec, "step", step), getattr(rec, "epoch", epoch)
            yield rec
            yield from hold(self, step, epoch, lambda: time.monotonic() - started)

    def raise_pending_stop(self) -> None:
        """After the Walker's work: the stop it held back, as Ctrl+C."""
        if self.stop_pending:
            self.stop_pending = False
            raise KeyboardInterrupt


def hold(
    controls: Controls, step: int, epoch: int, clock: Callable[[], float]
) -> Iterator[EventLogged]:
    """While a pause is asked for: a ``paused`` event naming the last step taken, the wait, then a
    ``resumed`` event (none when a stop ended the pause). Nothing when no pause is asked for."""
    if not controls.paused.is_set() or controls.stop.is_set():
        return
    yield EventLogged(step, epoch, "info", PAUSED_EVENT, f"training held after step {step}",
                      clock())  # fmt: skip
    while controls.paused.is_set() and not controls.stop.is_set() and not controls.stop_pending:
        time.sleep(POLL)
    if not (controls.stop.is_set() or controls.stop_pending):
        yield EventLogged(step, epoch, "info", RESUMED_EVENT, "training goes on", clock())


def ending(e: BaseException, stopped_by: str = "") -> tuple[str, str]:
    """The session status and message of a run ended by ``e``: Ctrl+C or a stop signal is
    ``interrupted``; an exit (``sys.exit``) is ``finished`` with code 0 or None, else ``failed``
    with the code; anything else is ``failed``, with the exception's type and text."""
    if isinstance(e, KeyboardInterrupt):
        return INTERRUPTED, f"stopped by {stopped_by}" if stopped_by else "interrupted"
    if isinstance(e, SystemExit):
        code = e.code
        if code is None or code == 0:
            return FINISHED, "the script ended"
        return FAILED, f"exit code {code}" if isinstance(code, int) else f"exit: {code}"
    return FAILED, f"{type(e).__name__}: {e}" if str(e) else type(e).__name__


class SignalHandlers:
    """The stop and pause signals routed to ``controls`` while installed.

    ``interrupt``: a stop raises ``KeyboardInterrupt`` (a user's script) instead of only setting
    the flag (the trainer polls it). ``only_defaults``: take a signal only where its handler is
    the default one (a handler a user's script set is the user's); installed from the main thread
    only, as Python requires. ``uninstall`` restores what was there.
    """

    def __init__(self, controls: Controls, interrupt: bool, only_defaults: bool) -> None:
        self.controls, self.interrupt, self.only_defaults = controls, interrupt, only_defaults
        self._previous: dict[int, Any] = {}

    def install(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        for sig, action in self._actions().items():
            if self.only_defaults and signal.getsignal(sig) != signal.SIG_DFL:
                continue
            self._previous[sig] = signal.signal(sig, action)

    def uninstall(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        for sig, old in self._previous.items():
            signal.signal(sig, old)
        self._previous.clear()

    def _actions(self) -> dict[int, Callable[[int, Any], None]]:
        stops = [s for s in STOP_SIGNALS if not (self.interrupt and s == signal.SIGINT)]
        actions: dict[int, Callable[[int, Any], None]] = dict.fromkeys(stops, self._stop)
        if PAUSE_SIGNAL is not None and RESUME_SIGNAL is not None:
            actions[PAUSE_SIGNAL] = lambda *_: self.controls.paused.set()
            actions[RESUME_SIGNAL] = lambda *_: self.controls.paused.clear()
        return actions

    def _stop(self, sig: int, _frame: object) -> None:
        c = self.controls
        c.stopped_by = signal.Signals(sig).name
        if not self.interrupt:
            c.stop.set()
        elif c.busy:
            c.stop_pending = True
        else:
            raise KeyboardInterrupt


class stop_on_signals:  # noqa: N801 - used as a context manager, like contextlib's
    """``with stop_on_signals() as controls``: the trainer's signals for the block."""

    def __init__(self) -> None:
        self.controls = Controls()
        self._handlers = SignalHandlers(self.controls, interrupt=False, only_defaults=False)

    def __enter__(self) -> Controls:
        self._handlers.install()
        return self.controls

    def __exit__(self, *exc: object) -> None:
        self._handlers.uninstall()
