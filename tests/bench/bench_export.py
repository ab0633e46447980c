"""Benchmark: export of Figure 1 from a generated 100,000-step session (issue 5: under 2 s).

Run: ``.venv/bin/python tests/bench/bench_export.py [--steps N] [--keep DIR]``. Rows are generated
without training and written through the real ``SessionWriter`` (one commit per epoch), so the
session is the same shape as a real one. Times the command as a user runs it (a subprocess,
including interpreter start-up) and the export call alone, for txt and png.
"""

from __future__ import annotations

import argparse
import math
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from sgdwalk.landscape import (
    analyze_slice,  # noqa: E402
    interpolation_alphas,
)
from sgdwalk.records import FINISHED, EpochEnded, StepMeasured  # noqa: E402
from sgdwalk.session import SessionWriter  # noqa: E402

STEPS_PER_EPOCH = 1000


def generate(directory: Path, steps: int, k: int = 10) -> float:
    """Write ``steps`` synthetic measured steps; return the seconds it took."""
    t0 = time.perf_counter()
    alphas = interpolation_alphas(k)
    w = SessionWriter(directory, {"model": "mlp", "dataset": "synthetic", "lr": 0.1,
                                  "batch_size": "64", "points": k}, {"device": "cpu"},
                      commit_interval=3600.0)  # fmt: skip
    loss = 2.3
    for t in range(1, steps + 1):
        epoch = (t - 1) // STEPS_PER_EPOCH + 1
        nxt = loss * 0.99999 + 1e-3 * math.sin(t)
        sl = [loss + (nxt - loss) * a - 0.02 * loss * 4 * a * (1 - a) for a in alphas]
        s = analyze_slice(sl, alphas)
        w.write(StepMeasured(
            step=t, epoch=epoch, lr=0.1, batch_size=64, batch_loss=loss, elapsed=t * 0.01,
            grad_norm=1.0, alphas=alphas, slice=sl, barrier=s.barrier,
            barrier_height=s.barrier_height, floor_loss=s.floor_loss, floor_alpha=s.floor_alpha,
            interior_min=s.interior_min, height_above_floor=s.height_above_floor, step_norm=0.1,
            dist_from_init=t * 0.1, grad_cos=math.cos(t / 9), update_cos=math.cos(t / 11),
        ))  # fmt: skip
        if t % STEPS_PER_EPOCH == 0 or t == steps:
            w.write(EpochEnded(epoch, t, loss, 0.5, loss, 0.5, 0, 0.0))
        loss = nxt
    w.close(FINISHED)
    return time.perf_counter() - t0


def time_cli(session: Path, out: Path, *args: str) -> float:
    exe = Path(sys.executable).parent / "sgdwalk"
    t0 = time.perf_counter()
    subprocess.run([str(exe), "export", str(session), "-o", str(out), "--force", *args],
                   check=True, capture_output=True)  # fmt: skip
    return time.perf_counter() - t0


def time_call(session: Path, out: Path, **kw) -> float:
    from sgdwalk.tui.figures.export import ExportRequest, run_export

    t0 = time.perf_counter()
    run_export(ExportRequest(sessions=[str(session)], output=str(out), force=True, **kw))
    return time.perf_counter() - t0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=100_000)
    p.add_argument("--keep", type=Path, help="write the session here and keep it")
    a = p.parse_args()
    root = a.keep or Path(tempfile.mkdtemp(prefix="sgdwalk-bench-"))
    session = root / "bench100k"
    if not session.exists():
        print(f"generating {a.steps} steps: {generate(session, a.steps):.1f} s")
    last_epoch = (a.steps - 1) // STEPS_PER_EPOCH + 1
    for fmt in ("txt", "png"):
        out = root / f"fig1.{fmt}"
        cli = time_cli(session, out)
        late = time_cli(session, out, "--epoch", str(last_epoch))
        call = time_call(session, out)
        print(f"Figure 1 {fmt}: command {cli:.2f} s (epoch {last_epoch}: {late:.2f} s), "
              f"export call {call:.3f} s  [target < 2 s]")  # fmt: skip
    wide = time_cli(session, root / "slices-wide.png", "--steps", f"{a.steps - 999}:")
    print(f"Figure 1 png of the last 1000 steps: {wide:.2f} s")
    full = time_cli(session, root / "all.csv", "--steps", "1:")
    print(f"csv of all {a.steps} steps: {full:.2f} s")


if __name__ == "__main__":
    main()
