"""``sgdwalk compare SESSION... | SWEEP``: several runs side by side, live or finished.

Why a command of its own: the paper's findings are comparisons (the interior-minimum share and the
barriers as the learning rate or the batch size change), and a sweep's runs are written while
they are compared. A row per run gives what the paper compares (the interior-minimum share over
the measured steps with its 95% interval, barriers per epoch, the final loss, λ1 and the
optimizer's edge ratio); the dashboard (``sgdwalk.tui.dashboard.compare``) re-reads the sessions
every few seconds and overlays one figure of all of them, labelled by what differs; ``--json``
prints one object per run for scripts.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any

from sgdwalk.errors import SessionError, UsageError
from sgdwalk.session import DB_NAME, Session, list_sessions, open_session
from sgdwalk.sweep import PLAN
from sgdwalk.tui.commands.listing import session_summary


def resolve(specs: list[str], sessions_dir: Path) -> list[Path]:
    """Session folders from names, folders, or a sweep's folder or any folder of sessions (Optuna
    trials writing to one ``sessions_dir``): every session in it."""
    if not specs:
        raise UsageError("compare: give sessions, or a sweep's name")
    out: list[Path] = []
    for spec in specs:
        folder = _sweep_folder(spec, sessions_dir)
        if folder is not None:
            good, _ = list_sessions(folder)
            out += sorted(s.path for s in good if ".stopped-" not in s.name)
            for s in good:
                s.close()
            continue
        with open_session(spec, sessions_dir) as s:
            out.append(s.path)
    if not out:
        raise UsageError(f"compare: no sessions in {', '.join(specs)} yet")
    return out


def _sweep_folder(spec: str, sessions_dir: Path) -> Path | None:
    for candidate in (sessions_dir / spec, Path(spec)):
        if (candidate / PLAN).is_file() or _holds_sessions(candidate):
            return candidate
    return None


def _holds_sessions(folder: Path) -> bool:
    """A folder that is no session itself and has sessions in it."""
    if not folder.is_dir() or (folder / DB_NAME).exists():
        return False
    return any((child / DB_NAME).is_file() for child in folder.iterdir())


def compare_row(s: Session) -> dict[str, Any]:
    """One run as the comparison shows it (``ls``'s row, and the shares and curvature)."""
    row = session_summary(s)
    epochs = list(s.epochs())
    last = None
    for last in s.curvature():  # noqa: B007 - the last pass
        pass
    lam = last.eigenvalues[0] if last is not None and last.eigenvalues else None
    return row | {
        "barriers_per_epoch": _number(sum(e.barriers for e in epochs) / len(epochs))
        if epochs else None,
        "lambda1": _number(lam),
    }  # fmt: skip


def _number(v: float | None) -> float | None:
    return v if v is not None and math.isfinite(v) else None


def rows(paths: list[Path]) -> list[dict[str, Any]]:
    """The rows of the sessions at ``paths``; one that cannot be read says why in its row."""
    out = []
    for path in paths:
        try:
            with open_session(path) as s:
                out.append(compare_row(s))
        except SessionError as e:
            out.append({"name": path.name, "damaged": str(e)})
    return out


def compare(specs: list[str], sessions_dir: Path, as_json: bool) -> int:
    paths = resolve(specs, sessions_dir)
    if as_json:
        print(json.dumps(rows(paths), indent=2, allow_nan=False, default=str))
        return 0
    if not sys.stdout.isatty():  # a pipe or a log: the table once, as the view shows it
        print_table(rows(paths))
        return 0
    from sgdwalk.tui.dashboard.compare import CompareApp

    app = CompareApp(paths, rows)
    app.run()
    return 1 if app.return_code else 0


def print_table(got: list[dict[str, Any]]) -> None:
    from rich.console import Console
    from rich.table import Table

    from sgdwalk.tui.dashboard.compare import COLUMNS, cells

    console = Console(soft_wrap=True, markup=False, highlight=False, width=200)
    table = Table()
    for title, _ in COLUMNS:
        table.add_column(title)
    for row in got:
        table.add_row(*cells(row))
    console.print(table)
