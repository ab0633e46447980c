"""Benchmarks for the dashboard (not timed tests): run with .venv/bin/python tests/bench/bench_dashboard.py.

- throughput: steps/s of the same run with the dashboard (Pilot, 120x40) vs without (drive only),
  on the digits default and on cnn + synthetic-cifar10; alternated to share the machine's noise.
- keys: latency of a key press answered by the dashboard while training runs.
- replay: first frame and seek times on a generated 100,000-step session.
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from engine.config import build_config  # noqa: E402
from engine.runner import drive, open_writer  # noqa: E402


def config(tmp: Path, name: str, **flags):
    base = {"hessian_every": "off", "sessions_dir": str(tmp), "session": name, "device": "cpu"}
    return build_config(base | flags)


def headless_rate(cfg) -> float:
    from engine.train import prepare

    run = prepare(cfg)
    writer = open_writer(cfg, run.info)
    last = []
    drive(run.records(), writer, lambda: run.status, last.append)
    steps = [r for r in last if type(r).__name__ == "StepMeasured"]
    return (steps[-1].step - steps[0].step) / (steps[-1].elapsed - steps[0].elapsed)


async def dashboard_rate(cfg, keys: list[float] | None = None) -> float:
    from engine.train import prepare
    from tui.app import make_app
    from tui.sources import LiveSource

    run = prepare(cfg)
    writer = open_writer(cfg, run.info)
    source = LiveSource(run, writer, cfg.session, run.info)
    app = make_app(source)
    async with app.run_test(size=(120, 40)) as pilot:
        while not source.done.is_set():
            await pilot.pause(0.25)
            if keys is not None and not source.done.is_set():
                t = time.perf_counter()
                await pilot.press("plus" if len(keys) % 2 else "minus")
                keys.append(time.perf_counter() - t)
        await pilot.pause(0.6)
        trail = list(app.dashboard.buffers.trail)
    return (trail[-1].step - trail[0].step) / (trail[-1].elapsed - trail[0].elapsed)


def throughput(label: str, rounds: int = 2, **flags) -> None:
    tmp = Path(tempfile.mkdtemp())
    ratios = []
    keys: list[float] = []
    for i in range(rounds):
        h = headless_rate(config(tmp, f"h{i}", **flags))
        d = asyncio.run(dashboard_rate(config(tmp, f"d{i}", **flags), keys))
        ratios.append(d / h)
        print(f"{label}: headless {h:7.1f} steps/s  dashboard {d:7.1f} steps/s  ratio {d / h:.2f}")
    print(f"{label}: median ratio {statistics.median(ratios):.2f}")
    ms = sorted(k * 1000 for k in keys)
    print(
        f"{label}: key press while training: median {statistics.median(ms):.1f} ms, "
        f"p90 {ms[int(len(ms) * 0.9)]:.1f} ms, max {ms[-1]:.1f} ms over {len(ms)} presses"
    )


def make_big_session(path: Path, steps: int = 100_000, per_epoch: int = 1000) -> None:
    from canned_big import write_big

    write_big(path, steps, per_epoch)


async def replay_bench(path: Path) -> None:
    import random

    from engine.session import open_session
    from tui.app import make_app
    from tui.replay import ReplayCursor

    t0 = time.perf_counter()
    app = make_app(ReplayCursor(open_session(path)))
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        first = time.perf_counter() - t0
        scr = app.dashboard
        rng = random.Random(0)
        seeks, drawn = [], []
        for _ in range(30):
            target = rng.randint(1, 100_000)
            t = time.perf_counter()
            scr.seek(target)
            seeks.append(time.perf_counter() - t)
            await pilot.pause()
            drawn.append(time.perf_counter() - t)
            assert scr.cursor.cursor == target
    print(f"replay 100k: first frame {first * 1000:.0f} ms (app start to first drawn screen)")
    print(
        f"replay 100k: seek (indexed read + buffers) median {statistics.median(seeks) * 1000:.1f} ms,"
        f" max {max(seeks) * 1000:.1f} ms; seek + redraw median "
        f"{statistics.median(drawn) * 1000:.1f} ms, max {max(drawn) * 1000:.1f} ms"
    )


def main() -> None:
    what = sys.argv[1:] or ["replay", "digits", "cnn"]
    if "replay" in what:
        path = Path(tempfile.mkdtemp()) / "big"
        t = time.perf_counter()
        make_big_session(path)
        print(f"generated 100,000-step session in {time.perf_counter() - t:.1f} s")
        asyncio.run(replay_bench(path))
    if "digits" in what:
        throughput("digits mlp", epochs=3)
    if "cnn" in what:
        throughput(
            "cnn synthetic-cifar10",
            model="cnn",
            dataset="synthetic-cifar10",
            epochs=1,
            train_size=1024,
        )


if __name__ == "__main__":
    main()
