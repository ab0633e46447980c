"""The session store: one SQLite database per run, in WAL mode (SPEC "Sessions", decided).

Why this shape:
- WAL lets a reader (``watch``, ``replay``) follow a session while the trainer writes it.
- The writer buffers rows and commits at least once a second, at every epoch end and at every
  event (a pause, a warning), so a crash loses at most the last uncommitted second, while a fast
  training loop pays a list append per step.
- A heartbeat thread stamps the database every second, so a reader can tell a live writer from a
  dead one even while the trainer is inside a long computation that yields no records.
- Nothing is pickled: rows are numbers, JSON text and float64 blobs, so reading a session never runs
  code. Session names are plain names and cannot escape the sessions folder.
"""

from __future__ import annotations

import json
import os
import re
import socket
import sqlite3
import threading
import time
from array import array
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

from engine.records import (
    FAILED,
    INTERRUPTED,
    RUNNING,
    Alignment,
    CurvatureMeasured,
    EpochEnded,
    EventLogged,
    StepMeasured,
)

SCHEMA_VERSION = 1
APPLICATION_ID = 0x53475741  # "SGWA": marks a file as an sgdwalk session
DB_NAME = "session.sqlite"
HEARTBEAT_INTERVAL = 1.0
HEARTBEAT_STALE = 10.0  # seconds without a heartbeat after which a "running" writer is dead
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")

_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE steps (
    step INTEGER PRIMARY KEY, epoch INTEGER NOT NULL, lr REAL, batch_size INTEGER,
    batch_loss REAL, elapsed REAL, grad_norm REAL, slice BLOB, barrier INTEGER,
    barrier_height REAL, floor_loss REAL, floor_alpha REAL, interior_min INTEGER,
    height_above_floor REAL, step_norm REAL, dist_from_init REAL, grad_cos REAL, update_cos REAL
);
CREATE INDEX steps_epoch ON steps(epoch);
CREATE TABLE epochs (
    epoch INTEGER PRIMARY KEY, steps INTEGER, train_loss REAL, train_acc REAL, val_loss REAL,
    val_acc REAL, barriers INTEGER, interior_min_fraction REAL
);
CREATE TABLE curvature (
    id INTEGER PRIMARY KEY, step INTEGER, epoch INTEGER, eigenvalues TEXT, residuals TEXT,
    hvps INTEGER, alignment TEXT
);
CREATE TABLE events (
    id INTEGER PRIMARY KEY, step INTEGER, epoch INTEGER, level TEXT, kind TEXT, message TEXT,
    time REAL
);
"""

_STEP_COLS = [
    "step",
    "epoch",
    "lr",
    "batch_size",
    "batch_loss",
    "elapsed",
    "grad_norm",
    "slice",
    "barrier",
    "barrier_height",
    "floor_loss",
    "floor_alpha",
    "interior_min",
    "height_above_floor",
    "step_norm",
    "dist_from_init",
    "grad_cos",
    "update_cos",
]
# Measured fields SQLite would turn from NaN into NULL; read back as NaN when the step has a slice.
_NAN_WHEN_MEASURED = {
    "grad_norm", "barrier_height", "floor_loss", "floor_alpha", "height_above_floor",
    "step_norm", "dist_from_init",
}  # fmt: skip
_EPOCH_COLS = [
    "epoch", "steps", "train_loss", "train_acc", "val_loss", "val_acc", "barriers",
    "interior_min_fraction",
]  # fmt: skip


class SessionError(Exception):
    """A session cannot be created or opened; the message is one line for the user."""


def interpolation_alphas(k: int) -> list[float]:
    """α_j = j/K for j = 0..K (SPEC "Interpolation slice")."""
    return [j / k for j in range(k + 1)]


def check_session_name(name: str) -> str:
    if not _NAME_RE.match(name) or ".." in name:
        raise SessionError(
            f"invalid session name {name!r}: use letters, digits, '.', '_' and '-' "
            "(no '/', no '..', at most 128 characters)"
        )
    return name


def session_dir(sessions_dir: Path, name: str) -> Path:
    return Path(sessions_dir) / check_session_name(name)


# ---------------------------------------------------------------- rows <-> records


def _blob(values: list[float] | None) -> bytes | None:
    return None if values is None else array("d", values).tobytes()


def _unblob(blob: bytes | None) -> list[float] | None:
    if blob is None:
        return None
    a = array("d")
    a.frombytes(blob)
    return a.tolist()


def _step_row(r: StepMeasured) -> tuple:
    return (
        r.step, r.epoch, r.lr, r.batch_size, r.batch_loss, r.elapsed, r.grad_norm,
        _blob(r.slice), None if r.barrier is None else int(r.barrier), r.barrier_height,
        r.floor_loss, r.floor_alpha, None if r.interior_min is None else int(r.interior_min),
        r.height_above_floor, r.step_norm, r.dist_from_init, r.grad_cos, r.update_cos,
    )  # fmt: skip


def _step_from_row(row: sqlite3.Row) -> StepMeasured:
    d = dict(zip(_STEP_COLS, row, strict=True))
    sl = _unblob(d["slice"])
    d["slice"] = sl
    if d["batch_loss"] is None:
        d["batch_loss"] = float("nan")
    if sl is not None:
        d["alphas"] = interpolation_alphas(len(sl) - 1)
        d["barrier"] = bool(d["barrier"])
        d["interior_min"] = bool(d["interior_min"])
        for key in _NAN_WHEN_MEASURED:
            if d[key] is None:
                d[key] = float("nan")
    return StepMeasured(**d)


def _epoch_from_row(row: sqlite3.Row) -> EpochEnded:
    d = dict(zip(_EPOCH_COLS, row, strict=True))
    for key in ("train_loss", "train_acc", "val_loss", "val_acc", "interior_min_fraction"):
        if d[key] is None:
            d[key] = float("nan")
    return EpochEnded(**d)


def _curvature_from_row(row: sqlite3.Row) -> CurvatureMeasured:
    _, step, epoch, eig, res, hvps, align = row
    return CurvatureMeasured(
        step=step,
        epoch=epoch,
        eigenvalues=json.loads(eig),
        residuals=json.loads(res),
        hvps=hvps,
        alignment=[Alignment(**a) for a in json.loads(align)],
    )


def _event_from_row(row: sqlite3.Row) -> EventLogged:
    _, step, epoch, level, kind, message, t = row
    return EventLogged(step=step, epoch=epoch, level=level, kind=kind, message=message, time=t)


def _json(value: Any) -> str:
    # allow_nan keeps NaN/inf eigenvalues of a diverged model readable by Python's json.
    return json.dumps(value, allow_nan=True)


# ---------------------------------------------------------------- writer


def _connect(path: Path, timeout: float = 10.0) -> sqlite3.Connection:
    con = sqlite3.connect(str(path), timeout=timeout, isolation_level=None, check_same_thread=False)
    con.execute(f"PRAGMA busy_timeout={int(timeout * 1000)}")
    return con


class _Heartbeat(threading.Thread):
    """Stamps ``meta.heartbeat`` every second on its own connection until stopped."""

    def __init__(self, db: Path):
        super().__init__(name="sgdwalk-heartbeat", daemon=True)
        self._db = db
        self._stop_event = threading.Event()

    def run(self) -> None:
        con = _connect(self._db)
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
        self._con = _connect(self.db)
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
        for stmt in _SCHEMA.strip().split(";"):
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
            self._steps.append(_step_row(rec))
        elif isinstance(rec, EpochEnded):
            self._other.append(("epochs", tuple(getattr(rec, c) for c in _EPOCH_COLS)))
            self.commit()
            return
        elif isinstance(rec, CurvatureMeasured):
            row = (
                rec.step, rec.epoch, _json(rec.eigenvalues), _json(rec.residuals), rec.hvps,
                _json([asdict(a) for a in rec.alignment]),
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
                    f"INSERT OR REPLACE INTO steps VALUES ({','.join('?' * len(_STEP_COLS))})",
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


# ---------------------------------------------------------------- reader


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
            yield _step_from_row(row)

    def step(self, step: int) -> StepMeasured | None:
        row = self._con.execute("SELECT * FROM steps WHERE step = ?", (step,)).fetchone()
        return None if row is None else _step_from_row(row)

    def epoch_steps(self, epoch: int) -> Iterator[StepMeasured]:
        for row in self._con.execute("SELECT * FROM steps WHERE epoch=? ORDER BY step", (epoch,)):
            yield _step_from_row(row)

    def epochs(self) -> Iterator[EpochEnded]:
        for row in self._con.execute("SELECT * FROM epochs ORDER BY epoch"):
            yield _epoch_from_row(row)

    def curvature(self) -> Iterator[CurvatureMeasured]:
        for row in self._con.execute("SELECT * FROM curvature ORDER BY id"):
            yield _curvature_from_row(row)

    def events(self) -> Iterator[EventLogged]:
        for row in self._con.execute("SELECT * FROM events ORDER BY id"):
            yield _event_from_row(row)

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
                rec = _step_from_row(row)
                last["steps"] = rec.step
                keyed.append(((rec.step, 0), rec))
            for row in con.execute("SELECT * FROM epochs WHERE epoch > ?", (last["epochs"],)):
                ep = _epoch_from_row(row)
                last["epochs"] = max(last["epochs"], ep.epoch)
                keyed.append(((ep.steps, 1), ep))
            for row in con.execute("SELECT * FROM curvature WHERE id > ?", (last["curvature"],)):
                last["curvature"] = row[0]
                cm = _curvature_from_row(row)
                keyed.append(((cm.step, 2), cm))
            for row in con.execute("SELECT * FROM events WHERE id > ?", (last["events"],)):
                last["events"] = row[0]
                ev = _event_from_row(row)
                keyed.append(((ev.step, 3), ev))
        finally:
            con.execute("COMMIT")
        keyed.sort(key=lambda kv: kv[0])
        return [rec for _, rec in keyed]


def _open_checked(db: Path) -> sqlite3.Connection:
    if not db.is_file():
        raise SessionError(f"no session at {db.parent} (expected {db.name} there)")
    try:
        con = _connect(db, timeout=5.0)
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
