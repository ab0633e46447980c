"""What a session file holds: tables derived from the records, their encoding, names and marks.

Why derived: ``sgdwalk.records`` is the one list of fields. Each stored record type is a ``Table``
whose columns, CREATE and INSERT statements, row encoder and validating decoder all come from
``dataclasses.fields`` of the record, so a new field is one line in ``records.py``. Shared by the
writer and the reader so both agree on one layout; nothing here opens a run.

Encoding: ints, floats and strings as themselves (SQLite stores NaN as NULL: a required float reads
NULL back as NaN, as does a measured step's float marked ``nan_when_measured``), bools as 0/1, a
step's slice as a float64 blob, other lists and nested records (alignment) as JSON text. Nothing
is pickled, so reading a session never runs code.

Validation happens here, once, as rows are read: a value of the wrong type, a blob of the wrong
length or a JSON field that is not what its record says raises ``Damaged``, which the reader turns
into a one-line ``SessionError`` naming the table, the row and the field.

Version policy: ``SCHEMA_VERSION`` changes only when an older reader would misread a file. A field
added to a record adds a nullable column: files without it open (the field reads as its default),
and readers select the columns they know by name and ignore others.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import sqlite3
import types
import typing
from array import array
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from sgdwalk.errors import SessionError
from sgdwalk.records import CurvatureMeasured, EpochEnded, EventLogged, StepMeasured

SCHEMA_VERSION = 1
APPLICATION_ID = 0x53475741  # "SGWA": marks a file as an sgdwalk session
DB_NAME = "session.sqlite"
HEARTBEAT_INTERVAL = 1.0
HEARTBEAT_STALE = 10.0  # seconds without a heartbeat after which a "running" writer is dead
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_SQL = {"int": "INTEGER", "bool": "INTEGER", "float": "REAL", "str": "TEXT", "floats": "BLOB",
        "records": "TEXT"}  # fmt: skip


class Damaged(ValueError):
    """A stored value is not what its record field says; the message names the field."""


# ---------------------------------------------------------------- columns from fields


@dataclass(frozen=True)
class Column:
    """One stored field: its SQL type and how it is encoded and checked."""

    name: str
    kind: str  # int, bool, float, str, floats (list[float]), records (list of a dataclass)
    optional: bool
    required: bool  # no default: a row must hold it
    nan_when_measured: bool
    item: Any = None  # the dataclass of a ``records`` list

    def encode(self, value: Any, blob: bool) -> Any:
        if value is None:
            return None
        if self.kind == "bool":
            return int(value)
        if self.kind == "floats":
            return array("d", value).tobytes() if blob else _json(value)
        if self.kind == "records":
            return _json([dataclasses.asdict(v) for v in value])
        return value

    def decode(self, value: Any) -> Any:
        """The field's value from what SQLite returned; ``Damaged`` when it cannot be."""
        if value is None:
            if self.kind == "float" and not self.optional:
                return math.nan  # SQLite stores NaN as NULL
            if self.optional or not self.required:
                return None
            raise Damaged(f"{self.name} is empty")
        decode = _DECODERS[self.kind]
        try:
            return decode(self, value)
        except (ValueError, TypeError, KeyError, OverflowError) as e:
            raise Damaged(f"{self.name} holds {_show(value)} ({e})") from None


def _json(value: Any) -> str:
    # allow_nan keeps NaN/inf (a diverged model's eigenvalues) readable by Python's json
    return json.dumps(value, allow_nan=True)


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _int(_c: Column, v: Any) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        raise TypeError("expected an integer")
    return v


def _bool(_c: Column, v: Any) -> bool:
    if v not in (0, 1) or isinstance(v, float):
        raise ValueError("expected 0 or 1")
    return bool(v)


def _float(_c: Column, v: Any) -> float:
    if isinstance(v, bool) or not isinstance(v, int | float):
        raise TypeError("expected a number")
    return float(v)


def _str(_c: Column, v: Any) -> str:
    if not isinstance(v, str):
        raise TypeError("expected text")
    return v


def _floats(_c: Column, v: Any) -> list[float]:
    if isinstance(v, bytes):
        if len(v) % 8:
            raise ValueError(f"a float64 blob of {len(v)} bytes")
        a = array("d")
        a.frombytes(v)
        return a.tolist()
    items = json.loads(v) if isinstance(v, str) else v
    if not isinstance(items, list):
        raise TypeError("expected a list of numbers")
    return [_float(_c, x) for x in items]


def _records(c: Column, v: Any) -> list[Any]:
    items = json.loads(v) if isinstance(v, str) else v
    if not isinstance(items, list) or not all(isinstance(x, dict) for x in items):
        raise TypeError(f"expected a list of {c.item.__name__} objects")
    cols = columns_of(c.item)
    out = []
    for d in items:
        values = {col.name: col.decode(d.get(col.name)) for col in cols if col.name in d
                  or col.required}  # fmt: skip
        out.append(c.item(**values))  # unknown keys (a newer writer's) are ignored
    return out


_DECODERS: dict[str, Callable[[Column, Any], Any]] = {
    "int": _int, "bool": _bool, "float": _float, "str": _str, "floats": _floats,
    "records": _records,
}  # fmt: skip


def _classify(tp: Any) -> tuple[str, bool, Any]:
    """(kind, optional, item dataclass) of a field's resolved type."""
    optional = False
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        members = [a for a in typing.get_args(tp) if a is not type(None)]
        optional = len(members) < len(typing.get_args(tp))
        (tp,) = members
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    simple = {bool: "bool", int: "int", float: "float", str: "str"}
    if tp in simple:
        return simple[tp], optional, None
    if origin is typing.Literal:
        return "str", optional, None
    if origin is list and args == (float,):
        return "floats", optional, None
    if origin is list and dataclasses.is_dataclass(args[0]):
        return "records", optional, args[0]
    raise TypeError(f"no session encoding for a field of type {tp!r}")


def columns_of(record: type) -> tuple[Column, ...]:
    """The stored columns of a record class, in field order."""
    if record not in _COLUMNS:
        hints = typing.get_type_hints(record)
        cols = []
        for f in dataclasses.fields(record):
            if not f.metadata.get("stored", True):
                continue
            kind, optional, item = _classify(hints[f.name])
            required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
            cols.append(Column(f.name, kind, optional, required,
                               bool(f.metadata.get("nan_when_measured")), item))  # fmt: skip
        _COLUMNS[record] = tuple(cols)
    return _COLUMNS[record]


_COLUMNS: dict[type, tuple[Column, ...]] = {}


# ---------------------------------------------------------------- tables


@dataclass(frozen=True)
class Table:
    """A record type stored in one table. ``key``: the field that is the primary key (None: an
    ``id`` column numbers the rows). ``order``/``rank`` place its records among the others'."""

    name: str
    record: type
    key: str | None
    order: str
    rank: int
    blob_lists: bool = False  # list[float] fields as float64 blobs (the slice) instead of JSON

    @cached_property
    def columns(self) -> tuple[Column, ...]:
        return columns_of(self.record)

    @property
    def cursor(self) -> str:
        """The column that tells which rows are new: the key, or the row id."""
        return self.key or "id"

    def create_sql(self) -> str:
        cols = [f"{c.name} {_SQL[c.kind]}" + (" PRIMARY KEY" if c.name == self.key else "")
                for c in self.columns]  # fmt: skip
        if self.key is None:
            cols.insert(0, "id INTEGER PRIMARY KEY")
        return f"CREATE TABLE {self.name} ({', '.join(cols)})"

    def insert_sql(self) -> str:
        names = [c.name for c in self.columns]
        verb = "INSERT OR REPLACE" if self.key else "INSERT"
        return f"{verb} INTO {self.name} ({', '.join(names)}) VALUES ({','.join('?' * len(names))})"

    def row(self, rec: Any) -> tuple[Any, ...]:
        return tuple(c.encode(getattr(rec, c.name), self.blob_lists) for c in self.columns)

    def record_of(self, names: Sequence[str], row: Sequence[Any]) -> Any:
        """The record of one row read as ``SELECT names``; ``Damaged`` if a value is wrong."""
        by_name = {c.name: c for c in self.columns}
        values = {n: by_name[n].decode(v) for n, v in zip(names, row, strict=True)}
        missing = [c.name for c in self.columns if c.required and c.name not in values]
        if missing:
            raise Damaged(f"no column {', '.join(missing)}")
        _measured_nans(self.columns, values)
        _paired(self.record, values)
        _derive(self.record, values)
        return self.record(**values)


def _measured_nans(cols: Sequence[Column], values: dict[str, Any]) -> None:
    """A measured step's NULL float was a NaN (SQLite cannot store NaN)."""
    if values.get("slice") is None:
        return
    for c in cols:
        if c.nan_when_measured and values.get(c.name) is None:
            values[c.name] = math.nan


def _paired(record: type, values: dict[str, Any]) -> None:
    """Lists read element by element together (a density's nodes and weights) are as long."""
    for f in dataclasses.fields(record):
        other = f.metadata.get("paired")
        if other is None:
            continue
        mine, theirs = values.get(f.name), values.get(other)
        if (mine is None) != (theirs is None) or len(mine or ()) != len(theirs or ()):
            raise Damaged(f"{f.name} and {other} are not as long")


def _derive(record: type, values: dict[str, Any]) -> None:
    """Fill the fields that are not stored from the ones they derive from."""
    for f in dataclasses.fields(record):
        source = f.metadata.get("from")
        if source is None:
            continue
        name, derive = source
        raw = values.get(name)
        if raw is None:
            values[f.name] = None
            continue
        try:
            values[f.name] = derive(raw)
        except ValueError as e:
            raise Damaged(f"{name} holds {len(raw)} values ({e})") from None


TABLES: dict[str, Table] = {
    t.name: t
    for t in (
        Table("steps", StepMeasured, key="step", order="step", rank=0, blob_lists=True),
        Table("epochs", EpochEnded, key="epoch", order="steps", rank=1),
        Table("curvature", CurvatureMeasured, key=None, order="step", rank=2),
        Table("events", EventLogged, key=None, order="step", rank=3),
    )
}
INDEXES = ("CREATE INDEX steps_epoch ON steps(epoch)",)
META_TABLE = "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)"


def table_for(rec: object) -> Table | None:
    """The table a record is stored in (None for transient records such as progress)."""
    for t in TABLES.values():
        if isinstance(rec, t.record):
            return t
    return None


# ---------------------------------------------------------------- names and files


def check_session_name(name: str) -> str:
    if not isinstance(name, str) or not _NAME.fullmatch(name) or ".." in name:
        raise SessionError(
            f"invalid session name {name!r}: use letters, digits, '.', '_' and '-' "
            "(no '/', no '..', at most 128 characters)"
        )
    return name


def session_dir(sessions_dir: Path, name: str) -> Path:
    return Path(sessions_dir) / check_session_name(name)


def connect(path: Path, timeout: float = 10.0, uri: bool = False) -> sqlite3.Connection:
    target = str(path)
    con = sqlite3.connect(target, timeout=timeout, isolation_level=None,
                          check_same_thread=False, uri=uri)  # fmt: skip
    con.execute(f"PRAGMA busy_timeout={int(timeout * 1000)}")
    return con
