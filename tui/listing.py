"""Tables for ``sgdwalk ls`` and ``sgdwalk bench``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table
from sgdwalk.session import Session, list_sessions


def session_summary(s: Session) -> dict[str, Any]:
    cfg = s.config
    epochs = list(s.epochs())
    last = s.step(s.last_step())
    final_loss = epochs[-1].train_loss if epochs else (last.batch_loss if last else None)
    return {
        "name": s.name,
        "model": cfg.get("model"),
        "dataset": cfg.get("dataset"),
        "lr": cfg.get("lr"),
        "batch_size": cfg.get("batch_size"),
        "steps": s.step_count(),
        "status": s.status,
        "barriers": s.barrier_count(),
        "final_loss": final_loss,
        "started": s.started_at,
        "path": str(s.path),
    }


def print_sessions(sessions_dir: Path, as_json: bool) -> None:
    from sgdwalk.tui.cli import UserError

    if not sessions_dir.is_dir():
        raise UserError(f"no sessions folder at {sessions_dir}")
    sessions = list_sessions(sessions_dir)
    rows = []
    for s in sessions:
        with s:
            rows.append(session_summary(s))
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    console = Console(soft_wrap=True)
    if not console.is_terminal:
        console.width = 200  # a pipe or a file gets whole names, not ellipses
    if not rows:
        console.print(f"no sessions in {sessions_dir}")
        return
    table = Table(title=f"sessions in {sessions_dir}", title_justify="left")
    for col in (
        "name",
        "model",
        "dataset",
        "lr",
        "batch",
        "steps",
        "status",
        "barriers",
        "final loss",
    ):
        table.add_column(
            col, justify="right" if col in ("lr", "steps", "barriers", "final loss") else "left"
        )
    for r in rows:
        loss = "-" if r["final_loss"] is None else f"{r['final_loss']:.4f}"
        table.add_row(r["name"], r["model"], r["dataset"], f"{r['lr']:g}", str(r["batch_size"]),
                      str(r["steps"]), r["status"], str(r["barriers"]), loss)  # fmt: skip
    console.print(table)


def print_bench(result: dict[str, Any]) -> None:
    console = Console(soft_wrap=True)
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
