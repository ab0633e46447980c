"""``sgdwalk run --headless``: a rich progress bar and one line per epoch.

Chosen automatically when stdout is not a terminal (nohup, CI, a pipe). When rich cannot draw a
live bar (no terminal), a plain progress line is printed every ``PLAIN_EVERY`` seconds instead, so a
log file still shows that the run is alive.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    TextColumn,
    TimeRemainingColumn,
)
from rich.text import Text

from sgdwalk import torchrun
from sgdwalk.config import RunConfig
from sgdwalk.errors import exit_code
from sgdwalk.records import (
    EDGE_EVENT,
    NOTE_EVENT,
    PAUSED_EVENT,
    RESUMED_EVENT,
    CurvatureMeasured,
    EpochEnded,
    EventLogged,
    PhaseProgressed,
    Record,
    StepMeasured,
)
from sgdwalk.tui.lines import curvature_line
from sgdwalk.tui.text import QuietStream, share_text

PLAIN_EVERY = 30.0


class StepsPerSecond(ProgressColumn):
    def render(self, task) -> Text:  # type: ignore[no-untyped-def]
        speed = task.finished_speed or task.speed
        return Text("-- steps/s" if speed is None else f"{speed:6.1f} steps/s", style="cyan")


def epoch_line(rec: EpochEnded, epochs: int, total_barriers: int, epoch_steps: int) -> str:
    """An epoch's line; ``epoch_steps``: the steps it took (its interior-minimum share says how
    many of them were measured, when not all)."""
    return (
        f"epoch {rec.epoch}/{epochs}  step {rec.steps}  "
        f"train loss {rec.train_loss:.4f} acc {rec.train_acc:6.2%}  "
        f"val loss {rec.val_loss:.4f} acc {rec.val_acc:6.2%}  "
        f"barriers {rec.barriers} (total {total_barriers})  "
        f"interior-min {share_text(rec.interior_min_fraction, rec.interior_min_low, rec.interior_min_high, rec.measured_steps, epoch_steps)}"
    )  # fmt: skip


class HeadlessView:
    """Turns records into progress-bar updates and printed lines."""

    def __init__(self, console: Console, progress: Progress, task: int, cfg: RunConfig):
        self.console, self.progress, self.task, self.cfg = console, progress, task, cfg
        self.barriers = 0
        self.last_plain = time.monotonic()
        self.step = 0
        self.epoch_start = 0  # the step the epoch began after

    def __call__(self, rec: Record) -> None:
        if isinstance(rec, StepMeasured):
            self.step = rec.step
            self.barriers += bool(rec.barrier)
            self.progress.update(self.task, completed=rec.step, description="train")
            if not self.console.is_terminal and time.monotonic() - self.last_plain > PLAIN_EVERY:
                self.last_plain = time.monotonic()
                t = self.progress.tasks[0]
                self.console.print(f"step {rec.step}/{int(t.total or 0)} epoch {rec.epoch} "
                                   f"loss {rec.batch_loss:.4f}")  # fmt: skip
        elif isinstance(rec, EpochEnded):
            self.console.print(epoch_line(rec, self.cfg.epochs, self.barriers,
                                          rec.steps - self.epoch_start))  # fmt: skip
            self.epoch_start = rec.steps
        elif isinstance(rec, CurvatureMeasured):
            self.console.print(curvature_line(rec))
        elif isinstance(rec, PhaseProgressed):
            desc = f"{rec.phase} {rec.done}/{rec.total}"
            self.progress.update(self.task, description=desc)
        elif isinstance(rec, EventLogged):
            self.progress.update(self.task, description=rec.kind)
            if rec.level != "info":
                style = "red" if rec.level == "error" else "yellow"
                self.console.print(f"[{rec.level}] {rec.message}", style=style, markup=False)
            elif rec.kind in (
                PAUSED_EVENT,
                RESUMED_EVENT,
                EDGE_EVENT,
                NOTE_EVENT,
            ):  # a log should show them
                self.console.print(f"{rec.kind} at step {rec.step}: {rec.message}", markup=False)


def run_headless(cfg: RunConfig, console: Console | None = None, claimed: bool = False) -> int:
    """Train in this process with a progress bar; returns the exit code of the run's ending.
    ``claimed``: the parent already claimed the session (the trainer child)."""
    from sgdwalk.control import stop_on_signals
    from sgdwalk.runner import claim, drive, open_run

    if torchrun.follower():
        return _train_quietly(cfg)
    console = console or Console(file=QuietStream(sys.stdout), soft_wrap=True)
    run, writer = open_run(cfg if claimed else claim(cfg))
    info = run.info
    console.print(
        f"sgdwalk: session {writer.directory}  {cfg.model} on {cfg.dataset} "
        f"({info['n_train']} train, probe {info['probe_size'] or 'batch'})  "
        f"{info['params']:,} params  device {info['device']}, {info['threads']} thread{'' if info['threads'] == 1 else 's'} "
        f"({info['threads_reason']})",
        markup=False,
    )
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               StepsPerSecond(), TimeRemainingColumn())  # fmt: skip
    with (
        stop_on_signals() as controls,
        Progress(*columns, console=console, disable=not console.is_terminal) as progress,
    ):
        task = progress.add_task("train", total=info["total_steps"])
        view = HeadlessView(console, progress, task, cfg)
        records = controls.pausable(run.records(_stop_asked(controls)))
        try:
            status = drive(records, writer, view, cfg.log_to)
        finally:
            if run.ranks.world > 1:
                torchrun.leave(run.ranks)
    console.print(
        f"sgdwalk: {status}: session {writer.directory.name}, {view.step} steps, "
        f"{view.barriers} barriers",
        markup=False,
    )
    return exit_code(status)


def _stop_asked(controls: Any) -> Callable[[], bool]:
    """A stop asked by a signal, or by the end of the command this trainer belongs to."""
    from sgdwalk.tui.commands.trainer import Orphaned

    orphaned = Orphaned()
    return lambda: controls.should_stop() or orphaned()


def _train_quietly(cfg: RunConfig) -> int:
    """A rank other than 0: train in step with the others, write and print nothing."""
    from sgdwalk.control import stop_on_signals
    from sgdwalk.records import ENDINGS
    from sgdwalk.train import prepare

    run = prepare(cfg)
    status = "interrupted"
    with stop_on_signals() as controls:
        try:
            for rec in run.records(_stop_asked(controls)):
                if isinstance(rec, EventLogged) and rec.kind in ENDINGS:
                    status = rec.kind
        finally:
            torchrun.leave(run.ranks)
    return exit_code(status)
