"""How many CPU threads should a run use, on an idle machine and on a busy one?

Runs ``sgdwalk run --headless --epochs 1 --hessian-every off`` (or ``--epochs``, ``--hessian-every``
as given; the CNN on CIFAR-shaped data with ``--model cnn --dataset synthetic-cifar10``)
with several thread settings, first alone, then beside ``--busy`` spinning processes (what other
users' jobs look like on a shared server), alternating the settings so drift hits all alike.
Reports the median wall time per setting and the time to the first measured step (read from the
session: its first step's ``elapsed`` plus the start-up before it).

    python tests/bench/bench_threads.py --rounds 3 --busy 1
    python tests/bench/bench_threads.py --model cnn --dataset synthetic-cifar10 --train-size 1024

A setting is "auto" (no flag: sgdwalk's own choice), "threads=N" (``--threads N``), optionally with
"+passive" or "+active" (the OpenMP wait policy, OMP_WAIT_POLICY), e.g. "threads=2+active".
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SGDWALK = str(Path(sys.executable).with_name("sgdwalk"))
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))


def one_run(setting: str, extra: list[str], folder: Path, n: int) -> tuple[float, float]:
    """(wall seconds of the whole command, seconds from launch to the first stored step)."""
    from sgdwalk import open_session

    name = f"t{n}"
    argv = [SGDWALK, "run", "--headless", "--sessions-dir", str(folder), "--session", name,
            *extra]  # fmt: skip
    env = dict(os.environ)
    for part in setting.split("+"):
        if part.startswith("threads="):
            argv += ["--threads", part.split("=")[1]]
        elif part == "passive":
            env["OMP_WAIT_POLICY"] = "PASSIVE"
        elif part == "active":
            env["OMP_WAIT_POLICY"] = "ACTIVE"
    launched, t0 = time.time(), time.perf_counter()
    subprocess.run(argv, env=env, check=True, capture_output=True)
    wall = time.perf_counter() - t0
    with open_session(folder / name) as s:
        first = next(s.steps())
        started = s.started_at  # wall clock when the session was created
    return wall, (started - launched) + first.elapsed


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--busy", type=int, default=1, help="spinning processes beside the run")
    ap.add_argument("--settings", default="auto,threads=1,threads=2,threads=2+passive")
    ap.add_argument("--model", default="mlp")
    ap.add_argument("--dataset", default="digits")
    ap.add_argument("--train-size", default=None)
    ap.add_argument("--epochs", default="1")
    ap.add_argument("--hessian-every", default="off")
    args = ap.parse_args()
    extra = ["--model", args.model, "--dataset", args.dataset, "--epochs", args.epochs,
             "--hessian-every", args.hessian_every]  # fmt: skip
    if args.train_size:
        extra += ["--train-size", args.train_size]
    settings = args.settings.split(",")
    results: dict[str, dict[str, list[float]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        n = 0
        for load in ("idle", "busy"):
            spinners = []
            if load == "busy":
                spin = "while True: pass"
                spinners = [subprocess.Popen([sys.executable, "-c", spin])
                            for _ in range(args.busy)]  # fmt: skip
            try:
                for _ in range(args.rounds):
                    for setting in settings:
                        n += 1
                        wall, first = one_run(setting, extra, Path(tmp), n)
                        cell = results.setdefault(f"{load} {setting}", {"wall": [], "first": []})
                        cell["wall"].append(wall)
                        cell["first"].append(first)
            finally:
                for p in spinners:
                    p.kill()
    summary = {k: {m: round(statistics.median(v), 2) for m, v in cell.items()}
               for k, cell in results.items()}  # fmt: skip
    print(json.dumps({"model": args.model, "dataset": args.dataset, "busy": args.busy,
                      "rounds": args.rounds, "median_seconds": summary}, indent=2))  # fmt: skip


if __name__ == "__main__":
    main()
