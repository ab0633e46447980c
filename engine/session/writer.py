"""Appending to a new session: buffered rows, commits at least once a second, a heartbeat thread."""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import threading
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from sgdwalk.records import (
    FAILED,
    INTERRUPTED,
    RUNNING,
    CurvatureMeasured,
    EpochEnded,
    EventLogged,
    StepMeasured,
)
from sgdwalk.session.schema import (
    APPLICATION_ID,
    DB_NAME,
    EPOCH_COLS,
    HEARTBEAT_INTERVAL,
    SCHEMA,
    SCHEMA_VERSION,
    STEP_COLS,
    SessionError,
    connect,
    step_row,
    to_json,
)


class _Heartbeat(threading.Thread):
    """Stamps ``meta.heartbeat`` every second on its own connection until stopped."""

    def __init__(self, db: Path):
        super().__init__(name="sgdwalk-heartbeat", daemon=True)
        self._db = db
        self._stop_event = threading.Event()

    def run(self) -> None:
        con = connect(self._db)
        try:
            while not self._stop_event.wait(HEARTBEAT_INTERVAL):
                try:
                    con.execute(
                        "UPDATE meta SET value=? WHERE key='heartbeat'", (repr(time.time()),)
                    )
                except sqlite3.OperationalError:
                    continue  # the writer held the lock past the timeout; stamp next second
        finally:
            con.close()

    def stop(self) -> None:
        self._stop_event.set()
        self.join(timeout=5)


class SessionWriter:
    """Appends records to a new session; commits at least every ``commit_interval`` seconds."""

    def __init__(
        self,
        directory: Path,
        config: dict[str, Any],
        info: dict[str, Any],
        commit_interval: float = 1.0,
    ):
        self.directory = Path(directory)
        self.db = self.directory / DB_NAME
        self.commit_interval = commit_interval
        self._create_dir()
        self._con = connect(self.db)
        self._init_schema(config, info)
        self._steps: list[tuple] = []
        self._other: list[tuple[str, tuple]] = []
        self._last_commit = time.monotonic()
        self._closed = False
        self._heartbeat = _Heartbeat(self.db)
        self._heartbeat.start()

    def _create_dir(self) -> None:
        if self.db.exists():
            raise SessionError(
                f"session {self.directory.name!r} already exists in {self.directory.parent}; "
                "choose another --session name"
            )
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            probe = self.directory / ".write-test"
            probe.touch()
            probe.unlink()
        except OSError as e:
            raise SessionError(
                f"cannot write sessions folder {self.directory.parent}: {e.strerror or e}"
            ) from None

    def _init_schema(self, config: dict[str, Any], info: dict[str, Any]) -> None:
        con = self._con
        con.execute("PRAGMA journal_mode=WAL")
        con.execute("PRAGMA synchronous=NORMAL")
        con.execute("BEGIN")  # the header marks and the schema land together: no half-made session
        con.execute(f"PRAGMA application_id={APPLICATION_ID}")
        con.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        for stmt in SCHEMA.strip().split(";"):
            if stmt.strip():
                con.execute(stmt)
        meta = {
            "schema_version": str(SCHEMA_VERSION),
            "name": self.directory.name,
            "config": json.dumps(config, sort_keys=True),
            "info": json.dumps(info, sort_keys=True),
            "status": RUNNING,
            "message": "",
            "started_at": repr(time.time()),
            "ended_at": "",
            "heartbeat": repr(time.time()),
            "pid": str(os.getpid()),
            "host": socket.gethostname(),
        }
        con.executemany("INSERT INTO meta VALUES (?, ?)", list(meta.items()))
        con.execute("COMMIT")

    # -- appending

    def write(self, rec: object) -> None:
        """Buffer one record; commit when a second has passed, an epoch ended or an event came."""
        if isinstance(rec, StepMeasured):
            self._steps.append(step_row(rec))
        elif isinstance(rec, EpochEnded):
            self._other.append(("epochs", tuple(getattr(rec, c) for c in EPOCH_COLS)))
            self.commit()
            return
        elif isinstance(rec, CurvatureMeasured):
            row = (
                rec.step, rec.epoch, to_json(rec.eigenvalues), to_json(rec.residuals), rec.hvps,
                to_json([asdict(a) for a in rec.alignment]),
            )  # fmt: skip
            self._other.append(("curvature", row))
            self.commit()
            return
        elif isinstance(rec, EventLogged):
            event = (rec.step, rec.epoch, rec.level, rec.kind, rec.message, rec.time)
            self._other.append(("events", event))
            self.commit()  # rare, and a reader should see them (a pause, a warning) at once
            return
        else:
            return  # transient records (progress) are not stored
        if time.monotonic() - self._last_commit >= self.commit_interval:
            self.commit()

    _INSERT = {
        "epochs": "INSERT OR REPLACE INTO epochs VALUES (?,?,?,?,?,?,?,?)",
        "curvature": "INSERT INTO curvature (step, epoch, eigenvalues, residuals, hvps, alignment)"
        " VALUES (?,?,?,?,?,?)",
        "events": "INSERT INTO events (step, epoch, level, kind, message, time)"
        " VALUES (?,?,?,?,?,?)",
    }

    def commit(self) -> None:
        if self._closed:
            return
        con = self._con
        con.execute("BEGIN IMMEDIATE")
        try:
            if self._steps:
                con.executemany(
                    f"INSERT OR REPLACE INTO steps VALUES ({','.join('?' * len(STEP_COLS))})",
                    self._steps,
                )
            for table, row in self._other:
                con.execute(self._INSERT[table], row)
            con.execute("UPDATE meta SET value=? WHERE key='heartbeat'", (repr(time.time()),))
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise
        self._steps.clear()
        self._other.clear()
        self._last_commit = time.monotonic()

    def set_meta(self, key: str, value: str) -> None:
        self.commit()
        self._con.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value))

    def close(self, status: str, message: str = "") -> None:
        """Commit everything buffered and record the final status. Idempotent."""
        if self._closed:
            return
        self._heartbeat.stop()
        self.commit()
        con = self._con
        con.execute("BEGIN IMMEDIATE")
        con.execute("UPDATE meta SET value=? WHERE key='status'", (status,))
        con.execute("UPDATE meta SET value=? WHERE key='message'", (message,))
        con.execute("UPDATE meta SET value=? WHERE key='ended_at'", (repr(time.time()),))
        con.execute("COMMIT")
        con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        con.close()
        self._closed = True

    def __enter__(self) -> SessionWriter:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is None:
            self.close(INTERRUPTED, "writer closed without a final status")
        elif issubclass(exc_type, KeyboardInterrupt):
            self.close(INTERRUPTED, "interrupted")
        else:
            self.close(FAILED, f"{exc_type.__name__}: {exc}")
