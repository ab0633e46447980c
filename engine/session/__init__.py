"""The session store: one SQLite database per run, in WAL mode.

Why this shape:
- WAL lets a reader (``watch``, ``replay``) follow a session while the trainer writes it.
- The writer buffers rows and commits at least once a second, at every epoch end and at every
  event (a pause, a warning), so a crash loses at most the last uncommitted second, while a fast
  training loop pays a list append per step.
- A heartbeat thread stamps the database every second (with the phase in progress), so a reader
  can tell a live writer from a dead one, and see progress, while the trainer is inside a long
  computation that yields no stored records.
- Seeking any step is an indexed query; the tables are derived from the records
  (``schema.TABLES``), so a new measurement needs no change here.
- Nothing is pickled: rows are numbers, JSON text and float64 blobs, so reading a session never runs
  code. Session names are plain names and cannot escape the sessions folder.
"""

from sgdwalk.errors import SessionError
from sgdwalk.session.naming import sessions_folder
from sgdwalk.session.reader import (
    Session,
    list_sessions,
    open_session,
    resolve_session,
)
from sgdwalk.session.schema import (
    APPLICATION_ID,
    DB_NAME,
    SCHEMA_VERSION,
    TABLES,
    check_session_name,
    session_dir,
)
from sgdwalk.session.writer import SessionWriter

__all__ = [
    "APPLICATION_ID",
    "DB_NAME",
    "SCHEMA_VERSION",
    "TABLES",
    "Session",
    "SessionError",
    "SessionWriter",
    "check_session_name",
    "sessions_folder",
    "list_sessions",
    "open_session",
    "resolve_session",
    "session_dir",
]
