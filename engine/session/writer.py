"""Appending to a new session: buffered rows, commits at least once a second, a heartbeat thread.

The heartbeat thread also stamps the phase the trainer is in (a curvature pass and its progress),
so a reader sees a long computation move even though it yields no stored records.

Storage failures (a full disk, a vanished or read-only folder) become one ``StorageError`` naming
the cause and the file; what was committed before stays, and ``close`` still tries to record the
final status. If even that cannot be written, the heartbeat stops and readers see the session as
interrupted (a "running" session whose writer is gone).

Why the writer checks its file's identity: on Linux a deleted (or moved) session folder does not
make writes fail, SQLite goes on appending to the unlinked file and the run would end "finished"
with nothing on disk. So every commit, and the heartbeat every second, checks that the path still
names the file created (same device and inode); if not, the next write raises ``StorageError``.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import socket
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sgdwalk.control import ending
from sgdwalk.errors import SessionError, StorageError
from sgdwalk.records import (
    INTERRUPTED,
    RUNNING,
    CurvatureMeasured,
    EpochEnded,
    EventLogged,
    PhaseProgressed,
    Record,
)
from sgdwalk.session.naming import claim, taken
from sgdwalk.session.schema import (
    APPLICATION_ID,
    DB_NAME,
    HEARTBEAT_INTERVAL,
    INDEXES,
    META_TABLE,
    SCHEMA_VERSION,
    TABLES,
    connect,
    table_for,
)


def identity(db: Path) -> tuple[int, int] | None:
    """The device and inode the path ``db`` names now (None when it names nothing)."""
    try:
        st = os.stat(db)
    except OSError:
        return None
    return st.st_dev, st.st_ino


class _Heartbeat(threading.Thread):
    """Stamps ``meta.heartbeat`` (and the current phase) every second on its own connection, and
    notices when the session's file is gone (``lost``)."""

    def __init__(self, db: Path, ident: tuple[int, int] | None):
        super().__init__(name="sgdwalk-heartbeat", daemon=True)
        self._db, self._file = db, ident  # (not _ident: a Thread's own)
        self._stop_event = threading.Event()
        self.phase = ""  # JSON of the phase in progress, set by the writer; "" when none
        self.lost = False  # the path no longer names the session's file

    def run(self) -> None:
        try:
            con = connect(self._db)
        except sqlite3.Error:  # the writer reports storage failures; readers see a silent writer
            self.lost = identity(self._db) != self._file  # (gone already: said at the next record)
            return
        try:
            while not self._stop_event.wait(HEARTBEAT_INTERVAL):
                if identity(self._db) != self._file:
                    self.lost = True  # the writer raises at its next record
                    return
                with contextlib.suppress(sqlite3.Error):  # lock held past the timeout, disk full:
                    stamp(con, self.phase)  # try again next second
        finally:
            con.close()

    def stop(self) -> None:
        self._stop_event.set()
        self.join(timeout=5)


def stamp(con: sqlite3.Connection, phase: str) -> None:
    con.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)",
                    [("heartbeat", repr(time.time())), ("phase", phase)])  # fmt: skip


def init_schema(
    con: sqlite3.Connection, name: str, config: dict[str, Any], info: dict[str, Any]
) -> None:
    """The file's marks, its tables (from the records) and its meta, in one transaction."""
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("PRAGMA synchronous=NORMAL")
    con.execute("BEGIN")  # the header marks and the schema land together: no half-made session
    con.execute(f"PRAGMA application_id={APPLICATION_ID}")
    con.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
    for stmt in (META_TABLE, *(t.create_sql() for t in TABLES.values()), *INDEXES):
        con.execute(stmt)
    now = repr(time.time())
    meta = {
        "schema_version": str(SCHEMA_VERSION),
        "name": name,
        "config": json.dumps(config, sort_keys=True),
        "info": json.dumps(info, sort_keys=True),
        "status": RUNNING,
        "message": "",
        "started_at": now,
        "ended_at": "",
        "heartbeat": now,
        "phase": "",
        "pid": str(os.getpid()),
        "host": socket.gethostname(),
    }
    con.executemany("INSERT INTO meta VALUES (?, ?)", list(meta.items()))
    con.execute("COMMIT")


class SessionWriter:
    """Appends records to a new session; commits at least every ``commit_interval`` seconds."""

    def __init__(
        self,
        directory: Path,
        config: dict[str, Any],
        info: dict[str, Any],
        commit_interval: float = 1.0,
        claimed: bool = False,
    ):
        """``claimed``: the folder was claimed for this session (``sgdwalk.session.naming``);
        otherwise it is created here, exclusively. Either way the database file is new."""
        self.directory = Path(directory)
        self.db = self.directory / DB_NAME
        self.commit_interval = commit_interval
        if not claimed:
            claim(self.directory.parent, self.directory.name, "")
        _create_exclusively(self.db)
        self._pending: dict[str, list[tuple[Any, ...]]] = {name: [] for name in TABLES}
        self._last_commit = time.monotonic()
        self._closed = False
        self._ident = identity(self.db)
        with self._storage("create"):
            self._con = connect(self.db)
            init_schema(self._con, self.directory.name, config, info)
        self._heartbeat = _Heartbeat(self.db, self._ident)
        self._heartbeat.start()

    @contextlib.contextmanager
    def _storage(self, doing: str) -> Iterator[None]:
        """Turn SQLite and OS failures into one ``StorageError`` line naming the cause."""
        try:
            yield
        except (sqlite3.Error, OSError) as e:
            con = getattr(self, "_con", None)
            if con is not None and con.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    con.rollback()
            cause = "disk full" if _disk_full(e) else str(e) or type(e).__name__
            raise StorageError(f"cannot {doing} the session at {self.db}: {cause}") from None

    # -- appending

    def write(self, rec: Record) -> None:
        """Buffer one record; commit when a second has passed, an epoch ended or an event came.

        Progress (``PhaseProgressed``) is not stored as a row: the heartbeat carries it.
        """
        if self._heartbeat.lost:
            self._check_there()
        if isinstance(rec, PhaseProgressed):
            self._heartbeat.phase = json.dumps(
                {
                    "phase": rec.phase,
                    "done": rec.done,
                    "total": rec.total,
                    "step": rec.step,
                    "epoch": rec.epoch,
                    "since": self._phase_since(rec),
                }  # fmt: skip
            )
            return
        table = table_for(rec)
        if table is None:
            return
        self._heartbeat.phase = ""
        self._pending[table.name].append(table.row(rec))
        urgent = isinstance(rec, EpochEnded | CurvatureMeasured | EventLogged)
        if urgent or time.monotonic() - self._last_commit >= self.commit_interval:
            self.commit()  # events are rare, and a reader should see them (a pause) at once

    _phase_key: tuple[str, int] | None = None
    _phase_start = 0.0

    def _phase_since(self, rec: PhaseProgressed) -> float:
        """When the phase in progress started (wall clock), for a reader's elapsed time."""
        key = (rec.phase, rec.step)
        if key != self._phase_key or not self._heartbeat.phase:
            self._phase_key, self._phase_start = key, time.time()
        return self._phase_start

    def _check_there(self) -> None:
        """Raise ``StorageError`` when the path no longer names the file this writer created."""
        if identity(self.db) != self._ident:
            raise StorageError(f"cannot write the session at {self.db}: its folder was deleted "
                               "or moved while the run wrote it")  # fmt: skip

    def commit(self) -> None:
        if self._closed:
            return
        self._check_there()
        con = self._con
        with self._storage("write"):
            con.execute("BEGIN IMMEDIATE")
            for name, rows in self._pending.items():
                if rows:
                    con.executemany(TABLES[name].insert_sql(), rows)
            con.execute("UPDATE meta SET value=? WHERE key='heartbeat'", (repr(time.time()),))
            con.execute("COMMIT")
        for rows in self._pending.values():
            rows.clear()
        self._last_commit = time.monotonic()

    def close(self, status: str, message: str = "") -> None:
        """Commit everything buffered and record the final status. Idempotent.

        If the buffered rows cannot be written (``StorageError``), the status is still tried on
        its own before the error goes on.
        """
        if self._closed:
            return
        self._heartbeat.stop()
        try:
            self.commit()
        finally:
            for rows in self._pending.values():
                rows.clear()  # what could not be written is dropped, so the status can still be
            self._closed = True
            self._finish(status, message)

    def _finish(self, status: str, message: str) -> None:
        con = self._con
        try:
            with self._storage("close"):
                con.execute("BEGIN IMMEDIATE")
                con.executemany("UPDATE meta SET value=? WHERE key=?",
                                [(status, "status"), (message, "message"), ("", "phase"),
                                 (repr(time.time()), "ended_at")])  # fmt: skip
                con.execute("COMMIT")
                con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        finally:
            con.close()

    def __enter__(self) -> SessionWriter:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc is None:
            self.close(INTERRUPTED, "writer closed without a final status")
        else:
            self.close(*ending(exc))


def record_ending(db: Path, status: str, message: str) -> bool:
    """For a writer that is dead (killed when it would not stop): its ending event and final
    status, written only while the stored status is still running. True when written."""
    try:
        con = connect(db)
    except sqlite3.Error:
        return False
    try:
        con.execute("BEGIN IMMEDIATE")
        meta = dict(con.execute("SELECT key, value FROM meta").fetchall())
        if meta.get("status") != RUNNING:
            con.execute("ROLLBACK")
            return False
        step, epoch = con.execute("SELECT COALESCE(MAX(step), 0), COALESCE(MAX(epoch), 0) "
                                  "FROM steps").fetchone()  # fmt: skip
        took = time.time() - float(meta.get("started_at") or time.time())
        event = EventLogged(step, epoch, "info", status, message, took)  # type: ignore[arg-type]
        table = TABLES["events"]
        con.execute(table.insert_sql(), table.row(event))
        con.executemany("UPDATE meta SET value=? WHERE key=?",
                        [(status, "status"), (message, "message"), ("", "phase"),
                         (repr(time.time()), "ended_at")])  # fmt: skip
        con.execute("COMMIT")
        return True
    except (sqlite3.Error, ValueError):
        return False
    finally:
        con.close()


def _create_exclusively(db: Path) -> None:
    """The session's database file, created empty; a claimed folder that already holds one
    belongs to another run."""
    try:
        os.close(os.open(db, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
    except FileExistsError:
        raise taken(db.parent.name, db.parent.parent) from None
    except FileNotFoundError:
        raise StorageError(f"cannot create the session at {db}: its folder is gone") from None
    except OSError as e:
        if e.errno == errno.ENOSPC:
            raise StorageError(f"cannot create {db}: disk full") from None
        raise SessionError(f"cannot write session folder {db.parent}: {e.strerror or e}") from None


def _disk_full(e: BaseException) -> bool:
    if isinstance(e, OSError):
        return e.errno == errno.ENOSPC
    return isinstance(e, sqlite3.Error) and "full" in str(e)
