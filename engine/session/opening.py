"""Opening a session file for reading: its marks checked, and read-only places handled.

Read-only places: a finished session on a read-only filesystem, or in a shared folder the reader
cannot write, opens with SQLite's ``immutable`` flag (WAL needs a writable ``-shm`` file beside the
database, and a finished session has everything checkpointed into it). A session still being
written there can only be read if SQLite's read-only WAL mode manages; otherwise it says so.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path
from urllib.parse import quote

from sgdwalk.errors import SessionError
from sgdwalk.session.schema import APPLICATION_ID, SCHEMA_VERSION, connect

# What reading a damaged file can raise: SQLite's errors, and a text value (a table's schema, a
# meta value) whose bytes are not UTF-8, which Python's sqlite3 module raises as a decode error.
READ_ERRORS = (sqlite3.Error, UnicodeDecodeError)


def _connect_for_reading(db: Path) -> sqlite3.Connection:
    """A connection that never writes; read-only places get SQLite's read-only modes."""
    if os.access(db, os.W_OK) and os.access(db.parent, os.W_OK):
        return connect(db, timeout=5.0)
    uri = f"file:{quote(str(db.resolve()))}"
    wal = db.with_name(db.name + "-wal")
    if not (wal.exists() and wal.stat().st_size > 0):
        return connect(Path(f"{uri}?immutable=1"), timeout=5.0, uri=True)  # all checkpointed
    try:
        con = connect(Path(f"{uri}?mode=ro"), timeout=5.0, uri=True)
        con.execute("SELECT COUNT(*) FROM meta").fetchone()
        return con
    except READ_ERRORS:
        raise SessionError(
            f"session at {db.parent} is still being written (or its writer died before "
            "finishing it) and its folder is read-only here, so SQLite cannot follow it; "
            "read it where it is written, or copy the folder somewhere writable"
        ) from None


def open_checked(db: Path) -> sqlite3.Connection:
    """A reading connection to the session file ``db``, its application id and version checked."""
    if not db.is_file():
        raise SessionError(f"no session at {db.parent} (expected {db.name} there)")
    try:
        con = _connect_for_reading(db)
        app_id = con.execute("PRAGMA application_id").fetchone()[0]
        version = con.execute("PRAGMA user_version").fetchone()[0]
    except READ_ERRORS as e:
        raise SessionError(f"{db} is not an sgdwalk session ({e})") from None
    if app_id != APPLICATION_ID:
        con.close()
        raise SessionError(f"{db} is not an sgdwalk session (foreign SQLite file)")
    if version != SCHEMA_VERSION:
        con.close()
        raise SessionError(
            f"{db} is a session of schema version {version}; this sgdwalk reads version "
            f"{SCHEMA_VERSION}"
        )
    return con
