"""How small can the probe set be? The same training steps measured on probes of N examples and on
the whole training split: per N, the share of steps whose verdicts agree (barrier; interior minimum)
and the error of the valley floor's α.

Training does not depend on the probe (measuring touches neither the model nor the data order), so
runs with the same seed and one thread take the same steps; each probe size is one
``sgdwalk run --headless`` and the sessions are compared step by step.

    python tests/bench/bench_probe.py --sizes 64,128,256,512,1024 --epochs 3
    python tests/bench/bench_probe.py --dataset mnist --data-dir ~/data --sizes 256,2048 --train-size 10000

Prints a markdown table (the README's) and, with --json, the numbers.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from sgdwalk.session import open_session


def run(folder: Path, name: str, probe: str, extra: list[str]) -> None:
    argv = [sys.executable, "-m", "sgdwalk.tui.cli", "run", "--headless", "--threads", "1",
            "--hessian-every", "off", "--probe", probe, "--session", name,
            "--sessions-dir", str(folder), *extra]  # fmt: skip
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL)


def compare(full: list, small: list) -> dict[str, float]:
    pairs = [(a, b) for a, b in zip(full, small, strict=True) if a.measured and b.measured]
    n = len(pairs)
    return {
        "steps": n,
        "barrier_agree": sum(a.barrier == b.barrier for a, b in pairs) / n,
        "interior_agree": sum(a.interior_min == b.interior_min for a, b in pairs) / n,
        "floor_alpha_mean_abs_error": statistics.fmean(
            abs(a.floor_alpha - b.floor_alpha) for a, b in pairs
        ),  # fmt: skip
        "interior_share_full": sum(bool(a.interior_min) for a, _ in pairs) / n,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="64,128,256,512,1024")
    ap.add_argument("--epochs", default="3")
    ap.add_argument("--json", action="store_true")
    args, extra = ap.parse_known_args()
    extra = ["--epochs", args.epochs, *extra]
    out = {}
    with tempfile.TemporaryDirectory() as d:
        folder = Path(d)
        run(folder, "full", "full", extra)
        with open_session(folder / "full") as s:
            full = list(s.steps())
        for size in args.sizes.split(","):
            run(folder, f"p{size}", size, extra)
            with open_session(folder / f"p{size}") as s:
                out[int(size)] = compare(full, list(s.steps()))
    if args.json:
        print(json.dumps(out, indent=2))
        return
    print(
        "| probe N | steps | barrier verdict agrees | interior-minimum verdict agrees "
        "| mean abs error of floor α |"
    )
    print("| --- | --- | --- | --- | --- |")
    for size, r in out.items():
        print(
            f"| {size} | {r['steps']} | {r['barrier_agree']:.1%} | {r['interior_agree']:.1%} "
            f"| {r['floor_alpha_mean_abs_error']:.3f} |"
        )


if __name__ == "__main__":
    main()
