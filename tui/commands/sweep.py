"""``sgdwalk sweep``: a grid of runs on this machine, a few at a time, compared while they train.

Why each point is a trainer child, as ``run``'s dashboard starts one (``sgdwalk.tui.commands.
trainer``): a point is an ordinary run with an ordinary session, and the children's stops, their
grace and the sessions they leave "running" when killed are already answered for
(``sgdwalk.tui.commands.children``). The children stay in this command's process group and know
their owner, so a Ctrl+C in the terminal, a hang-up, or this command's end (even by SIGKILL) stops
them; every stop is also passed on as SIGTERM, so each ends interrupted with every step it took.

Why threads are shared out: torch's threads spin while they wait for each other, so N runs of
one thread per core each would thrash; each run gets the free cores divided by the runs at a
time (``sgdwalk.cpu``), unless ``--threads`` says. The plan, its folder and resuming are
``sgdwalk.sweep``'s; what is shown is ``compare``'s (its rows and its view).
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from sgdwalk.config import RunConfig, build_config
from sgdwalk.cpu import choose_threads, usable_cores
from sgdwalk.errors import EXIT_CODES, SessionError, SgdwalkError, UsageError
from sgdwalk.records import FAILED, INTERRUPTED
from sgdwalk.runner import claim, session_of
from sgdwalk.session import DB_NAME, open_session
from sgdwalk.session.naming import sessions_folder
from sgdwalk.session.schema import check_session_name
from sgdwalk.sweep import Point, default_name, grid, plan, to_run
from sgdwalk.sweep import points as grid_points
from sgdwalk.tui.commands.children import Owned
from sgdwalk.tui.commands.compare import compare_row
from sgdwalk.tui.commands.trainer import EndedEarly, shell_code, start_trainer
from sgdwalk.tui.text import share_text

POLL = 0.2  # seconds between looks at the running children
PER_CORE = 4  # runs at a time beyond this many per core only thrash
HOW = ("log_to", "threads")  # how the runs go, not what they are: a resumed sweep may change it


@dataclass(frozen=True)
class Sweep:
    """A planned sweep: its folder, every point, and the runs still to train (with their config)."""

    name: str
    folder: Path
    points: list[Point]
    todo: list[tuple[Point, RunConfig]]
    parallel: int


@dataclass(frozen=True)
class Ended:
    """A point's run as it ended: its status, its exit code (a shell's), its line."""

    point: Point
    status: str
    code: int
    line: str


def prepare(flags: dict[str, Any], parallel: int | None) -> Sweep:
    """Plan the sweep the flags give (bad values, every point's, are a ``ConfigError`` before
    anything starts), in ``SESSIONS/NAME``; resuming keeps the points that finished."""
    flags = {k: ",".join(v) if isinstance(v, list) else v for k, v in flags.items()}
    _check_parallel(parallel)
    swept, shared = grid(flags)
    given, where = shared.pop("session", None), shared.pop("sessions_dir", None)
    what = {k: v for k, v in shared.items() if k not in HOW}  # the grid's plan
    name = check_session_name(given or default_name(swept, what))
    folder = sessions_folder(where) / name
    configs = {p.name: _config(shared, p, folder) for p in grid_points(swept)}  # all checked
    points = plan(folder, swept, what)
    todo = [(p, configs[p.name]) for p in points if to_run(folder, p)]
    free, _ = choose_threads(None)  # the free cores, now
    parallel = parallel or max(1, min(free, len(todo)))  # no more at a time than there are runs
    if shared.get("threads") is None:  # each run's torch threads: the free cores shared out
        todo = [(p, replace(c, threads=max(1, free // parallel))) for p, c in todo]
    return Sweep(name, folder, points, todo, parallel)


def _config(shared: dict[str, Any], point: Point, folder: Path) -> RunConfig:
    cfg = build_config(shared | point.settings | {"session": point.name,
                                                   "sessions_dir": str(folder)})  # fmt: skip
    return replace(cfg, log_to=cfg.log_to.per_run(point.name))  # one TensorBoard run per point


def _check_parallel(asked: int | None) -> None:
    cores = usable_cores()
    if asked is not None and not 1 <= asked <= PER_CORE * cores:
        raise UsageError(f"--parallel: must be from 1 to {PER_CORE * cores} on this machine's "
                         f"{cores} cores, got {asked}")  # fmt: skip


class Scheduler:
    """Trains a sweep's runs ``parallel`` at a time (in a thread of its own); ``stop`` stops them
    all (twice: kills them now) and starts no more. ``report`` hears each run's end."""

    def __init__(self, sweep: Sweep, report: Callable[[Ended], None]) -> None:
        self.sweep, self.report = sweep, report
        self.running: dict[str, tuple[Point, Owned]] = {}
        self.ended: list[Ended] = []
        self.stopping = threading.Event()
        self.stopped = False  # a stop came while runs were left (not after the last one ended)
        self.done = threading.Event()
        self.lock = threading.Lock()
        self.paused = threading.Event()  # every run held between steps; none started meanwhile

    def run(self) -> None:
        try:
            self._run()
        except BaseException as e:  # a bug: its runs are stopped, the command raises it
            self.error = e
            self.stop()
            for point, owned in list(self.running.values()):
                self._finish(point, owned)
        finally:
            self.done.set()

    error: BaseException | None = None

    def _run(self) -> None:
        pending = deque(self.sweep.todo)
        while pending or self.running:
            while pending and len(self.running) < self.sweep.parallel and not self.paused.is_set():
                if self.stopping.is_set():
                    pending.clear()  # never started: the next run of the command starts them
                    break
                self._start(*pending.popleft())
            for point, owned in list(self.running.values()):
                if self.stopping.is_set() or owned.proc.poll() is not None:
                    self._finish(point, owned)  # (when stopping: waits, kills after the grace)
            self.stopping.wait(POLL)

    def stop(self, sig: int = signal.SIGTERM) -> None:
        """Stop every run (SIGTERM to each: it ends interrupted, every step kept)."""
        if self.done.is_set():
            return
        self.stopped = True
        self.stopping.set()
        with self.lock:
            for _, owned in self.running.values():
                owned.ask(signal.SIGTERM)

    def pause(self) -> bool:
        """Hold every run between two steps (the trainers' pause signal), or let them go on;
        no run starts while held. Whether they are held now."""
        from sgdwalk.control import PAUSE_SIGNAL, RESUME_SIGNAL

        held = not self.paused.is_set()
        (self.paused.set if held else self.paused.clear)()
        sig = PAUSE_SIGNAL if held else RESUME_SIGNAL
        with self.lock:
            for _, owned in self.running.values():
                if sig is not None and owned.proc.poll() is None:
                    with contextlib.suppress(ProcessLookupError, PermissionError):
                        os.kill(owned.proc.pid, sig)
        return held

    def _start(self, point: Point, cfg: RunConfig) -> None:
        try:
            cfg = claim(cfg)
            proc = start_trainer(cfg, detached=False)
        except EndedEarly as e:
            self._ended(Ended(point, FAILED, e.code, f"{point.name}: did not start: {e.last}"))
            return
        except SgdwalkError as e:  # the folder taken, no session in time
            self._ended(Ended(point, FAILED, e.exit_code, f"{point.name}: did not start: {e}"))
            return
        owned = Owned(proc, f"the run {point.name}", session_of(cfg))
        with self.lock:
            self.running[point.name] = (point, owned)
        if self.stopping.is_set():
            owned.ask(signal.SIGTERM)

    def _finish(self, point: Point, owned: Owned) -> None:
        code = shell_code(owned.wait())
        owned.settle(f"the run ended (exit code {code}) without recording an ending")
        with self.lock:
            del self.running[point.name]
        self._ended(ended_run(point, self.sweep.folder / point.name, code))

    def _ended(self, ended: Ended) -> None:
        self.ended.append(ended)
        self.report(ended)

    def exit_code(self) -> int:
        """As ``run``'s: 130 when stopped, else the first failure's, else 3 if one diverged."""
        if self.stopped:
            return EXIT_CODES[INTERRUPTED]
        codes = [e.code for e in self.ended]
        return next((c for c in codes if c not in (0, 3)), 3 if 3 in codes else 0)


def ended_run(point: Point, directory: Path, code: int) -> Ended:
    """A run's end as one line: its status, steps, interior-minimum share, barriers, loss."""
    try:
        with open_session(directory) as s:
            row = compare_row(s)
    except SessionError as e:
        return Ended(point, FAILED, code or 1, f"{point.name}: exit code {code}; {e}")
    return Ended(point, row["status"], code, run_line(row))


def run_line(row: dict[str, Any]) -> str:
    steps = row.get("steps") or 0
    interior = share_text(row.get("interior_min_fraction"), row.get("interior_min_low"),
                          row.get("interior_min_high"), row.get("measured_steps"), steps)  # fmt: skip
    per_epoch = row.get("barriers_per_epoch")
    loss = row.get("final_loss")
    return (f"{row['name']}: {row['status']}, {steps} steps, interior-min {interior}, barriers "
            f"{row.get('barriers', 0)}" + (f" ({per_epoch:.2f}/epoch)" if per_epoch is not None
            else "") + f", final loss {'-' if loss is None else f'{loss:.4f}'}")  # fmt: skip


def say(text: str) -> None:
    """A line on stdout; a terminal that is gone (SSH drop) is no error: the sessions have it."""
    with contextlib.suppress(OSError, ValueError):
        print(f"sgdwalk: {text}", flush=True)


def run_sweep(flags: dict[str, Any], parallel: int | None, headless: bool) -> int:
    """Plan and train the sweep; with a terminal (and not ``headless``) the comparison view shows
    it live, else one line per run as it ends. The exit code (as ``run``'s)."""
    sweep = prepare(flags, parallel)
    kept = len(sweep.points) - len(sweep.todo)
    threads = sweep.todo[0][1].threads if sweep.todo else None
    say(f"sweep {sweep.name}: {len(sweep.points)} runs"
        + (f" ({kept} finished before, kept)" if kept else "")
        + (f", {sweep.parallel} at a time, {threads} thread{'s' * (threads != 1)} each"
           if sweep.todo else "")
        + f", in {sweep.folder}")  # fmt: skip
    shown = not headless and sys.stdout.isatty()
    scheduler = Scheduler(sweep, (lambda e: None) if shown else (lambda e: say(e.line)))
    trainer = threading.Thread(target=scheduler.run, name="sweep", daemon=True)
    if shown:
        trainer.start()
        _view(sweep, scheduler).run()
        scheduler.stop()  # quitting the view (q, Ctrl+C) stops the runs still training
    with _stops(scheduler):
        if not shown:
            trainer.start()
        while trainer.is_alive():  # (joined in slices: signals reach this thread between)
            trainer.join(POLL)
    if scheduler.error is not None:
        raise scheduler.error
    if shown:
        for e in scheduler.ended:
            say(e.line)
    code = scheduler.exit_code()
    said = "stopped" if code == EXIT_CODES[INTERRUPTED] else "done"
    say(f"sweep {sweep.name} {said}; compare its runs: sgdwalk compare {sweep.name}"
        + (" (the same command again resumes it)" if said == "stopped" else ""))  # fmt: skip
    return code


@contextlib.contextmanager
def _stops(scheduler: Scheduler) -> Iterator[None]:
    """While the block runs: SIGINT, SIGTERM and SIGHUP stop every run (a second time: kill)."""
    from sgdwalk.control import STOP_SIGNALS

    def stop(sig: int, _frame: object) -> None:
        scheduler.stop(sig)

    previous = {s: signal.signal(s, stop) for s in STOP_SIGNALS}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def _view(sweep: Sweep, scheduler: Scheduler) -> Any:
    """The comparison view over the sweep's runs, found again as they start; p holds them all."""
    from sgdwalk.tui.commands.compare import rows
    from sgdwalk.tui.dashboard.compare import CompareApp

    def find() -> list[Path]:
        return [sweep.folder / p.name for p in sweep.points
                if (sweep.folder / p.name / DB_NAME).is_file()]  # fmt: skip

    return CompareApp(find(), rows, find=find, label=f"sweep {sweep.name}", pause=scheduler.pause)
