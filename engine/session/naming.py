"""Where sessions live and what they are called: one place for every front end.

Why a claim: a session's name must be settled before anything can fail halfway. ``claim`` makes
the session's folder with an exclusive ``mkdir`` (atomic: of two runs asking for one name, one
gets it), either the name asked for or the first free one of a stamped default. The run then
writes its session into the folder it claimed (``SessionWriter(..., claimed=True)``), maybe from
another process (the trainer child of ``sgdwalk run``, the script under ``sgdwalk exec``); until
then the folder holds no ``session.sqlite``, so readers do not list it. A run that fails before it
writes a session gives the folder back (``release``), so bad input leaves nothing behind.

The sessions folder is the one given, else ``$SGDWALK_SESSIONS``, else ``./sessions``; under
``sgdwalk exec`` the script's Walker is told its name through ``$SGDWALK_SESSION``.
"""

from __future__ import annotations

import contextlib
import errno
import os
import time
from pathlib import Path

from sgdwalk.errors import SessionError, StorageError
from sgdwalk.session.schema import DB_NAME, check_session_name

SESSION_ENV = "SGDWALK_SESSION"  # the name `sgdwalk exec` claimed for the script it starts
SESSIONS_ENV = "SGDWALK_SESSIONS"  # the sessions folder, for every command and the Walker
DEFAULT_SESSIONS = "sessions"
MAX_TRIES = 10_000  # stamped names tried before giving up (a folder full of the same second)


def sessions_folder(given: str | os.PathLike[str] | None = None) -> Path:
    """The sessions folder: ``given``, else ``$SGDWALK_SESSIONS``, else ``./sessions``."""
    return Path(given or os.environ.get(SESSIONS_ENV) or DEFAULT_SESSIONS)


def stamped(prefix: str) -> str:
    """PREFIX-YYYYmmdd-HHMMSS: the default name of a new session."""
    return f"{prefix}-{time.strftime('%Y%m%d-%H%M%S')}"


def taken(name: str, folder: Path, hint: str = "--session") -> SessionError:
    """The error for a name that is already a session (or claimed by a starting run)."""
    return SessionError(f"session {name!r} already exists in {folder}; choose another {hint} name")


def claim(folder: Path, name: str | None, prefix: str, hint: str = "--session") -> Path:
    """Make the session folder ``folder/name`` exclusively and return it; with no ``name`` the
    first free one of ``stamped(prefix)``, ``-2``, ``-3``, ... Raises ``SessionError`` (a bad or
    taken name, an unwritable folder) or ``StorageError`` (disk full)."""
    if name is not None:
        directory = folder / check_session_name(name)
        if not _make(directory):
            raise taken(name, folder, hint)
        return directory
    base = check_session_name(stamped(prefix))
    for n in range(1, MAX_TRIES + 1):
        directory = folder / (base if n == 1 else f"{base}-{n}")
        if _make(directory):
            return directory
    raise SessionError(f"no free session name for {base!r} in {folder}")


def adopt(directory: Path, hint: str = "--session") -> Path:
    """A folder claimed for this process by another (``sgdwalk exec``): it must exist and hold no
    session yet; made here if it does not exist."""
    if _make(directory) or not (directory / DB_NAME).exists():
        return directory
    raise taken(directory.name, directory.parent, hint)


def release(directory: Path) -> None:
    """Give back a claimed folder in which no session was written (its log goes with it)."""
    if (directory / DB_NAME).exists():
        return
    with contextlib.suppress(OSError):
        for leftover in directory.iterdir():
            leftover.unlink()
        directory.rmdir()


def _make(directory: Path) -> bool:
    """Create ``directory`` (and its parents); False when it already exists."""
    try:
        if not directory.parent.is_dir():
            directory.parent.mkdir(parents=True, exist_ok=True)
        directory.mkdir()
    except FileExistsError:
        if not directory.parent.is_dir():
            raise _unwritable(directory.parent, "it is a file, not a folder") from None
        return False
    except NotADirectoryError:
        raise _unwritable(directory.parent, "a part of it is a file, not a folder") from None
    except OSError as e:
        if e.errno == errno.ENOSPC:
            raise StorageError(f"cannot create {directory}: disk full") from None
        raise _unwritable(directory.parent, e.strerror or str(e)) from None
    return True


def _unwritable(folder: Path, why: str) -> SessionError:
    return SessionError(f"cannot write sessions folder {folder}: {why}")
