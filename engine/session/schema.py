"""What a session file holds: the schema, its marks, names, and rows <-> records.

Shared by the writer and the reader so both agree on one layout; nothing here opens a run.
"""

from __future__ import annotations

import json
import re
import sqlite3
from array import array
from pathlib import Path
from typing import Any

from sgdwalk.records import Alignment, CurvatureMeasured, EpochEnded, EventLogged, StepMeasured

SCHEMA_VERSION = 1
APPLICATION_ID = 0x53475741  # "SGWA": marks a file as an sgdwalk session
DB_NAME = "session.sqlite"
HEARTBEAT_INTERVAL = 1.0
HEARTBEAT_STALE = 10.0  # seconds without a heartbeat after which a "running" writer is dead
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")

SCHEMA = """
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

STEP_COLS = [
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
EPOCH_COLS = [
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


def _blob(values: list[float] | None) -> bytes | None:
    return None if values is None else array("d", values).tobytes()


def _unblob(blob: bytes | None) -> list[float] | None:
    if blob is None:
        return None
    a = array("d")
    a.frombytes(blob)
    return a.tolist()


def step_row(r: StepMeasured) -> tuple:
    return (
        r.step, r.epoch, r.lr, r.batch_size, r.batch_loss, r.elapsed, r.grad_norm,
        _blob(r.slice), None if r.barrier is None else int(r.barrier), r.barrier_height,
        r.floor_loss, r.floor_alpha, None if r.interior_min is None else int(r.interior_min),
        r.height_above_floor, r.step_norm, r.dist_from_init, r.grad_cos, r.update_cos,
    )  # fmt: skip


def step_from_row(row: sqlite3.Row) -> StepMeasured:
    d = dict(zip(STEP_COLS, row, strict=True))
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


def epoch_from_row(row: sqlite3.Row) -> EpochEnded:
    d = dict(zip(EPOCH_COLS, row, strict=True))
    for key in ("train_loss", "train_acc", "val_loss", "val_acc", "interior_min_fraction"):
        if d[key] is None:
            d[key] = float("nan")
    return EpochEnded(**d)


def curvature_from_row(row: sqlite3.Row) -> CurvatureMeasured:
    _, step, epoch, eig, res, hvps, align = row
    return CurvatureMeasured(
        step=step,
        epoch=epoch,
        eigenvalues=json.loads(eig),
        residuals=json.loads(res),
        hvps=hvps,
        alignment=[Alignment(**a) for a in json.loads(align)],
    )


def event_from_row(row: sqlite3.Row) -> EventLogged:
    _, step, epoch, level, kind, message, t = row
    return EventLogged(step=step, epoch=epoch, level=level, kind=kind, message=message, time=t)


def to_json(value: Any) -> str:
    # allow_nan keeps NaN/inf eigenvalues of a diverged model readable by Python's json.
    return json.dumps(value, allow_nan=True)


def connect(path: Path, timeout: float = 10.0) -> sqlite3.Connection:
    con = sqlite3.connect(str(path), timeout=timeout, isolation_level=None, check_same_thread=False)
    con.execute(f"PRAGMA busy_timeout={int(timeout * 1000)}")
    return con
