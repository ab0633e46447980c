"""The comparison dashboard: a table of runs and one figure of all of them, re-read as they go.

Why polling whole rows: the runs of a sweep are written by other processes, a few at a time, and a
comparison needs each run's totals (its shares, its last curvature pass), which one indexed query
per number gives; re-reading them every ``REFRESH`` seconds keeps the view live without following
each session's records. The figure is the export's own, overlaid (``sgdwalk.tui.figures``: each run
labelled by the settings that differ), so the screen shows what ``export`` writes.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.widgets import DataTable, Footer

from sgdwalk.errors import SgdwalkError
from sgdwalk.session import open_session
from sgdwalk.tui.dashboard.widgets import FigureChart, StatusLine
from sgdwalk.tui.figures import FIGURES, FigureData
from sgdwalk.tui.figures.export import ExportRequest, overlay_labels, select_data
from sgdwalk.tui.text import plain, share_text

REFRESH = 2.0  # seconds between re-reads of the sessions
SHOWN = ("slices", "barriers", "loss", "sharpness", "alignment", "cosine")  # figures, in turn
COLUMNS = (("run", "name"), ("optimizer", "optimizer"), ("lr", "lr"), ("batch", "batch_size"),
           ("steps", "steps"), ("status", "status"), ("interior min", "interior"),
           ("barriers/ep", "barriers"), ("final loss", "final_loss"), ("λ1", "lambda1"), ("edge", "edge_ratio"))  # fmt: skip


def cells(row: dict[str, Any]) -> list[str]:
    """A run's row as the table shows it ("77% ±6%, 41 of 64 measured" for the interior-minimum share)."""
    if "damaged" in row:
        return [plain(row["name"]), "", "", "", "", f"damaged: {plain(row['damaged'])}"] + [""] * 5
    share, lo, hi = (row.get(k) for k in ("interior_min_fraction", "interior_min_low",
                                           "interior_min_high"))  # fmt: skip
    interior = share_text(share, lo, hi, row.get("measured_steps"), row.get("steps") or 0)
    out = {"name": plain(row["name"]), "interior": interior,
           "optimizer": row.get("optimizer") or "-",
           "barriers": _num(row.get("barriers_per_epoch"), ".2f"),
           "lr": _num(row.get("lr"), "g"), "final_loss": _num(row.get("final_loss"), ".4f"),
           "lambda1": _num(row.get("lambda1"), ".3g"), "edge_ratio": _num(row.get("edge_ratio"), ".2f")}  # fmt: skip
    return [out.get(key) or plain(row.get(key, "-")) for _, key in COLUMNS]


def _num(v: object, fmt: str) -> str:
    return format(v, fmt) if isinstance(v, int | float) and not isinstance(v, bool) else "-"


class CompareApp(App[None]):
    """Runs side by side: ``tab`` shows the next figure, ``[`` and ``]`` the epoch of the slices."""

    TITLE = "sgdwalk compare"
    ENABLE_COMMAND_PALETTE = False
    CSS = "DataTable { height: auto; max-height: 40%; } FigureChart { height: 1fr; }"
    BINDINGS = [
        Binding("tab", "figure(1)", "next figure", priority=True),
        Binding("shift+tab", "figure(-1)", "previous figure", show=False, priority=True),
        Binding("right_square_bracket", "epoch(1)", "next epoch"),
        Binding("left_square_bracket", "epoch(-1)", "previous epoch"),
        Binding("p", "pause", "pause / resume all"),
        Binding("q", "quit", "quit"),
        Binding("ctrl+c", "quit", "quit", show=False, priority=True),
    ]

    def __init__(
        self, paths: list[Path], read: Callable[[list[Path]], list[dict[str, Any]]],
        find: Callable[[], list[Path]] | None = None, label: str = "compare",
        pause: Callable[[], bool] | None = None,
    ) -> None:  # fmt: skip
        super().__init__()
        self.paths = paths
        self.read = read  # the runs' rows, re-read on every refresh
        self.find = find  # the runs, found again on every refresh (a sweep's, as they start)
        self.label = label  # what the status line calls the view ("sweep NAME")
        self.pause = pause  # a sweep's: hold every run or let them go on (True: held now)
        self.held = False
        self.figure = 0
        self.epoch: int | None = None  # the slices' epoch (None: the latest steps)
        self.rows: list[dict[str, Any]] = []

    def compose(self) -> ComposeResult:
        with Vertical():
            yield StatusLine(id="status")
            yield DataTable(id="runs", cursor_type="row", zebra_stripes=True)
            for name in SHOWN:
                yield FigureChart(FIGURES[name])
        yield Footer()

    def on_mount(self) -> None:
        table = self.query_one(DataTable)
        table.add_columns(*(title for title, _ in COLUMNS))
        self.show_figure()
        self.refresh_runs()
        self.set_interval(REFRESH, self.refresh_runs)

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        return self.pause is not None if action == "pause" else True  # p only for a sweep's runs

    def action_pause(self) -> None:
        if self.pause is not None:
            self.held = self.pause()
            self.draw()

    def refresh_runs(self) -> None:
        if self.find is not None:
            self.paths = self.find()
        self.rows = self.read(self.paths)
        table = self.query_one(DataTable)
        table.clear()
        for row in self.rows:
            table.add_row(*cells(row))
        self.draw()

    def draw(self) -> None:
        name = SHOWN[self.figure]
        figure = FIGURES[name]
        data = self.figure_data(name)
        at = f" · epoch {self.epoch}" if name == "slices" and self.epoch is not None else ""
        self.query_one(f"#{name}", FigureChart).show_overlay(data, f"{name}{at} · {len(data)} runs")
        running = sum(r.get("status") == "running" for r in self.rows)
        self.query_one(StatusLine).update_text(
            f"{self.label} · {len(self.rows)} runs · {running} running"
            f"{' · ⏸ all held (p resumes)' if self.held else ''} · figure {name}{at} "
            f"({figure.what if not data else 'tab: next'})"
        )

    def figure_data(self, name: str) -> list[FigureData]:
        """Each run's data for figure ``name`` (a run without any, or unreadable, is left out)."""
        figure = FIGURES[name]
        req = ExportRequest(sessions=[], figure=name, epochs=[self.epoch] if self.epoch else [])
        opened = []
        for path in self.paths:
            try:
                opened.append(open_session(path))
            except SgdwalkError:
                continue
        labels = overlay_labels([s.config for s in opened], [s.name for s in opened])
        data = []
        for s, label in zip(opened, labels, strict=True):
            try:
                with s:
                    data.append(select_data(s, label, req, figure))
            except SgdwalkError:
                continue  # no steps in the chosen epoch yet, a damaged table
        return [d for d in data if figure.has_data(d)]

    def show_figure(self) -> None:
        for name in SHOWN:
            self.query_one(f"#{name}", FigureChart).display = name == SHOWN[self.figure]

    def action_figure(self, delta: int) -> None:
        self.figure = (self.figure + delta) % len(SHOWN)
        self.show_figure()
        self.draw()

    def action_epoch(self, delta: int) -> None:
        """The slices of one epoch (from the latest steps, the first: epoch 1)."""
        self.epoch = 1 if self.epoch is None else max(1, self.epoch + delta)
        self.draw()
