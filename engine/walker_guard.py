"""How a user's script reaches its Walker besides the two moments of a step: how the script ends
(an exit code, an uncaught exception, a stop signal, the interpreter's exit), its forks and its
threads.

Why an owner: a forked child (a ``DataLoader`` worker, the script's own ``os.fork()``) inherits
the Walker, its optimiser hooks, its exit handler, its excepthook and its signal handlers. Were
they to act there, a child's ``sys.exit(0)`` would end the parent's session ``finished`` while the
parent trains on, and a child that trains would write into the parent's file. So every one of
them acts only in the process that made the Walker (``Owner.here``), and ``os.register_at_fork``
takes the exit handler, the excepthook, the exit wrappers and the signal handlers off in every
child at once. Threads: the steps measured are those of one thread, the first that steps (another
takes over once that one has ended); a step from any other thread is not measured and said once,
so the two moments of one update never interleave with another's.

Exit codes: Python runs exit handlers with no word of the code it will exit with, and calls no
excepthook for ``SystemExit``. So the Walker sees a code where it can: ``sys.exit(n)`` (and the
``exit(n)``/``quit(n)`` builtins) are wrapped while a Walker is open to note ``n`` (forgotten
when training goes on after a caught exit), and a ``SystemExit`` leaving a ``with Walker(...)``
block carries its code. 0 or None ends the session ``finished``, any other code ``failed``. Not
covered: ``raise SystemExit(n)`` outside a ``with`` block, which ends the session ``finished``
("the script ended"), and ``os._exit``, which runs no handler at all (readers then see the
session interrupted once its heartbeat stops).
"""

from __future__ import annotations

import atexit
import builtins
import contextlib
import os
import sys
import threading
import weakref
from collections.abc import Callable
from typing import Any

from sgdwalk.control import Controls, SignalHandlers, ending
from sgdwalk.records import FINISHED

Said = Callable[[str], None]  # one line for the user (and the session), said once


class Owner:
    """The process that made a Walker, and the thread whose steps it measures."""

    def __init__(self, foreign: Said) -> None:
        self.pid = os.getpid()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._foreign, self._said = foreign, False

    def here(self) -> bool:
        """Whether this is the process that made the Walker (not a forked child)."""
        return os.getpid() == self.pid

    def steps_here(self) -> bool:
        """Whether a step moment in this thread is measured (said once when it is not)."""
        if not self.here():
            return False
        me = threading.current_thread()
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = me
            if self._thread is me:
                return True
            first, self._said = not self._said, True
        if first:
            self._foreign(f"optimizer.step() runs in thread {me.name!r} too: only the steps of "
                          f"thread {self._thread.name!r} are measured (and each includes what "
                          "the other threads changed meanwhile)")  # fmt: skip
        return False


class ScriptGuard:
    """How a user's script ends, as its Walker sees it: a stop signal (SIGTERM/SIGHUP, raised as
    ``KeyboardInterrupt`` outside the Walker's own work; ``sgdwalk.control``), an uncaught
    exception, an exit code, or the interpreter's exit; each calls ``on_end(status, message)``,
    in the owner's process only."""

    def __init__(self, controls: Controls, on_end: Callable[[str, str], None], owner: Owner):
        self.controls, self.owner = controls, owner
        self._signals = SignalHandlers(controls, interrupt=True, only_defaults=True)
        self._on_end = on_end
        self._previous_hook: Any = None
        self._exits = ExitWrappers(self._exiting)
        self._exit: tuple[Any] | None = None  # the code sys.exit was called with, if it was
        self.installed = False

    def install(self) -> None:
        if self.installed:
            return
        self.installed = True
        self._signals.install()
        atexit.register(self._at_exit)
        self._previous_hook = sys.excepthook
        sys.excepthook = self._excepthook
        self._exits.install()
        _GUARDS.add(self)

    def remove(self) -> None:
        if not self.installed:
            return
        self.installed = False
        self._signals.uninstall()
        atexit.unregister(self._at_exit)
        if sys.excepthook == self._excepthook:
            sys.excepthook = self._previous_hook
        self._exits.remove()
        _GUARDS.discard(self)

    def ending(self, e: BaseException) -> tuple[str, str]:
        """The status and message of a session an exception ended."""
        return ending(e, self.controls.stopped_by)

    def went_on(self) -> None:
        """Training went on: an exit called before was caught, not the script's end."""
        self._exit = None

    def _exiting(self, code: Any) -> None:
        if self.installed and self.owner.here():
            self._exit = (code,)

    def _excepthook(self, kind: type[BaseException], e: BaseException, tb: Any) -> None:
        previous = self._previous_hook
        if self.owner.here():
            self._on_end(*self.ending(e))
        previous(kind, e, tb)

    def _at_exit(self) -> None:
        if not self.owner.here():
            return
        if self._exit is not None:
            self._on_end(*ending(SystemExit(*self._exit)))
        else:
            self._on_end(FINISHED, "the script ended")


class ExitWrappers:
    """``sys.exit`` and the ``exit``/``quit`` builtins, wrapped to tell ``noted(code)`` first;
    ``remove`` puts back each one that is still the wrapper (a wrapper someone wrapped again
    stays, and notes nothing once removed)."""

    def __init__(self, noted: Callable[[Any], None]) -> None:
        self._noted = noted
        self._originals: list[tuple[Any, str, Any, Any]] = []  # (owner, name, original, wrapper)

    def install(self) -> None:
        for where, name in ((sys, "exit"), (builtins, "exit"), (builtins, "quit")):
            original = getattr(where, name, None)
            if original is not None:
                wrapper = _Noting(original, self._noted)
                setattr(where, name, wrapper)
                self._originals.append((where, name, original, wrapper))

    def remove(self) -> None:
        for where, name, original, wrapper in self._originals:
            wrapper.noted = None
            if getattr(where, name, None) is wrapper:
                setattr(where, name, original)
        self._originals.clear()


class _Noting:
    def __init__(self, original: Any, noted: Callable[[Any], None]) -> None:
        self.original, self.noted = original, noted

    def __call__(self, code: Any = None) -> Any:
        if self.noted is not None:
            self.noted(code)
        return self.original(code)

    def __repr__(self) -> str:
        return repr(self.original)


_GUARDS: weakref.WeakSet[ScriptGuard] = weakref.WeakSet()  # installed guards, for a fork


def _in_a_child() -> None:
    """After ``os.fork()``, in the child: the Walkers' handlers are the parent's, not its own."""
    for guard in list(_GUARDS):
        with contextlib.suppress(Exception):
            guard.remove()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_in_a_child)
