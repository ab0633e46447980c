"""``sgdwalk export``: static figures and the numbers behind them, from saved sessions.

Why this shape: a request is parsed once into an ``ExportRequest``; every check that can fail
(figure, format, ranges, epochs, files that would be overwritten, figures without data) runs before
anything is written, so a bad command leaves no half-written files and says one line (exit 2).
What each figure needs and how it draws is its ``Figure`` declaration (``sgdwalk.tui.figures``), so
the txt, svg, html, png, pdf, csv and json of a figure all show the same numbers. matplotlib is
imported only for png/pdf, so the other formats work without the ``plots`` extra and without a
display. Files are created exclusively (no ``--force``: an existing file or link is never
followed or replaced).
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from sgdwalk.errors import UsageError
from sgdwalk.records import StepMeasured
from sgdwalk.session import Session, open_session
from sgdwalk.tui.figures import FIGURES, alignment
from sgdwalk.tui.figures.base import SCIENCE_KEYS, Figure, FigureData, Options
from sgdwalk.tui.figures.rows import write_csv, write_json
from sgdwalk.tui.figures.text import build_text, rich_document
from sgdwalk.tui.text import plain

FORMATS = ("txt", "svg", "html", "png", "pdf", "csv", "json")
TEXT_FORMATS = ("txt", "svg", "html", "csv", "json")
SLICE_WINDOW = 40  # the paper's Figure 1 shows 40 consecutive steps
EVERY_STEP = 2**62  # a window that holds every step
TEXT_POINTS_PER_COLUMN = 8  # plotext cannot show more: thin longer series for text output


@dataclass
class ExportRequest:
    sessions: list[str]
    figure: str = "slices"
    fmt: str | None = None
    output: str | None = None
    epochs: list[int] = field(default_factory=list)
    steps: str | None = None
    window: int | None = None
    metric: str = "subspace"
    width: int = 100
    height: int = 30
    force: bool = False
    sessions_dir: str | None = None

    @property
    def options(self) -> Options:
        return Options(metric=self.metric, width=self.width, height=self.height)


# ---------------------------------------------------------------- parsing


def parse_steps(spec: str | None) -> tuple[int | None, int | None]:
    """``A:B`` → steps A <= step < B (like Python slices and ``Session.steps``); A or B may be
    left out."""
    if spec is None:
        return None, None
    parts = spec.split(":")
    try:
        if len(parts) != 2:
            raise ValueError
        lo, hi = (int(p) if p.strip() else None for p in parts)
    except ValueError:
        raise UsageError(f"--steps {spec!r}: expected A:B, e.g. 1:41 (steps 1 to 40)") from None
    if (lo is not None and lo < 0) or (lo is not None and hi is not None and hi <= lo):
        raise UsageError(f"--steps {spec!r}: need 0 <= A < B")
    return lo, hi


def resolve_format(req: ExportRequest) -> str:
    fmt = req.fmt
    if fmt is None and req.output not in (None, "-") and Path(req.output).suffix:
        fmt = Path(req.output).suffix[1:].lower()
        if fmt not in FORMATS:
            raise UsageError(f"cannot tell the format from {req.output!r}; give --format "
                             f"({', '.join(FORMATS)})")  # fmt: skip
    fmt = (fmt or "txt").lower()
    if fmt not in FORMATS:
        raise UsageError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    return fmt


def check_request(req: ExportRequest) -> list[str]:
    """Validate the options; return the figures to export."""
    if req.figure != "all" and req.figure not in FIGURES:
        raise UsageError(f"unknown figure {req.figure!r}; choose one of "
                         f"{', '.join(FIGURES)} or all")  # fmt: skip
    if req.metric not in alignment.METRICS:
        raise UsageError(f"unknown --metric {req.metric!r}; choose one of "
                         f"{', '.join(alignment.METRICS)}")  # fmt: skip
    if req.window is not None and not 1 <= req.window <= 10**9:
        raise UsageError(f"--window {req.window}: need at least 1 step (and at most 10^9)")
    if not (20 <= req.width <= 1000 and 8 <= req.height <= 500):
        raise UsageError("--width must be in 20..1000 and --height in 8..500")
    if any(not 0 <= e < 2**62 for e in req.epochs):
        raise UsageError("--epoch must be a whole number from 0 (epoch 0: before training)")
    parse_steps(req.steps)
    if req.figure == "all" and req.output in (None, "-"):
        raise UsageError("--figure all writes one file per figure: give -o DIRECTORY")
    return list(FIGURES) if req.figure == "all" else [req.figure]


# ---------------------------------------------------------------- labels


def overlay_labels(configs: list[dict[str, Any]], names: list[str]) -> list[str | None]:
    """Label each session by the training settings that differ between them ("lr=0.1"); where
    runs differ only in how they ran (threads, device), by name. A setting counts as different
    only when every session states it and the values differ as values (64 and "64" are one batch
    size; a Walker session that does not state its epochs differs in nothing by that)."""
    if len(configs) < 2:
        return [None] * len(configs)
    differ = [k for k in SCIENCE_KEYS
              if all(c.get(k) is not None for c in configs)
              and len({_value(c.get(k)) for c in configs}) > 1]  # fmt: skip
    labels = [", ".join(f"{k}={plain(c.get(k))}" for k in differ) or n
              for c, n in zip(configs, names, strict=True)]  # fmt: skip
    if len(set(labels)) < len(labels):  # same settings twice: the names tell them apart
        labels = [f"{lab} ({n})" if lab != n else n for lab, n in zip(labels, names, strict=True)]
    return labels


def _value(v: Any) -> object:
    """A setting as a value to compare: numbers (and numbers written as text) as floats."""
    if isinstance(v, bool):
        return v
    try:
        return float(v)
    except (TypeError, ValueError):
        return str(v).strip().lower()


# ---------------------------------------------------------------- selecting data


def _epochs_held(s: Session) -> str:
    first, last = next(s.steps(), None), s.step(s.last_step())
    if first is None or last is None:
        return "it has no steps"
    return f"it has epochs {first.epoch}-{last.epoch}, steps {first.step}-{last.step}"


def _in_range(step: int, req: ExportRequest) -> bool:
    lo, hi = parse_steps(req.steps)
    return (lo is None or step >= lo) and (hi is None or step < hi)


def select_steps(s: Session, req: ExportRequest, figure: Figure) -> list[StepMeasured]:
    """The steps a figure shows: ``--steps``, else ``--epoch``, else (slices) the last window."""
    if req.steps is not None:
        lo, hi = parse_steps(req.steps)
        steps = [r for r in s.steps(lo, hi) if not req.epochs or r.epoch in req.epochs]
    elif figure.needs.steps == "measured":
        if len(req.epochs) > 1:
            raise UsageError(f"--figure {figure.name} shows one epoch: give --epoch once")
        window = req.window or SLICE_WINDOW
        if not req.epochs:  # the latest steps: past the first drop, the valleys show
            return s.latest_measured(window)
        steps = [r for r in s.epoch_steps(req.epochs[0]) if r.slice is not None][:window]
        if not steps:
            raise UsageError(f"session {s.name} has no measured steps in epoch {req.epochs[0]} "
                             f"({_epochs_held(s)})")  # fmt: skip
        return steps
    elif req.epochs:
        steps = [r for e in sorted(set(req.epochs)) for r in s.epoch_steps(e)]
    else:
        steps = list(s.steps())
    return steps[: req.window] if req.window else steps


def select_data(s: Session, label: str | None, req: ExportRequest, figure: Figure) -> FigureData:
    data = FigureData(s.name, label, s.config, info=s.info)
    needs = figure.needs
    if needs.steps is not None:
        data.steps = select_steps(s, req, figure)
    if needs.epochs:
        data.epochs = [e for e in s.epochs() if _in_range(e.steps, req)
                       and (not req.epochs or e.epoch in req.epochs)]  # fmt: skip
        if data.steps:
            first, last = data.steps[0].step, data.steps[-1].step
            data.epochs = [e for e in data.epochs if first <= e.steps <= last]
    if needs.curvature is not None:
        data.curvature = [c for c in s.curvature() if _in_range(c.step, req)
                          and (not req.epochs or c.epoch in req.epochs)]  # fmt: skip
    return data


def lacks(s: Session, figure: Figure, req: ExportRequest) -> str:
    """What a session lacks for ``figure``, and what it has instead, in a few words."""
    text = f"{s.name} has no {figure.what}"
    if figure.needs.curvature is not None and req.epochs:
        have = sorted({c.epoch for c in s.curvature()})
        text += f" at epoch {', '.join(map(str, req.epochs))}"
        text += f" (it has them at epochs {', '.join(map(str, have))})" if have else ""
    elif figure.needs.steps is not None and (req.epochs or req.steps):
        text += f" ({_epochs_held(s)})"
    return text


# ---------------------------------------------------------------- drawing and writing


def _thin(steps: list[StepMeasured], width: int) -> list[StepMeasured]:
    """Every n-th step, so a terminal figure of a long run draws in a moment."""
    limit = width * TEXT_POINTS_PER_COLUMN
    return steps if len(steps) <= limit else steps[:: -(-len(steps) // limit)]


def render(figure: Figure, fmt: str, data: list[FigureData], req: ExportRequest) -> str | bytes:
    if fmt in ("csv", "json"):
        rows = [row for d in data for row in figure.rows(d)]
        return write_csv(rows) if fmt == "csv" else write_json(rows)
    if fmt in ("png", "pdf"):
        from sgdwalk.tui.figures.mpl import render_mpl

        return render_mpl(figure, fmt, data, req.options)
    if figure.needs.steps == "all":
        data = [FigureData(d.name, d.label, d.config, _thin(d.steps, req.width), d.epochs,
                           d.curvature, d.info) for d in data]  # fmt: skip
    text = build_text(figure, data, req.options, req.height, colored=fmt != "txt")
    if fmt == "txt":
        return text
    title = f"sgdwalk export {' '.join(d.name for d in data)} --figure {figure.name}"
    return rich_document(text, fmt, title, req.width)


def target_paths(req: ExportRequest, figures: list[str], fmt: str, stem: str) -> list[Path | None]:
    """Where each figure goes (None: stdout). Refuses to overwrite without --force."""
    out = req.output
    if req.figure == "all" and out is not None:
        folder = Path(out)
        if folder.exists() and not folder.is_dir():
            raise UsageError(f"-o {out}: --figure all needs a directory, and this is a file")
        paths: list[Path | None] = [folder / f"{f}.{fmt}" for f in figures]
    elif out == "-":
        if fmt not in TEXT_FORMATS:
            raise UsageError(f"{fmt} is binary: give -o FILE instead of -o -")
        paths = [None]
    elif out is None or Path(out).is_dir() or out.endswith(("/", os.sep)):
        paths = [Path(out or ".") / f"{stem}-{figures[0]}.{fmt}"]
    else:
        paths = [Path(out)]
    for p in paths:
        if p is None or not os.path.lexists(p):
            continue
        if not req.force:
            raise UsageError(f"{p} exists; use --force to overwrite it")
        if not (p.is_symlink() or p.is_file()):
            raise UsageError(f"{p} exists and is not a file; not writing over it")
    return paths


def write_output(path: Path | None, content: str | bytes, force: bool) -> None:
    """Write ``content``; a new file is created exclusively, so nothing is ever followed."""
    data = content.encode("utf-8") if isinstance(content, str) else content
    if path is None:
        sys.stdout.write(data.decode("utf-8"))
        sys.stdout.flush()
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UsageError(f"cannot write {path}: {path.parent}: {e.strerror or e}") from None
    try:
        if force and (path.is_symlink() or path.is_file()):
            path.unlink()  # a link is replaced, never followed
        with open(path, "xb") as fh:
            fh.write(data)
    except FileExistsError:
        raise UsageError(f"{path} appeared while exporting; use --force to overwrite it") from None
    except OSError as e:
        with contextlib.suppress(OSError):
            if path.is_file() and path.stat().st_size == 0:
                path.unlink()
        raise UsageError(f"cannot write {path}: {e.strerror or e}") from None


def run_export(req: ExportRequest, echo: Callable[[str], None] | None = None) -> list[Path]:
    """Export the requested figures; return the files written."""
    names = check_request(req)
    fmt = resolve_format(req)
    if fmt in ("png", "pdf"):
        from sgdwalk.tui.figures.mpl import require_matplotlib

        require_matplotlib()
    if fmt in ("csv", "json") and req.window is None and not req.epochs and req.steps is None:
        req = replace(req, window=EVERY_STEP)  # numbers: every step, not the slices' last window
    folder = Path(req.sessions_dir) if req.sessions_dir else None
    sessions = []
    try:
        for spec in req.sessions:
            sessions.append(open_session(spec, folder))
        jobs, notes = collect(sessions, req, [FIGURES[n] for n in names])
    finally:
        for s in sessions:
            s.close()
    stem = "-".join(s.name for s in sessions)[:100]
    paths = target_paths(req, [f.name for f, _ in jobs], fmt, stem)
    say = echo or (lambda line: None)
    for line in notes:
        say(f"sgdwalk: {line}")
    written = []
    for (figure, data), path in zip(jobs, paths, strict=True):
        write_output(path, render(figure, fmt, data, req), req.force)
        skipped = sum(figure.skipped(d) for d in data)
        if skipped and fmt not in ("csv", "json"):
            say(f"sgdwalk: {figure.name}: {skipped} non-finite values (NaN/inf) not drawn")
        if path is not None:
            written.append(path)
            say(f"wrote {path}")
    return written


def collect(
    sessions: list[Session], req: ExportRequest, figures: list[Figure]
) -> tuple[list[tuple[Figure, list[FigureData]]], list[str]]:
    """Each figure's data, and notes on figures skipped for want of data (``all`` only; a lone
    figure without data is an error)."""
    labels = overlay_labels([s.config for s in sessions], [s.name for s in sessions])
    jobs, notes = [], []
    for figure in figures:
        data = [select_data(s, lab, req, figure) for s, lab in zip(sessions, labels, strict=True)]
        empty = [s for s, d in zip(sessions, data, strict=True) if not figure.has_data(d)]
        if empty and len(figures) == 1:
            raise UsageError(f"nothing to draw for --figure {figure.name}: "
                             + "; ".join(lacks(s, figure, req) for s in empty))  # fmt: skip
        if len(empty) == len(data):
            notes.append(f"skipped {figure.name}: no {figure.what}")
            continue
        jobs.append((figure, [d for d in data if figure.has_data(d)]))
    if not jobs:
        raise UsageError("nothing to export: the sessions have no data for any figure")
    return jobs, notes
