"""A canned session: deterministic synthetic records written through the real SessionWriter.

UI and export tests read this instead of training, so they are fast and their expected values are
known. No torch needed.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import io
import math
import random
import subprocess
import sys
import time
from pathlib import Path

from sgdwalk.landscape import analyze_slice, interpolation_alphas
from sgdwalk.records import (
    FINISHED,
    Alignment,
    CurvatureMeasured,
    EpochEnded,
    EventLogged,
    StepMeasured,
)
from sgdwalk.session import SessionWriter

HANG = 1800  # seconds: a bound against a hang for subprocesses, never a measure of speed
STOPPED = 300  # seconds a process may take to end once a stop signal reached it

CANNED_CONFIG = {
    "model": "mlp", "dataset": "digits", "lr": 0.1, "batch_size": "64", "epochs": 4,
    "points": 10, "seed": 0, "session": "canned", "momentum": 0.0, "weight_decay": 0.0,
}  # fmt: skip
CANNED_INFO = {"device": "cpu", "params": 1234, "n_train": 1500, "total_steps": 96,
               "steps_per_epoch": 24, "points": 10, "layers": ["0", "1", "3"]}  # fmt: skip
ALIGN_SIZES = (100, 1000, 1500)


def canned_records(epochs: int = 4, steps_per_epoch: int = 24, k: int = 10, curvature: bool = True):
    """Yield records of a plausible run: bowl-shaped slices with a barrier every 7th step."""
    rng = random.Random(42)
    alphas = interpolation_alphas(k)
    loss = 2.3
    step = 0
    dist = 0.0
    prev = None
    if curvature:
        yield _curvature(0, 0, rng)
    for epoch in range(1, epochs + 1):
        barriers = interior = 0
        for _ in range(steps_per_epoch):
            step += 1
            nxt = loss * 0.97 + 0.01 * rng.random()
            depth = 0.05 * loss
            sl = [loss + (nxt - loss) * a - depth * 4 * a * (1 - a) for a in alphas]
            sl[0], sl[-1] = loss, nxt
            if step % 7 == 0:
                sl[k // 2] = max(loss, nxt) + 0.02
            s = analyze_slice(sl, alphas)
            dist += 0.1
            yield StepMeasured(
                step=step, epoch=epoch, lr=0.1, batch_size=64, batch_loss=loss + 0.05 * rng.random(),
                elapsed=step * 0.05, grad_norm=1.0 + rng.random(), alphas=alphas, slice=sl,
                barrier=s.barrier, barrier_height=s.barrier_height, floor_loss=s.floor_loss,
                floor_alpha=s.floor_alpha, interior_min=s.interior_min,
                height_above_floor=s.height_above_floor, step_norm=0.1, dist_from_init=dist,
                grad_cos=None if prev is None else math.cos(step / 5.0) * 0.5,
                update_cos=None if prev is None else math.cos(step / 7.0) * 0.5,
                # --decompose, by formula (no draws, so the other values stay as they were)
                **({"dominant_fraction": 0.5 + 0.4 * math.sin(step / 3.0),
                    "dominant_loss": loss + (nxt - loss) * 0.7,
                    "bulk_loss": loss + (nxt - loss) * 0.3,
                    "basis_step": (epoch - 1) * steps_per_epoch} if curvature else {}),
            )  # fmt: skip
            barriers += s.barrier
            interior += s.interior_min
            prev = loss
            loss = nxt
        yield EpochEnded(epoch=epoch, steps=step, train_loss=loss, train_acc=0.5 + 0.1 * epoch,
                         val_loss=loss * 1.1, val_acc=0.45 + 0.1 * epoch, barriers=barriers,
                         interior_min_fraction=interior / steps_per_epoch)  # fmt: skip
        if curvature:
            yield _curvature(step, epoch, rng)
    yield EventLogged(step, epochs, "info", FINISHED, f"finished {step} steps", step * 0.05)


def _curvature(step: int, epoch: int, rng: random.Random) -> CurvatureMeasured:
    eig = sorted((10.0 / (i + 1) + rng.random() for i in range(10)), reverse=True)
    align = [
        Alignment(
            batch_size=b,
            samples=10,
            eig_cos_mean=[0.1 * (j + 1) / 10 + b / 1e4 for j in range(10)],
            eig_cos_std=[0.01] * 10,
            subspace_mean=0.2 + b / 5000,
            subspace_std=0.02,
            rayleigh_mean=1.0 + b / 1000,
            rayleigh_std=0.1,
            full_cos_mean=0.3 + b / 3000,
            full_cos_std=0.05,
        )  # fmt: skip
        for b in ALIGN_SIZES
    ]
    # per-layer tops and a spectral density, from the step alone (the rng's draws stay as they were)
    layers = [0.6 * eig[0] + step / 100, 0.25 * eig[0], 0.05 * eig[0] + step / 500]
    nodes = [*eig, *(0.01 * j - 0.02 for j in range(6))]
    weights = [0.01] * 10 + [0.9 / 6] * 6
    return CurvatureMeasured(step=step, epoch=epoch, eigenvalues=eig, residuals=[1e-4] * 10,
                             hvps=30, alignment=align, layer_eigenvalues=layers,
                             density_nodes=nodes, density_weights=weights)  # fmt: skip


def write_canned_session(directory: Path, status: str = FINISHED, **kw) -> Path:
    """Write the canned records to ``directory`` (a new session folder); return it."""
    writer = SessionWriter(directory, CANNED_CONFIG | {"session": directory.name}, CANNED_INFO)
    for rec in canned_records(**kw):
        writer.write(rec)
    writer.close(status)
    return directory


def aio(test):
    """Run an async test on its own event loop (no pytest-asyncio needed)."""

    @functools.wraps(test)
    def wrapper(*args, **kwargs):
        return asyncio.run(test(*args, **kwargs))

    return wrapper


def write_then_die(directory: Path, epochs: int = 1) -> None:
    """A writer process that commits the canned records of ``epochs`` and dies (os._exit) without
    recording an ending, as a SIGKILL or a power cut would leave it."""
    root = Path(__file__).resolve().parent.parent
    code = (
        "import os, sys; sys.path.insert(0, 'tests'); from canned import *; "
        "from sgdwalk.session import SessionWriter; from pathlib import Path; "
        f"w = SessionWriter(Path({str(directory)!r}), CANNED_CONFIG, CANNED_INFO); "
        f"[w.write(r) for r in canned_records(epochs={epochs})]; w.commit(); os._exit(9)"
    )
    subprocess.run([sys.executable, "-c", code], cwd=root, check=False)


def screen_text(app) -> str:
    """What the terminal shows, as text: the app's screenshot (SVG) read back by position."""
    import html
    import re

    rows: dict[float, dict[int, str]] = {}
    svg = app.export_screenshot()
    pattern = r'<text class="[^"]*" x="([\d.]+)" y="([\d.]+)"[^>]*>(.*?)</text>'
    for x, y, text in re.findall(pattern, svg):
        row = rows.setdefault(float(y), {})
        for i, ch in enumerate(html.unescape(text).replace("\xa0", " ")):
            row[round(float(x) / 12.2) + i] = ch
    return "\n".join("".join(r.get(i, " ") for i in range(max(r) + 1)).rstrip()
                     for _, r in sorted(rows.items()))  # fmt: skip


async def until(pilot, cond, timeout: float = 300.0) -> None:
    """Let the app run (Pilot pauses of 50 ms) until ``cond()`` holds; fail after ``timeout``
    seconds (a bound against a hang: conditions normally hold within a second)."""
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached")
        await pilot.pause(0.05)


async def drawn(pilot, app) -> None:
    """Wait until the dashboard has taken every queued record and repainted everything pending
    (and no panel waits for a deferred repaint)."""
    from sgdwalk.tui.dashboard.grid import PANELS

    screen = app.dashboard
    queue = getattr(screen.source, "queue", None)  # a replay reads, it has no queue

    def settled() -> bool:
        queued = queue is not None and not queue.empty()
        shown = [n for n in screen.repaints.pending if n not in PANELS or screen.chart(n).display]
        deferred = any(screen.chart(n).deferred for n in PANELS)
        return not (queued or shown or deferred or screen.buffers.dirty)

    await until(pilot, settled)


def run_cli(*args: str, cwd: Path | None = None) -> tuple[int, str, str]:
    """``sgdwalk ARGS`` in this process (``main``, as the script runs it): exit code, out, err."""
    from sgdwalk.tui.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.ExitStack() as stack:
        if cwd is not None:
            stack.enter_context(contextlib.chdir(cwd))
        stack.enter_context(contextlib.redirect_stdout(out))
        stack.enter_context(contextlib.redirect_stderr(err))
        try:
            main(list(args))
            code = 0
        except SystemExit as e:
            code = int(e.code or 0)
    return code, out.getvalue(), err.getvalue()


@contextlib.contextmanager
def tmpfs(path: Path, options: str):
    """A tmpfs mounted at ``path`` with ``options`` (``size=400k``, ``ro,size=64k``): a full or
    read-only folder for real. Needs root; the test is skipped with the reason else."""
    import os

    import pytest

    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)],
                          capture_output=True, text=True)  # fmt: skip
    if done.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def reap(started: list[subprocess.Popen], wait: float = HANG) -> None:
    """Kill the processes a failing test left running, then forget them all (an autouse
    fixture's teardown: a forgotten 200-epoch child would hog the CPU for the tests after it)."""
    for proc in started:
        if proc.poll() is None:
            proc.kill()
            proc.wait(wait)
    started.clear()
