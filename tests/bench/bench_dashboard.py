"""Benchmarks for the dashboard (not timed tests): run with .venv/bin/python tests/bench/bench_dashboard.py.

- throughput: training steps/s (from the sessions' records) of ``sgdwalk run`` with the dashboard
  vs ``sgdwalk run --headless``, both in tmux at 120x40, on the digits default and on cnn +
  synthetic-cifar10, alternated to share the machine's noise (``in-process``: the same for the
  ``--in-process`` mode, through Pilot).
- keys: time from a key press (tmux send-keys) to the changed screen (capture-pane), while training.
- replay: first frame and seek times on a generated 100,000-step session.
"""

from __future__ import annotations

import asyncio
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from sgdwalk.config import build_config  # noqa: E402
from sgdwalk.runner import drive, open_run  # noqa: E402


def config(tmp: Path, name: str, **flags):
    base = {"hessian_every": "off", "sessions_dir": str(tmp), "session": name, "device": "cpu"}
    return build_config(base | flags)


def headless_rate(cfg) -> float:
    run, writer = open_run(cfg)
    last = []
    drive(run.records(), writer, last.append)
    steps = [r for r in last if type(r).__name__ == "StepMeasured"]
    return (steps[-1].step - steps[0].step) / (steps[-1].elapsed - steps[0].elapsed)


async def dashboard_rate(cfg, keys: list[float] | None = None) -> float:
    from sgdwalk.tui.dashboard.app import make_app
    from sgdwalk.tui.dashboard.sources import RunSource

    run, writer = open_run(cfg)
    source = RunSource(run, writer, cfg.session, run.info)
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
    """In-process mode (``--in-process``): dashboard and training share one interpreter."""
    tmp = Path(tempfile.mkdtemp())
    ratios = []
    keys: list[float] = []
    for i in range(rounds):
        h = headless_rate(config(tmp, f"h{i}", **flags))
        d = asyncio.run(dashboard_rate(config(tmp, f"d{i}", **flags), keys))
        ratios.append(d / h)
        print(
            f"{label} in-process: headless {h:7.1f} steps/s  dashboard {d:7.1f}  ratio {d / h:.2f}"
        )
    print(f"{label} in-process: median ratio {statistics.median(ratios):.2f}")


ROOT = Path(__file__).resolve().parents[2]
SGDWALK = ROOT / ".venv" / "bin" / "sgdwalk"
SOCKET = "sgdwalk-bench"


def _tmux(*args: str) -> str:
    return subprocess.run(["tmux", "-L", SOCKET, *args], capture_output=True, text=True).stdout


def _session_rate(path: Path) -> float:
    from sgdwalk.session import open_session

    with open_session(path) as s:
        steps = list(s.steps())
    return (steps[-1].step - steps[0].step) / (steps[-1].elapsed - steps[0].elapsed)


def _run_in_tmux(args: list[str], name: str, keys: list[float] | None) -> None:
    cmd = f"env -u COLUMNS -u LINES {SGDWALK} {' '.join(args)}; echo BENCH-EXIT; sleep 5"
    _tmux("-f", "/dev/null", "new", "-d", "-s", name, "-x", "120", "-y", "40", cmd)
    _tmux("set-option", "-t", name, "window-size", "manual")
    _tmux("resize-window", "-t", name, "-x", "120", "-y", "40")
    window = 20
    while "BENCH-EXIT" not in (screen := _tmux("capture-pane", "-p", "-t", name)):
        if "✔ finished" in screen:
            _tmux("send-keys", "-t", name, "q")  # the dashboard stays up after a run: leave
        if keys is not None and f"last {window} steps" in screen and "● live" in screen:
            key, window = ("plus", 40) if window == 20 else ("minus", 20)
            t = time.perf_counter()
            _tmux("send-keys", "-t", name, "+" if key == "plus" else "-")
            while f"last {window} steps" not in _tmux("capture-pane", "-p", "-t", name):
                if time.perf_counter() - t > 5:
                    break
            keys.append(time.perf_counter() - t)
            time.sleep(0.3)
        time.sleep(0.05)
    _tmux("kill-session", "-t", name)


def throughput_cli(
    label: str, rounds: int = 2, *flags: str, dashboard: tuple[str, ...] = ()
) -> None:
    """``sgdwalk run`` (dashboard + child trainer) against ``run --headless``, both in tmux."""
    tmp = Path(tempfile.mkdtemp())
    ratios, keys = [], []
    for i in range(rounds):
        base = ["run", "--hessian-every", "off", "--sessions-dir", str(tmp), *flags]
        _run_in_tmux([*base, "--headless", "--session", f"h{i}"], f"h{i}", None)
        _run_in_tmux([*base, *dashboard, "--session", f"d{i}"], f"d{i}", None)
        h, d = _session_rate(tmp / f"h{i}"), _session_rate(tmp / f"d{i}")
        ratios.append(d / h)
        print(f"{label}: headless {h:7.1f} steps/s  dashboard {d:7.1f} steps/s  ratio {d / h:.2f}")
    print(f"{label}: median ratio {statistics.median(ratios):.2f}")
    # keys in a round of their own: the polling that times them would load the machine
    base = ["run", "--hessian-every", "off", "--sessions-dir", str(tmp), *flags]
    _run_in_tmux([*base, *dashboard, "--session", "keys"], "keys", keys)
    if keys:
        ms = sorted(k * 1000 for k in keys)
        print(
            f"{label}: key press to changed screen (tmux capture): median "
            f"{statistics.median(ms):.0f} ms, max {ms[-1]:.0f} ms over {len(ms)} presses"
        )


def make_big_session(path: Path, steps: int = 100_000, per_epoch: int = 1000) -> None:
    from canned_big import write_big

    write_big(path, steps, per_epoch)


async def replay_bench(path: Path) -> None:
    import random

    from sgdwalk.session import open_session
    from sgdwalk.tui.dashboard.app import make_app
    from sgdwalk.tui.dashboard.replay import ReplaySource

    t0 = time.perf_counter()
    app = make_app(ReplaySource(open_session(path)))
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
            assert scr.source.cursor == target
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
        throughput_cli("digits mlp", 3, "--epochs", "5")
    if "digits-1" in what:
        throughput_cli(
            "digits mlp, dashboard's trainer 1 thread",
            3,
            "--epochs",
            "5",
            dashboard=("--threads", "1"),
        )
    if "cnn" in what:
        throughput_cli(
            "cnn synthetic-cifar10",
            2,
            "--model",
            "cnn",
            "--dataset",
            "synthetic-cifar10",
            "--epochs",
            "1",
            "--train-size",
            "2048",
        )
    if "in-process" in what:
        throughput("digits mlp", epochs=3)


if __name__ == "__main__":
    main()
