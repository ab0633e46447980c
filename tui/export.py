"""``sgdwalk export``: static figures and the numbers behind them, from saved sessions.

Why this shape: a request is parsed once into an ``ExportRequest``; every check that can fail
(figure, format, ranges, epochs, files that would be overwritten, figures without data) runs before
anything is written, so a bad command leaves no half-written files and says one line (exit 2).
The points of each figure come from ``tui.charts`` (the dashboard's own chart code), so the txt,
svg, html, png, pdf, csv and json of a figure all show the same numbers. matplotlib is imported only
for png/pdf (``tui.export_mpl``), so the other formats work without the ``plots`` extra and
without a display.
"""

from __future__ import annotations

import io
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sgdwalk.records import CurvatureMeasured, EpochEnded, StepMeasured
from sgdwalk.session import Session, open_session
from sgdwalk.tui import charts
from sgdwalk.tui.export_data import figure_rows, write_csv, write_json

FIGURES = ("slices", "barriers", "alignment", "cosine", "loss")
FORMATS = ("txt", "svg", "html", "png", "pdf", "csv", "json")
TEXT_FORMATS = ("txt", "svg", "html", "csv", "json")
SLICE_WINDOW = 40  # the paper's Figure 1 shows 40 consecutive steps
TEXT_POINTS_PER_COLUMN = 8  # plotext cannot show more: thin longer series for text output
# Config keys that name where a run lives, not what it trained: never used as overlay labels.
_NOT_LABELS = {"session", "sessions_dir", "data_dir", "config"}


def _user_error(msg: str) -> Exception:
    from sgdwalk.tui.cli import UserError

    return UserError(msg)


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


@dataclass
class FigureData:
    """What one session contributes to one figure."""

    name: str
    label: str | None
    steps: list[StepMeasured] = field(default_factory=list)
    epochs: list[EpochEnded] = field(default_factory=list)
    curvature: list[CurvatureMeasured] = field(default_factory=list)


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
        raise _user_error(f"--steps {spec!r}: expected A:B, e.g. 1:41 (steps 1 to 40)") from None
    if (lo is not None and lo < 0) or (lo is not None and hi is not None and hi <= lo):
        raise _user_error(f"--steps {spec!r}: need 0 <= A < B")
    return lo, hi


def resolve_format(req: ExportRequest) -> str:
    fmt = req.fmt
    if fmt is None and req.output not in (None, "-") and Path(req.output).suffix:
        fmt = Path(req.output).suffix[1:].lower()
        if fmt not in FORMATS:
            raise _user_error(f"cannot tell the format from {req.output!r}; give --format "
                              f"({', '.join(FORMATS)})")  # fmt: skip
    fmt = (fmt or "txt").lower()
    if fmt not in FORMATS:
        raise _user_error(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    return fmt


def check_request(req: ExportRequest) -> list[str]:
    """Validate the options; return the figures to export."""
    if req.figure != "all" and req.figure not in FIGURES:
        raise _user_error(f"unknown figure {req.figure!r}; choose one of "
                          f"{', '.join(FIGURES)} or all")  # fmt: skip
    if req.metric not in charts.ALIGN_METRICS:
        raise _user_error(f"unknown --metric {req.metric!r}; choose one of "
                          f"{', '.join(charts.ALIGN_METRICS)}")  # fmt: skip
    if req.window is not None and req.window < 1:
        raise _user_error(f"--window {req.window}: need at least 1 step")
    if req.width < 20 or req.height < 8:
        raise _user_error("--width must be >= 20 and --height >= 8")
    if any(e < 0 for e in req.epochs):
        raise _user_error("--epoch must be >= 0")
    parse_steps(req.steps)
    if req.figure == "all" and req.output in (None, "-"):
        raise _user_error("--figure all writes one file per figure: give -o DIRECTORY")
    return list(FIGURES) if req.figure == "all" else [req.figure]


# ---------------------------------------------------------------- labels


def overlay_labels(configs: list[dict[str, Any]], names: list[str]) -> list[str | None]:
    """Label each session by the config values that differ between them ("lr=0.1")."""
    if len(configs) < 2:
        return [None] * len(configs)
    keys = sorted({k for c in configs for k in c} - _NOT_LABELS)
    differ = [k for k in keys if len({repr(c.get(k)) for c in configs}) > 1]
    labels = [", ".join(f"{k}={c.get(k)}" for k in differ) or n
              for c, n in zip(configs, names, strict=True)]  # fmt: skip
    if len(set(labels)) < len(labels):  # same config twice: the names tell them apart
        labels = [f"{lab} ({n})" if lab != n else n for lab, n in zip(labels, names, strict=True)]
    return labels


# ---------------------------------------------------------------- selecting data


def _epoch_first_step(s: Session, epoch: int) -> int:
    first = next(s.epoch_steps(epoch), None)
    if first is None:
        raise _user_error(f"session {s.name} has no steps in epoch {epoch} "
                          f"(it has steps 1-{s.last_step()})")  # fmt: skip
    return first.step


def select_steps(s: Session, req: ExportRequest, figure: str) -> list[StepMeasured]:
    lo, hi = parse_steps(req.steps)
    if req.steps is not None:
        steps = list(s.steps(lo, hi))
        if req.epochs:
            steps = [r for r in steps if r.epoch in req.epochs]
    elif figure == "slices":
        if len(req.epochs) > 1:
            raise _user_error("--figure slices shows one epoch: give --epoch once")
        epoch = req.epochs[0] if req.epochs else _first_epoch(s)
        start = _epoch_first_step(s, epoch)
        window = req.window or SLICE_WINDOW
        return [r for r in s.steps(start, start + window) if r.epoch == epoch]
    elif req.epochs:
        steps = [r for e in sorted(set(req.epochs)) for r in s.epoch_steps(e)]
    else:
        steps = list(s.steps())
    return steps[: req.window] if req.window else steps


def _first_epoch(s: Session) -> int:
    first = next(s.steps(), None)
    if first is None:
        raise _user_error(f"session {s.name} has no steps yet")
    return first.epoch


def _in_range(step: int, req: ExportRequest) -> bool:
    lo, hi = parse_steps(req.steps)
    return (lo is None or step >= lo) and (hi is None or step < hi)


def select_data(s: Session, label: str | None, req: ExportRequest, figure: str) -> FigureData:
    data = FigureData(s.name, label)
    if figure in ("slices", "cosine", "loss"):
        data.steps = select_steps(s, req, figure)
    if figure in ("barriers", "loss"):
        data.epochs = [e for e in s.epochs() if _in_range(e.steps, req)
                       and (not req.epochs or e.epoch in req.epochs)]  # fmt: skip
        if figure == "loss" and data.steps:
            last = data.steps[-1].step
            data.epochs = [e for e in data.epochs if data.steps[0].step <= e.steps <= last]
    if figure == "alignment":
        data.curvature = [c for c in s.curvature() if _in_range(c.step, req)
                          and (not req.epochs or c.epoch in req.epochs)]  # fmt: skip
    return data


_WHAT = {
    "slices": "measured steps (slices) in the chosen range",
    "barriers": "finished epochs",
    "alignment": "curvature records (run with --hessian-every N)",
    "cosine": "gradient cosines in the chosen range",
    "loss": "steps in the chosen range",
}


def has_data(figure: str, d: FigureData) -> bool:
    if figure == "slices":
        return any(r.slice is not None for r in d.steps)
    if figure == "barriers":
        return bool(d.epochs)
    if figure == "alignment":
        return bool(charts.alignment_series(d.curvature))
    if figure == "cosine":
        return any(xs for xs, _ in charts.cosine_series(d.steps).values())
    return bool(d.steps) or bool(d.epochs)


# ---------------------------------------------------------------- text figures


def _thin(steps: list[StepMeasured], width: int) -> list[StepMeasured]:
    """Every n-th step, so a terminal figure of a long run draws in a moment."""
    limit = width * TEXT_POINTS_PER_COLUMN
    return steps if len(steps) <= limit else steps[:: -(-len(steps) // limit)]


def draw_figure(plt: Any, figure: str, data: list[FigureData], *, width: int = 100,
                metric: str = "subspace") -> None:  # fmt: skip
    """Draw every session's data of one figure onto ``plt`` (overlays get a colour each)."""
    for i, d in enumerate(data):
        color = charts.PALETTE[i % len(charts.PALETTE)] if len(data) > 1 else None
        kw: dict[str, Any] = {"label": d.label, "color": color}
        if figure == "slices":
            lines = len(d.steps) * 4 <= width - 10 and len(data) == 1
            charts.draw_slices(plt, d.steps, step_lines=lines, **kw)
        elif figure == "barriers":
            charts.draw_barriers(plt, d.epochs, total=len(data) == 1, **kw)
        elif figure == "alignment":
            charts.draw_alignment(plt, d.curvature, metric=metric, **kw)
        elif figure == "cosine":
            charts.draw_cosines(plt, _thin(d.steps, width), **kw)
        else:
            charts.draw_loss(plt, _thin(d.steps, width), d.epochs, **kw)


def text_figure(figure: str, data: list[FigureData], req: ExportRequest, colored: bool) -> str:
    return charts.build_text(draw_figure, figure, data, width=req.width, height=req.height,
                             colored=colored, metric=req.metric)  # fmt: skip


def rich_export(ansi: str, fmt: str, title: str, width: int) -> str:
    """The coloured terminal figure as a standalone svg or html document."""
    from rich.console import Console
    from rich.text import Text

    console = Console(record=True, width=width, file=io.StringIO(), force_terminal=True,
                      color_system="truecolor")  # fmt: skip
    console.print(Text.from_ansi(ansi), no_wrap=True, crop=False)
    if fmt == "svg":
        return console.export_svg(title=title)
    return console.export_html(inline_styles=True)


# ---------------------------------------------------------------- writing


def render(figure: str, fmt: str, data: list[FigureData], req: ExportRequest) -> str | bytes:
    if fmt in ("csv", "json"):
        rows = figure_rows(figure, data, req.metric)
        return write_csv(rows) if fmt == "csv" else write_json(rows)
    if fmt == "txt":
        return text_figure(figure, data, req, colored=False)
    if fmt in ("svg", "html"):
        title = f"sgdwalk export {' '.join(d.name for d in data)} --figure {figure}"
        return rich_export(text_figure(figure, data, req, colored=True), fmt, title, req.width)
    from sgdwalk.tui.export_mpl import render_mpl

    return render_mpl(figure, fmt, data, req.metric)


def target_paths(req: ExportRequest, figures: list[str], fmt: str, stem: str) -> list[Path | None]:
    """Where each figure goes (None: stdout). Refuses to overwrite without --force."""
    out = req.output
    if req.figure == "all" and out is not None:
        folder = Path(out)
        if folder.exists() and not folder.is_dir():
            raise _user_error(f"-o {out}: --figure all needs a directory, and this is a file")
        paths: list[Path | None] = [folder / f"{f}.{fmt}" for f in figures]
    elif out == "-":
        if fmt not in TEXT_FORMATS:
            raise _user_error(f"{fmt} is binary: give -o FILE instead of -o -")
        paths = [None]
    elif out is None or Path(out).is_dir():
        paths = [Path(out or ".") / f"{stem}-{figures[0]}.{fmt}"]
    else:
        paths = [Path(out)]
    for p in paths:
        if p is not None and p.exists() and not req.force:
            raise _user_error(f"{p} exists; use --force to overwrite it")
    return paths


def write_output(path: Path | None, content: str | bytes) -> None:
    if path is None:
        out = sys.stdout
        out.write(content if isinstance(content, str) else content.decode())
        out.flush()
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, str):
        path.write_text(content, encoding="utf-8")
    else:
        path.write_bytes(content)


def run_export(req: ExportRequest, echo: Callable[[str], None] | None = None) -> list[Path]:
    """Export the requested figures; return the files written."""
    figures = check_request(req)
    fmt = resolve_format(req)
    if fmt in ("png", "pdf"):
        from sgdwalk.tui.export_mpl import require_matplotlib

        require_matplotlib()
    sessions = [open_session(s, Path(req.sessions_dir) if req.sessions_dir else None)
                for s in req.sessions]  # fmt: skip
    try:
        jobs, skipped = collect(sessions, req, figures)
    finally:
        for s in sessions:
            s.close()
    stem = "-".join(s.name for s in sessions)[:100]
    paths = target_paths(req, [f for f, _ in jobs], fmt, stem)
    for line in skipped:
        print(f"sgdwalk: {line}", file=sys.stderr)
    written = []
    for (figure, data), path in zip(jobs, paths, strict=True):
        write_output(path, render(figure, fmt, data, req))
        if path is not None:
            written.append(path)
            if echo:
                echo(f"wrote {path}")
    return written


def collect(
    sessions: list[Session], req: ExportRequest, figures: list[str]
) -> tuple[list[tuple[str, list[FigureData]]], list[str]]:
    """Each figure's data, and notes on figures skipped for want of data (``all`` only; a lone
    figure without data is an error)."""
    labels = overlay_labels([s.config for s in sessions], [s.name for s in sessions])
    jobs, skipped = [], []
    for figure in figures:
        data = [select_data(s, lab, req, figure) for s, lab in zip(sessions, labels, strict=True)]
        empty = [d.name for d in data if not has_data(figure, d)]
        if empty and len(figures) == 1:
            raise _user_error(f"nothing to draw for --figure {figure}: {', '.join(empty)} "
                              f"has no {_WHAT[figure]}")  # fmt: skip
        if len(empty) == len(data):
            skipped.append(f"skipped {figure}: no {_WHAT[figure]}")
            continue
        jobs.append((figure, [d for d in data if has_data(figure, d)]))
    if not jobs:
        raise _user_error("nothing to export: the sessions have no data for any figure")
    return jobs, skipped
