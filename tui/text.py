"""Text that came from outside (session files, folder names, error messages), made safe to show.

A session file is data anyone could have written: a status holding ``ESC[2J`` would clear the
screen if printed raw, and a folder named ``[bold]x`` would be styled by Rich markup. Everything
read from a session is shown through ``plain``, which makes control characters visible
(``\\x1b``), and through Rich with markup off. ``say_error`` is the one printer of one-line errors.
"""

from __future__ import annotations

import contextlib
import io
import re
import sys
from collections.abc import Callable
from typing import Any

ERROR_PREFIX = "sgdwalk: error: "
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def plain(value: object) -> str:
    """``str(value)`` with every control character (newlines too) written as an escape."""
    return _CONTROL.sub(lambda m: repr(m.group())[1:-1], str(value))


def share_text(value: float | None, low: float | None, high: float | None,
               measured: int | None, steps: int, brief: bool = False) -> str:  # fmt: skip
    """A share over steps as it is shown: "77%" when every step was measured, "77% ±6%, 41 of 64
    measured" when a sample was (the half-width of its 95% interval), "-, none of 64 measured";
    ``brief``: without the counts ("77% ±6%")."""
    if measured == 0:
        return "-" if brief else f"-, none of {steps} measured"
    if value is None or value != value:  # (NaN: unknown)
        return "-"
    text = f"{value:.0%}"
    if measured is not None and measured < steps and low is not None and high is not None:
        text += f" ±{(high - low) / 2:.0%}" + ("" if brief else f", {measured} of {steps} measured")
    return text


class QuietStream(io.TextIOBase):
    """A terminal stream that goes quiet once the terminal is gone.

    After an SSH drop, writing to the terminal raises ``OSError`` (EIO, EPIPE); a run must not
    fail for want of a screen (its session has every number), so the first failure makes this
    stream drop everything after it.
    """

    def __init__(self, stream: Any) -> None:
        super().__init__()
        self.stream = stream
        self.gone = False

    def write(self, text: str) -> int:
        if not self.gone:
            try:
                self.stream.write(text)
            except OSError:
                self.gone = True
        return len(text)

    def flush(self) -> None:
        if not self.gone:
            try:
                self.stream.flush()
            except OSError:
                self.gone = True

    def isatty(self) -> bool:
        try:
            return not self.gone and self.stream.isatty()
        except (OSError, ValueError):
            return False

    def fileno(self) -> int:
        return int(self.stream.fileno())

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return getattr(self.stream, "encoding", "utf-8")


def say_error(message: object) -> None:
    """``sgdwalk: error: MESSAGE`` on stderr, one line; a vanished terminal is no second error."""
    with contextlib.suppress(OSError):
        sys.stderr.write(f"{ERROR_PREFIX}{plain(message)}\n")
        sys.stderr.flush()


def guarded(command: Callable[[], int | None]) -> int:
    """Run a command's body; an expected failure is one line on stderr and its exit code
    (Ctrl+C: 130), anything else a bug with its traceback."""
    from sgdwalk.errors import SgdwalkError

    try:
        return command() or 0
    except KeyboardInterrupt:
        say_error("interrupted")
        return 130
    except SgdwalkError as e:
        say_error(e)
        return e.exit_code


def optimizer_of(config: dict[str, Any]) -> str | None:
    """The optimizer a session trained with, in lower case as ``--optimizer`` names it (a
    Walker's class name "AdamW" -> "adamw"); "sgd" for a built-in run recorded before the flag
    existed (they all used SGD); None when unknown (a Walker never attached)."""
    name = config.get("optimizer")
    if name is None and config.get("source") != "walker":
        return "sgd"
    return plain(name).lower() if isinstance(name, str) and name else None
