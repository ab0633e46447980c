"""Reading a session, live or finished: records, liveness from the heartbeat, follow().

Everything read is checked at this boundary, once: the file's marks and tables when it opens, the
meta values (config, info, status, times) as they are read, and every row as it becomes a record
(``Table.record_of``). A damaged or foreign file is a one-line ``SessionError`` naming the session
and what is wrong, never a raw ``sqlite3``, JSON or type error.

Opening a file (its marks, read-only places) is ``sgdwalk.session.opening``.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Self

from sgdwalk.errors import SessionError
from sgdwalk.records import (
    INTERRUPTED,
    RUNNING,
    STATUSES,
    CurvatureMeasured,
    EpochEnded,
    EventLogged,
    Record,
    StepMeasured,
)
from sgdwalk.session import liveness
from sgdwalk.session.naming import sessions_folder
from sgdwalk.session.opening import READ_ERRORS, open_checked
from sgdwalk.session.schema import (
    DB_NAME,
    TABLES,
    Damaged,
    Table,
    check_session_name,
)


class SessionFile:
    """The file layer of a session: its checked connection, meta and validated rows."""

    def __init__(self, db: Path):
        self.db = db
        self.path = db.parent
        self.name = db.parent.name
        self._con = open_checked(db)
        try:
            self._columns = {name: self._table_columns(t) for name, t in TABLES.items()}
            meta = self._meta()
            self.config: dict[str, Any] = _json_object(meta, "config")
            self.info: dict[str, Any] = _json_object(meta, "info")
            self.started_at = _number(meta, "started_at")
            if meta.get("status") not in STATUSES:
                raise SessionError(f"status holds {meta.get('status')!r}")
        except (SessionError, *READ_ERRORS) as e:
            self._con.close()
            raise self._damaged(e) from None

    def _damaged(self, e: BaseException | str) -> SessionError:
        return SessionError(f"session {self.name} at {self.path} is damaged: {e}")

    def _table_columns(self, table: Table) -> list[str]:
        """The record's stored fields this file's table has (a newer writer's extras ignored)."""
        present = [row[1] for row in self._con.execute(f"PRAGMA table_info({table.name})")]
        if not present:
            raise SessionError(f"it has no {table.name} table")
        missing = [c.name for c in table.columns if c.required and c.name not in present]
        if table.key is None and "id" not in present:
            missing.insert(0, "id")
        if missing:
            raise SessionError(f"its {table.name} table lacks {', '.join(missing)}")
        return [c.name for c in table.columns if c.name in present]

    def _meta(self) -> dict[str, str]:
        try:
            rows = self._con.execute("SELECT key, value FROM meta").fetchall()
        except READ_ERRORS as e:
            raise self._damaged(e) from None
        return {str(k): v for k, v in rows}

    def close(self) -> None:
        self._con.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def _rows(self, table: str, where: str = "", args: tuple[Any, ...] = (),
              order: str = "") -> Iterator[tuple[int, Any]]:  # fmt: skip
        """(cursor, record) for each row: the cursor is the key, or the row id."""
        t = TABLES[table]
        names = self._columns[table]
        select = ([] if t.key else ["id"]) + names
        sql = f"SELECT {', '.join(select)} FROM {t.name} {where} {order}"
        try:
            for row in self._con.execute(sql, args):
                values = row if t.key else row[1:]
                try:
                    rec = t.record_of(names, values)
                except (Damaged, TypeError) as e:
                    key = row[0] if not t.key or t.key not in names else values[names.index(t.key)]
                    raise self._damaged(f"{t.name} row {key}: {e}") from None
                yield (getattr(rec, t.key) if t.key else row[0]), rec
        except READ_ERRORS as e:
            raise self._damaged(e) from None

    def _scalar(self, sql: str) -> int:
        try:
            value = self._con.execute(sql).fetchone()[0]
        except READ_ERRORS as e:
            raise self._damaged(e) from None
        if not isinstance(value, int):
            raise self._damaged(f"{sql!r} gave {value!r}")
        return value

    @contextlib.contextmanager
    def _snapshot(self) -> Iterator[None]:
        """One read transaction: every table as of one commit."""
        try:
            self._con.execute("BEGIN")
        except READ_ERRORS as e:
            raise self._damaged(e) from None
        try:
            yield
        finally:
            with contextlib.suppress(sqlite3.Error):
                self._con.execute("COMMIT")

    # -- counts over the steps

    def step_count(self) -> int:
        return self._scalar("SELECT COUNT(*) FROM steps")

    def last_step(self) -> int:
        return self._scalar("SELECT COALESCE(MAX(step), 0) FROM steps")

    def barrier_count(self) -> int:
        return self._scalar("SELECT COUNT(*) FROM steps WHERE barrier = 1")

    def measured_count(self) -> int:
        """Steps with a slice (all of them, unless some were left unmeasured)."""
        return self._scalar("SELECT COUNT(*) FROM steps WHERE slice IS NOT NULL")

    def lr_range(self) -> tuple[float | None, float | None]:
        """The steps' largest learning rate and the last step's (None: no finite one): what a
        schedule did, where the config holds only the first step's (a warm-up's)."""
        try:
            peak, last = self._con.execute(
                "SELECT MAX(lr), (SELECT lr FROM steps ORDER BY step DESC LIMIT 1) FROM steps"
            ).fetchone()
        except READ_ERRORS as e:
            raise self._damaged(e) from None
        return tuple(  # type: ignore[return-value]
            float(v) if isinstance(v, int | float) and math.isfinite(v) else None
            for v in (peak, last))  # fmt: skip

    def interior_count(self) -> int:
        """Measured steps whose slice has an interior minimum."""
        return self._scalar("SELECT COUNT(*) FROM steps WHERE interior_min = 1")


class Session(SessionFile):
    """A read-only view of a session, live or finished (see ``open_session``)."""

    # -- liveness

    @property
    def stored_status(self) -> str:
        status = self._meta().get("status")
        if status not in STATUSES:
            raise self._damaged(f"status holds {status!r}")
        return str(status)

    @property
    def message(self) -> str:
        return str(self._meta().get("message") or "")

    @property
    def heartbeat_age(self) -> float:
        """Seconds since the writer's last heartbeat (inf when unreadable)."""
        return liveness.heartbeat_age(self._meta())

    @property
    def pid(self) -> int | None:
        """The writer's process id, when it ran on this host."""
        return liveness.local_pid(self._meta())

    def writer_pid(self) -> int | None:
        """The pid of the process writing this session, if it runs on this machine now (and
        started before the session, so it is no unrelated process that reused the pid)."""
        pid = self.pid
        if pid is None or pid <= 0 or not self.alive:
            return None
        return pid if liveness.started_by(pid, self.started_at + 1.0) else None

    @property
    def alive(self) -> bool:
        """True while a writer process is running this session (``sgdwalk.session.liveness``)."""
        return self.stored_status == RUNNING and liveness.alive(self._meta())

    @property
    def status(self) -> str:
        """running, finished, interrupted, diverged or failed; a dead writer reads as interrupted."""
        stored = self.stored_status
        if stored == RUNNING and not self.alive:
            return INTERRUPTED
        return stored

    @property
    def phase(self) -> dict[str, Any] | None:
        """The long computation the writer is in (``{"phase", "done", "total", "step", "since"}``)
        as its heartbeat last stamped it; None when there is none."""
        raw = self._meta().get("phase")
        if not raw:
            return None
        try:
            value = json.loads(raw)
        except ValueError:
            return None
        return value if isinstance(value, dict) and "phase" in value else None

    # -- records

    def steps(self, start: int | None = None, stop: int | None = None) -> Iterator[StepMeasured]:
        """Steps with ``start <= step < stop`` in order (None: unbounded)."""
        lo = -1 if start is None else min(max(start, -1), 2**62)
        hi = 2**62 if stop is None else min(stop, 2**62)
        where = "WHERE step >= ? AND step < ?"
        for _, rec in self._rows("steps", where, (lo, hi), "ORDER BY step"):
            yield rec

    def latest_measured(self, n: int) -> list[StepMeasured]:
        """The last ``n`` steps that have a slice, oldest first (one indexed query)."""
        order = "ORDER BY step DESC LIMIT ?"
        rows = self._rows("steps", "WHERE slice IS NOT NULL", (min(max(n, 0), 2**62),), order)
        return [rec for _, rec in rows][::-1]

    def step(self, step: int) -> StepMeasured | None:
        return next(self.steps(step, step + 1), None) if -1 <= step < 2**62 else None

    def epoch_steps(self, epoch: int) -> Iterator[StepMeasured]:
        if not -(2**62) < epoch < 2**62:
            return
        for _, rec in self._rows("steps", "WHERE epoch = ?", (epoch,), "ORDER BY step"):
            yield rec

    def epochs(self) -> Iterator[EpochEnded]:
        for _, rec in self._rows("epochs", order="ORDER BY epoch"):
            yield rec

    def curvature(self) -> Iterator[CurvatureMeasured]:
        for _, rec in self._rows("curvature", order="ORDER BY id"):
            yield rec

    def events(self) -> Iterator[EventLogged]:
        for _, rec in self._rows("events", order="ORDER BY id"):
            yield rec

    def follow(self, poll: float = 0.25, idle_timeout: float | None = None) -> Iterator[Record]:
        """Yield every record, then new ones as a live writer commits them, in step order.

        Ends once the writer has finished (or died) and everything it committed was yielded, or
        after ``idle_timeout`` seconds without a new record.
        """
        last = {name: -(2**62) for name in TABLES}
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

    def _new_records(self, last: dict[str, int]) -> list[Record]:
        """Rows committed since ``last`` (per table), in one snapshot, ordered by step."""
        keyed: list[tuple[tuple[int, int], Record]] = []
        with self._snapshot():
            for name, t in TABLES.items():
                where = f"WHERE {t.cursor} > ?"
                for key, rec in self._rows(name, where, (last[name],), f"ORDER BY {t.cursor}"):
                    last[name] = key
                    keyed.append(((getattr(rec, t.order), t.rank), rec))
        keyed.sort(key=lambda kv: kv[0])
        return [rec for _, rec in keyed]


def _json_object(meta: dict[str, Any], key: str) -> dict[str, Any]:
    try:
        value = json.loads(meta[key])
    except KeyError:
        raise SessionError(f"meta has no {key}") from None
    except (TypeError, ValueError):
        raise SessionError(f"meta {key} is not JSON") from None
    if not isinstance(value, dict):
        raise SessionError(f"meta {key} is not a JSON object")
    return value


def _number(meta: dict[str, Any], key: str) -> float:
    try:
        value = float(meta[key])
    except KeyError:
        raise SessionError(f"meta has no {key}") from None
    except (TypeError, ValueError):
        raise SessionError(f"meta {key} is not a number") from None
    if not math.isfinite(value):
        raise SessionError(f"meta {key} is not a finite number")
    return value


def resolve_session(spec: str | os.PathLike[str], sessions_dir: Path | None = None) -> Path:
    """The database of a session given as a name in ``sessions_dir``, a folder, or its file.

    A bare name is looked up in the sessions folder first, so a folder of the same name in the
    current directory cannot hide it when a sessions folder is given.
    """
    text = str(spec)
    if sessions_dir is not None and os.sep not in text and text not in ("", ".", ".."):
        candidate = Path(sessions_dir) / check_session_name(text) / DB_NAME
        if candidate.is_file():
            return candidate
    p = Path(spec)
    if text and p.is_file():
        return p
    if text and p.is_dir():
        return p / DB_NAME
    where = f"in {sessions_dir}" if sessions_dir is not None else "here"
    raise SessionError(f"no session {text!r} (not a name {where}, a folder or a file)")


def open_session(spec: str | os.PathLike[str], sessions_dir: Path | None = None) -> Session:
    """Open a session for reading: ``open_session("NAME")`` looks in the sessions folder
    (``$SGDWALK_SESSIONS`` or ``./sessions``); a folder or its ``session.sqlite`` works too."""
    return Session(resolve_session(spec, sessions_folder(sessions_dir)))


def list_sessions(
    sessions_dir: str | os.PathLike[str] | None = None,
) -> tuple[list[Session], list[tuple[Path, str]]]:
    """The readable sessions in ``sessions_dir`` (``$SGDWALK_SESSIONS`` or ``./sessions`` by
    default, as ``open_session``), newest first, and the unreadable ones with the reason
    (damaged, foreign, another schema version)."""
    good, bad = [], []
    for db in sorted(sessions_folder(sessions_dir).glob(f"*/{DB_NAME}")):
        try:
            good.append(Session(db))
        except SessionError as e:
            bad.append((db.parent, str(e)))
    good.sort(key=lambda s: s.started_at, reverse=True)
    return good, bad
