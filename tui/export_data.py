"""The numbers behind each figure, as csv and json rows (``sgdwalk export --format csv|json``).

Why this shape: one flat row per step (per epoch for barriers, per curvature record and batch size
for alignment), with the slice spread over columns L_0..L_K, so ``pandas.read_csv(path)`` and
``pandas.read_json(path)`` read a file without arguments. Floats are written with ``repr``, the
shortest text that reads back as the same float, so a round trip through csv is exact. JSON is
strict (NaN and ±inf become null, as JSON has no such numbers); csv keeps them as nan/inf.
"""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import asdict
from typing import Any

from sgdwalk.records import StepMeasured

_STEP_FIELDS = [
    "step", "epoch", "lr", "batch_size", "batch_loss", "elapsed", "grad_norm", "barrier",
    "barrier_height", "floor_loss", "floor_alpha", "interior_min", "height_above_floor",
    "step_norm", "dist_from_init", "grad_cos", "update_cos",
]  # fmt: skip
_ALIGN_SCALARS = [
    "batch_size", "samples", "subspace_mean", "subspace_std", "rayleigh_mean", "rayleigh_std",
    "full_cos_mean", "full_cos_std",
]  # fmt: skip


def step_row(name: str, r: StepMeasured) -> dict[str, Any]:
    row: dict[str, Any] = {"session": name}
    row.update((f, getattr(r, f)) for f in _STEP_FIELDS)
    for j, v in enumerate(r.slice or []):
        row[f"L_{j}"] = v
    return row


def _slices_rows(d: Any) -> list[dict[str, Any]]:
    return [step_row(d.name, r) for r in d.steps]


def _cosine_rows(d: Any) -> list[dict[str, Any]]:
    return [{"session": d.name, "step": r.step, "epoch": r.epoch, "grad_cos": r.grad_cos,
             "update_cos": r.update_cos} for r in d.steps]  # fmt: skip


def _loss_rows(d: Any) -> list[dict[str, Any]]:
    ends = {e.steps: e for e in d.epochs}
    rows = []
    for r in d.steps:
        e = ends.get(r.step)
        row = {"session": d.name, "step": r.step, "epoch": r.epoch, "batch_loss": r.batch_loss}
        for key in ("train_loss", "train_acc", "val_loss", "val_acc"):
            row[key] = None if e is None else getattr(e, key)
        rows.append(row)
    return rows


def _barrier_rows(d: Any) -> list[dict[str, Any]]:
    rows, total = [], 0
    for e in d.epochs:
        total += e.barriers
        rows.append({"session": d.name, **asdict(e), "total_barriers": total})
    return rows


def _alignment_rows(d: Any) -> list[dict[str, Any]]:
    rows = []
    for c in d.curvature:
        for a in c.alignment:
            row: dict[str, Any] = {"session": d.name, "step": c.step, "epoch": c.epoch}
            row.update((k, getattr(a, k)) for k in _ALIGN_SCALARS)
            row.update((f"eig_cos_mean_{i + 1}", v) for i, v in enumerate(a.eig_cos_mean))
            row.update((f"eig_cos_std_{i + 1}", v) for i, v in enumerate(a.eig_cos_std))
            rows.append(row)
    return rows


_ROWS = {"slices": _slices_rows, "cosine": _cosine_rows, "loss": _loss_rows,
         "barriers": _barrier_rows, "alignment": _alignment_rows}  # fmt: skip


def figure_rows(figure: str, data: list[Any], metric: str = "subspace") -> list[dict[str, Any]]:
    """Rows of every session's data of one figure (``metric`` is drawn; all metrics are kept)."""
    return [row for d in data for row in _ROWS[figure](d)]


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
