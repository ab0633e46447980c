"""Tables for ``sgdwalk ls`` and ``sgdwalk bench``.

A sessions folder is shared ground: one damaged or foreign file must not hide the others, so every
good session is listed and each bad one gets one line saying why. Everything read from a session
(names, statuses, config values) is shown as plain text (``sgdwalk.tui.text.plain``), with Rich
markup off, so a file cannot style or clear the terminal.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from sgdwalk.errors import SessionError, UsageError
from sgdwalk.session import Session, list_sessions
from sgdwalk.shares import share
from sgdwalk.tui.text import optimizer_of, plain, share_text

COLUMNS = ("name", "model", "dataset", "optimizer", "lr", "batch", "steps", "status", "barriers",
           "interior min", "final loss", "edge")  # fmt: skip
NUMERIC = {"lr", "steps", "barriers", "interior min", "final loss", "edge"}


def _batch_size(value: Any) -> int | str | None:
    """The configured batch size as a number ("full" stays a word)."""
    if isinstance(value, str) and value.isdigit():
        return int(value)
    return value if isinstance(value, int | str) else None


def _recorded_batch(s: Session) -> int | None:
    """The batch size the first step recorded (a Walker given no ``batch_size``; 0: unknown)."""
    steps = s.steps()
    first = next(steps, None)
    steps.close()
    return first.batch_size if first is not None and first.batch_size > 0 else None


def session_summary(s: Session) -> dict[str, Any]:
    cfg = s.config
    epochs = list(s.epochs())
    last = s.step(s.last_step())
    final_loss = epochs[-1].train_loss if epochs else (last.batch_loss if last else None)
    batch = _batch_size(cfg.get("batch_size"))
    n, m = s.step_count(), s.measured_count()
    peak, last = s.lr_range()
    sh = share(s.interior_count(), m, n)
    return {
        "name": s.name,
        "model": cfg.get("model"),
        "dataset": cfg.get("dataset"),
        "optimizer": optimizer_of(cfg),
        "lr": cfg.get("lr"),
        "lr_peak": peak,
        "lr_last": last,
        "batch_size": batch if batch is not None else _recorded_batch(s),
        "steps": s.step_count(),
        "status": s.status,
        "barriers": s.barrier_count(),
        "interior_min_fraction": _number(sh.value),
        "interior_min_low": _number(sh.low),
        "interior_min_high": _number(sh.high),
        "measured_steps": m,
        "final_loss": final_loss if final_loss is None or math.isfinite(final_loss) else None,
        "edge_ratio": _edge(s),
        "started": s.started_at,
        "path": str(s.path),
    }


def _number(v: float | None) -> float | None:
    return v if v is not None and math.isfinite(v) else None


def _edge(s: Session) -> float | None:
    """The last curvature pass's sharpness over the optimizer's edge of stability, as it
    recorded it (sessions from before that: λ1 over SGD's threshold; None: no curvature)."""
    from sgdwalk.sharpness import edge_ratio

    last = None
    for last in s.curvature():  # noqa: B007 - the last one
        pass
    if last is not None and last.edge_ratio is not None:
        return _number(last.edge_ratio)
    if last is not None and last.edge_line is not None:
        return None  # an optimizer whose edge is not known: no line, never a wrong one
    cfg = s.config
    if optimizer_of(cfg) != "sgd":  # SGD's ratio for another optimizer would be a wrong line
        return None
    lr, beta, wd = cfg.get("lr"), cfg.get("momentum") or 0.0, cfg.get("weight_decay") or 0.0
    numbers = all(isinstance(v, int | float) for v in (lr, beta, wd))
    if last is None or not last.eigenvalues or not numbers or not lr or lr <= 0:
        return None
    ratio = edge_ratio(last.eigenvalues[0], float(lr), float(beta), float(wd))
    return ratio if math.isfinite(ratio) else None


def summaries(sessions_dir: Path) -> tuple[list[dict[str, Any]], list[tuple[str, str]]]:
    """Rows of the readable sessions, newest first, and (folder, reason) of the others."""
    if not sessions_dir.is_dir():
        raise UsageError(f"no sessions folder at {sessions_dir}")
    good, bad = list_sessions(sessions_dir)
    rows, damaged = [], [(p.name, why) for p, why in bad]
    for s in good:
        try:
            with s:
                rows.append(session_summary(s))
        except SessionError as e:  # damage found past the header: a table, a row
            damaged.append((s.name, str(e)))
    return rows, sorted(damaged)


def _cell(key: str, value: Any) -> Text:
    if value is None:
        return Text("-")
    if key == "lr" and isinstance(
        value, tuple
    ):  # (config, peak, last): the steps' when they differ
        first, peak, last = value
        if peak is not None and last is not None and (peak != last or peak != first):
            return Text(f"{peak:.3g}/{last:.3g}" if peak != last else f"{peak:.3g}")
        value = first
    if key == "lr" and isinstance(value, int | float):
        return Text(f"{value:g}")
    if key == "final_loss" and isinstance(value, int | float):
        return Text(f"{value:.4f}")
    if key == "edge_ratio" and isinstance(value, int | float):
        return Text(f"{value:.2f}")
    if key == "interior":
        return Text(share_text(*value))
    return Text(plain(value))


def print_sessions(sessions_dir: Path, as_json: bool) -> None:
    rows, damaged = summaries(sessions_dir)
    if as_json:
        out = rows + [{"name": name, "damaged": why} for name, why in damaged]
        print(json.dumps(out, indent=2, allow_nan=False, default=str))
        return
    console = Console(soft_wrap=True, markup=False, highlight=False)
    if not console.is_terminal:
        console.width = 200  # a pipe or a file gets whole names, not ellipses
    if not rows and not damaged:
        console.print(f"no sessions in {plain(sessions_dir)}")
        return
    if rows:
        table = Table(title=Text(f"sessions in {plain(sessions_dir)}"), title_justify="left")
        for col in COLUMNS:
            table.add_column(col, justify="right" if col in NUMERIC else "left")
        keys = ("name", "model", "dataset", "optimizer", "lr", "batch_size", "steps", "status",
                "barriers", "interior", "final_loss", "edge_ratio")  # fmt: skip
        for r in rows:
            r = r | {
                "lr": (r["lr"], r["lr_peak"], r["lr_last"]),
                "interior": [
                    r[k]
                    for k in (
                        "interior_min_fraction",
                        "interior_min_low",
                        "interior_min_high",
                        "measured_steps",
                        "steps",
                    )
                ],
            }
            table.add_row(*(_cell(k, r[k]) for k in keys))
        console.print(table)
    for name, why in damaged:
        console.print(Text(f"✖ {plain(name)}: {plain(why)}"), style="red")


def print_bench(result: dict[str, Any]) -> None:
    console = Console(soft_wrap=True, markup=False)
    table = Table(title=f"sgdwalk bench: {result['model']} on {result['dataset']}, "
                        f"{result['device']}, slice {result['slice_mode']}",
                  title_justify="left")  # fmt: skip
    table.add_column("measure")
    table.add_column("value", justify="right")
    table.add_column("target", justify="right")
    for key, value in result["times"].items():
        table.add_row(key, f"{value * 1e3:.3f} ms", "")
    for key, value in result["ratios"].items():
        target = result["targets"].get(key, "")
        table.add_row(key, f"{value:.3f}", str(target))
    for key, value in result.get("counts", {}).items():
        table.add_row(key, str(value), str(result["targets"].get(key, "")))
    console.print(table)
    if "shortcut" in result:
        console.print(f"first-layer shortcut {result['shortcut']}")
