"""Text that came from outside (session files, folder names, error messages), made safe to show.

A session file is data anyone could have written: a status holding ``ESC[2J`` would clear the
screen if printed raw, and a folder named ``[bold]x`` would be styled by Rich markup. Everything
read from a session is shown through ``plain``, which makes control characters visible
(``\\x1b``), and through Rich with markup off. ``say_error`` is the one printer of one-line errors.
"""

from __future__ import annotations

import contextlib
import re
import sys

ERROR_PREFIX = "sgdwalk: error: "
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def plain(value: object) -> str:
    """``str(value)`` with every control character (newlines too) written as an escape."""
    return _CONTROL.sub(lambda m: repr(m.group())[1:-1], str(value))


def say_error(message: object) -> None:
    """``sgdwalk: error: MESSAGE`` on stderr, one line; a vanished terminal is no second error."""
    with contextlib.suppress(OSError):
        sys.stderr.write(f"{ERROR_PREFIX}{plain(message)}\n")
        sys.stderr.flush()
