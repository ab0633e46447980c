"""A generated session of any length (default 100,000 steps), for replay benchmarks."""

from __future__ import annotations

import math
from pathlib import Path

from sgdwalk.landscape import interpolation_alphas
from sgdwalk.records import FINISHED, EpochEnded, StepMeasured
from sgdwalk.session import SessionWriter


def write_big(path: Path, steps: int = 100_000, per_epoch: int = 1000, k: int = 10) -> None:
    alphas = interpolation_alphas(k)
    w = SessionWriter(path, {"epochs": steps // per_epoch, "session": path.name},
                      {"device": "cpu", "total_steps": steps})  # fmt: skip
    loss, barriers = 2.3, 0
    for t in range(1, steps + 1):
        nxt = loss * 0.99995
        sl = [loss + (nxt - loss) * a - 0.01 * a * (1 - a) for a in alphas]
        barrier = t % 13 == 0
        if barrier:
            sl[k // 2] = loss + 0.01
        barriers += barrier
        w.write(StepMeasured(step=t, epoch=(t - 1) // per_epoch + 1, lr=0.1, batch_size=64,
                             batch_loss=loss, elapsed=t * 0.01, grad_norm=1.0, alphas=alphas,
                             slice=sl, barrier=barrier, barrier_height=0.0, floor_loss=min(sl),
                             floor_alpha=0.5, interior_min=not barrier, height_above_floor=0.0,
                             step_norm=0.1, dist_from_init=t * 0.01, grad_cos=math.cos(t / 9),
                             update_cos=math.cos(t / 11)))  # fmt: skip
        if t % per_epoch == 0:
            e = t // per_epoch
            w.write(EpochEnded(e, t, loss, 0.9, loss, 0.9, barriers, 0.5))
            barriers = 0
        loss = nxt
    w.close(FINISHED)
