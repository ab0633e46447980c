"""Every error a user can cause or meet, and the exit code each command ends with.

Why one base class: every front end (the CLI, the dashboard launcher, a user's own script) catches
``SgdwalkError`` and shows ``str(e)``, which is always one line for the user; the CLI prints it in
one place (``sgdwalk.tui.cli.main``) and exits with ``e.exit_code``. Anything else that escapes is
a bug and keeps its traceback.

Exit codes (the README's "Bad input and exit codes" lists them for users):
- 0 finished, 1 failed (a crash: the traceback is in the session's ``error.txt``),
- 2 bad input: flags, config files, datasets, session names and files, export options,
- 3 the loss diverged (NaN/inf) and ``--allow-divergence`` was not given,
- 4 the session could not be written: the disk is full, or it went read-only or away,
- 130 interrupted (Ctrl+C, SIGTERM, SIGHUP), as a shell reports a SIGINT.
"""

from __future__ import annotations

from sgdwalk.records import DIVERGED, FAILED, FINISHED, INTERRUPTED

EXIT_USAGE = 2
EXIT_STORAGE = 4
EXIT_CODES = {FINISHED: 0, FAILED: 1, DIVERGED: 3, INTERRUPTED: 130}


def exit_code(status: str) -> int:
    """The exit code of a run that ended with ``status`` (unknown statuses count as failed)."""
    return EXIT_CODES.get(status, EXIT_CODES[FAILED])


class SgdwalkError(Exception):
    """An expected failure: ``str(e)`` is one line for the user, ``exit_code`` ends the command."""

    exit_code = EXIT_USAGE


class ConfigError(SgdwalkError, ValueError):
    """A bad configuration value (a flag, a preset, a config file)."""


class DataError(SgdwalkError):
    """The dataset cannot be loaded (missing files, no network for --download)."""


class SessionError(SgdwalkError):
    """A session cannot be created, found or read (bad name, taken, damaged, foreign file)."""


class UsageError(SgdwalkError):
    """A bad combination of a command's options (export targets, ranges, formats)."""


class StorageError(SgdwalkError):
    """The session cannot be written any more: disk full, read-only or vanished storage."""

    exit_code = EXIT_STORAGE


class Stopped(Exception):
    """A stop was asked for (a signal, the dashboard's ``s``) in the middle of a measurement.

    Raised between probe chunks and Hessian-vector products, so a stop takes effect within one
    chunk's forward pass even inside a long curvature pass; the trainer ends the run interrupted.
    Not an ``SgdwalkError``: it never reaches the user as an error.
    """


class LaunchError(SgdwalkError):
    """A trainer process started for the dashboard ended before its session appeared."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code
