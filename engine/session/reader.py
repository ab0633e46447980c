"""Reading a session, live or finished: records, liveness from the heartbeat, follow()."""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sgdwalk.records import (
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
    HEARTBEAT_STALE,
    SCHEMA_VERSION,
    SessionError,
    check_session_name,
    connect,
    curvature_from_row,
    epoch_from_row,
    event_from_row,
    step_from_row,
)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Session:
    """A read-only view of a session, live or finished (see ``open_session``)."""

    def __init__(self, db: Path):
        self.db = db
        self.path = db.parent
        self.name = db.parent.name
        self._con = _open_checked(db)
        meta = self._meta()
        self.config: dict[str, Any] = json.loads(meta["config"])
        self.info: dict[str, Any] = json.loads(meta["info"])
        self.started_at = float(meta["started_at"])

    def _meta(self) -> dict[str, str]:
        return dict(self._con.execute("SELECT key, value FROM meta").fetchall())

    def close(self) -> None:
        self._con.close()

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- liveness

    @property
    def stored_status(self) -> str:
        return self._meta()["status"]

    @property
    def message(self) -> str:
        return self._meta()["message"]

    @property
    def heartbeat_age(self) -> float:
        return time.time() - float(self._meta()["heartbeat"])

    @property
    def alive(self) -> bool:
        """True while a writer process is running this session."""
        meta = self._meta()
        if meta["status"] != RUNNING:
            return False
        if meta["host"] == socket.gethostname() and not _pid_alive(int(meta["pid"])):
            return False
        return time.time() - float(meta["heartbeat"]) < HEARTBEAT_STALE

    @property
    def status(self) -> str:
        """running, finished, interrupted, diverged or failed; a dead writer reads as interrupted."""
        stored = self.stored_status
        if stored == RUNNING and not self.alive:
            return INTERRUPTED
        return stored

    # -- records

    def steps(self, start: int | None = None, stop: int | None = None) -> Iterator[StepMeasured]:
        """Steps with ``start <= step < stop`` in order (None: unbounded)."""
        lo = -1 if start is None else start
        hi = 2**62 if stop is None else stop
        cur = self._con.execute(
            "SELECT * FROM steps WHERE step >= ? AND step < ? ORDER BY step", (lo, hi)
        )
        for row in cur:
            yield step_from_row(row)

    def step(self, step: int) -> StepMeasured | None:
        row = self._con.execute("SELECT * FROM steps WHERE step = ?", (step,)).fetchone()
        return None if row is None else step_from_row(row)

    def epoch_steps(self, epoch: int) -> Iterator[StepMeasured]:
        for row in self._con.execute("SELECT * FROM steps WHERE epoch=? ORDER BY step", (epoch,)):
            yield step_from_row(row)

    def epochs(self) -> Iterator[EpochEnded]:
        for row in self._con.execute("SELECT * FROM epochs ORDER BY epoch"):
            yield epoch_from_row(row)

    def curvature(self) -> Iterator[CurvatureMeasured]:
        for row in self._con.execute("SELECT * FROM curvature ORDER BY id"):
            yield curvature_from_row(row)

    def events(self) -> Iterator[EventLogged]:
        for row in self._con.execute("SELECT * FROM events ORDER BY id"):
            yield event_from_row(row)

    def step_count(self) -> int:
        return self._con.execute("SELECT COUNT(*) FROM steps").fetchone()[0]

    def last_step(self) -> int:
        return self._con.execute("SELECT COALESCE(MAX(step), 0) FROM steps").fetchone()[0]

    def barrier_count(self) -> int:
        return self._con.execute("SELECT COALESCE(SUM(barrier), 0) FROM steps").fetchone()[0]

    def follow(self, poll: float = 0.25, idle_timeout: float | None = None) -> Iterator[object]:
        """Yield every record, then new ones as a live writer commits them, in step order.

        Ends once the writer has finished (or died) and everything it committed was yielded, or
        after ``idle_timeout`` seconds without a new record.
        """
        last = {"steps": 0, "epochs": 0, "curvature": 0, "events": 0}
        idle_since = time.monotonic()
        while True:
            done = not self.alive  # read before the rows, so nothing committed after is missed
            batch = self._new_records(last)
            yield from batch
            if batch:
                idle_since = time.monotonic()
            elif done or idle_timeout is not None and time.monotonic() - idle_since > idle_timeout:
                return
            else:
                time.sleep(poll)

    def _new_records(self, last: dict[str, int]) -> list[object]:
        con = self._con
        keyed: list[tuple[tuple[int, int], object]] = []
        con.execute("BEGIN")  # one snapshot for all four tables
        try:
            for row in con.execute("SELECT * FROM steps WHERE step > ? ORDER BY step",
                                   (last["steps"],)):  # fmt: skip
                rec = step_from_row(row)
                last["steps"] = rec.step
                keyed.append(((rec.step, 0), rec))
            for row in con.execute("SELECT * FROM epochs WHERE epoch > ?", (last["epochs"],)):
                ep = epoch_from_row(row)
                last["epochs"] = max(last["epochs"], ep.epoch)
                keyed.append(((ep.steps, 1), ep))
            for row in con.execute("SELECT * FROM curvature WHERE id > ?", (last["curvature"],)):
                last["curvature"] = row[0]
                cm = curvature_from_row(row)
                keyed.append(((cm.step, 2), cm))
            for row in con.execute("SELECT * FROM events WHERE id > ?", (last["events"],)):
                last["events"] = row[0]
                ev = event_from_row(row)
                keyed.append(((ev.step, 3), ev))
        finally:
            con.execute("COMMIT")
        keyed.sort(key=lambda kv: kv[0])
        return [rec for _, rec in keyed]


def _open_checked(db: Path) -> sqlite3.Connection:
    if not db.is_file():
        raise SessionError(f"no session at {db.parent} (expected {db.name} there)")
    try:
        con = connect(db, timeout=5.0)
        app_id = con.execute("PRAGMA application_id").fetchone()[0]
        version = con.execute("PRAGMA user_version").fetchone()[0]
    except sqlite3.DatabaseError as e:
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


def resolve_session(spec: str | os.PathLike[str], sessions_dir: Path | None = None) -> Path:
    """A session folder, its ``session.sqlite``, or a bare name inside ``sessions_dir``."""
    p = Path(spec)
    if p.is_file():
        return p
    if p.is_dir():
        return p / DB_NAME
    if sessions_dir is not None and os.sep not in str(spec) and str(spec) not in ("", ".", ".."):
        candidate = Path(sessions_dir) / check_session_name(str(spec)) / DB_NAME
        if candidate.is_file():
            return candidate
    raise SessionError(f"no session {str(spec)!r} (not a folder, file or name in {sessions_dir})")


def open_session(spec: str | os.PathLike[str], sessions_dir: Path | None = None) -> Session:
    """Open a session for reading: ``open_session("sessions/NAME")``."""
    return Session(resolve_session(spec, sessions_dir))


def list_sessions(sessions_dir: Path) -> list[Session]:
    """Every readable session in ``sessions_dir``, newest first (unreadable ones skipped)."""
    out = []
    for db in Path(sessions_dir).glob(f"*/{DB_NAME}"):
        try:
            out.append(Session(db))
        except SessionError:
            continue
    out.sort(key=lambda s: s.started_at, reverse=True)
    return out
