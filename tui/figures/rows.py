"""The numbers behind each figure, as csv and json rows (``sgdwalk export --format csv|json``).

Why this shape: one flat row per step (per epoch for barriers, per curvature record and batch size
for alignment), derived from the record's fields (``record_row``: a new field is a new column with
no change here), with the slice spread over columns L_0..L_K, so ``pandas.read_csv(path)`` and
``pandas.read_json(path)`` read a file without arguments. Floats are written with ``repr``, the
shortest text that reads back as the same float, so a round trip through csv is exact. JSON is
strict (NaN and ±inf become null, as JSON has no such numbers); csv keeps them as nan/inf.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
from collections.abc import Sequence
from typing import Any


def record_row(rec: Any, only: Sequence[str] | None = None, **front: Any) -> dict[str, Any]:
    """One flat row of a record, derived from its fields: ``front`` first, then the scalar
    fields in order, then each list field spread over its columns (``L_0..L_K``); fields that are
    not stored (derived, such as the α grid) and nested records are left out. ``only`` keeps
    just the named fields."""
    row: dict[str, Any] = dict(front)
    spread: dict[str, Any] = {}
    for f in dataclasses.fields(rec):
        if not f.metadata.get("stored", True) or (only is not None and f.name not in only):
            continue
        value = getattr(rec, f.name)
        pattern = f.metadata.get("columns")
        if pattern is not None:
            spread.update((pattern.format(j=j, i=j + 1), v) for j, v in enumerate(value or []))
        elif not isinstance(value, list):
            row[f.name] = value
    return row | spread


def _columns(rows: list[dict[str, Any]]) -> list[str]:
    cols: dict[str, None] = {}
    for row in rows:
        cols.update(dict.fromkeys(row))
    return list(cols)


def _csv_cell(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return repr(v)  # shortest text that reads back as the same float
    return str(v)


def write_csv(rows: list[dict[str, Any]]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    cols = _columns(rows)
    w.writerow(cols)
    for row in rows:
        w.writerow([_csv_cell(row.get(c)) for c in cols])
    return buf.getvalue()


def _json_value(v: Any) -> Any:
    return None if isinstance(v, float) and not math.isfinite(v) else v


def write_json(rows: list[dict[str, Any]]) -> str:
    """A list of row objects, one per line (``pandas.read_json`` reads it as a table)."""
    cols = _columns(rows)
    lines = [
        json.dumps({c: _json_value(row.get(c)) for c in cols}, allow_nan=False) for row in rows
    ]
    return "[\n" + ",\n".join(lines) + "\n]\n"
