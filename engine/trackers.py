"""sgdwalk's scalars in the trackers a lab already uses: TensorBoard, Weights & Biases, trackio.

Why a copy and not a replacement: the session (``sgdwalk.session``) stays the source of truth,
with every slice and every curvature record in full; a tracker gets the scalars worth a chart
beside the lab's other runs, named ``scope/metric``:
- ``train/*``, ``slice/*``, ``walk/*`` per measured step (the batch loss and lr of every step);
- ``epoch/*`` per epoch (at its last step), the interior-minimum share and barriers among them;
- ``curvature/*`` and ``alignment/*`` per curvature pass (λ1, the optimizer's edge ratio).
Every value is logged at its training step, so the charts share one x axis. A target is named as
``tensorboard:DIR``, ``wandb`` (the active run: ``wandb.init`` is the script's) or
``trackio[:PROJECT]``; each library is imported only when asked for (optional extras).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Protocol

from sgdwalk.errors import ConfigError
from sgdwalk.records import CurvatureMeasured, EpochEnded, Record, StepMeasured

KINDS = ("tensorboard", "wandb", "trackio")


def scalars(rec: Record) -> tuple[int, dict[str, float]] | None:
    """The training step of a record and its scalars for a tracker (None: nothing to log)."""
    if isinstance(rec, StepMeasured):
        return rec.step, _finite(_step(rec))
    if isinstance(rec, EpochEnded):
        return rec.steps, _finite({
            "epoch/train_loss": rec.train_loss, "epoch/train_acc": rec.train_acc,
            "epoch/val_loss": rec.val_loss, "epoch/val_acc": rec.val_acc,
            "epoch/barriers": rec.barriers,
            "epoch/interior_min_fraction": rec.interior_min_fraction,
        })  # fmt: skip
    if isinstance(rec, CurvatureMeasured):
        return rec.step, _finite(_curvature(rec))
    return None


def _step(rec: StepMeasured) -> dict[str, float | None]:
    out: dict[str, float | None] = {"train/batch_loss": rec.batch_loss, "train/lr": rec.lr}
    if rec.measured and rec.slice:
        out |= {
            "train/grad_norm": rec.grad_norm, "slice/loss": rec.slice[0],
            "slice/floor_alpha": rec.floor_alpha, "slice/height_above_floor": rec.height_above_floor,
            "slice/barrier_height": rec.barrier_height, "slice/barrier": float(bool(rec.barrier)),
            "slice/interior_min": float(bool(rec.interior_min)), "walk/step_norm": rec.step_norm,
            "walk/dist_from_init": rec.dist_from_init, "walk/grad_cos": rec.grad_cos,
            "walk/update_cos": rec.update_cos, "walk/dominant_fraction": rec.dominant_fraction,
            "curvature/batch_sharpness": rec.batch_sharpness,
        }  # fmt: skip
    return out


def _curvature(rec: CurvatureMeasured) -> dict[str, float | None]:
    out: dict[str, float | None] = {
        "curvature/lambda1": rec.eigenvalues[0] if rec.eigenvalues else None,
        "curvature/edge_ratio": rec.edge_ratio, "curvature/sharpness": rec.sharpness,
        "curvature/threshold": rec.threshold,
    }  # fmt: skip
    for a in rec.alignment:
        out[f"alignment/subspace_b{a.batch_size}"] = a.subspace_mean
    return out


def _finite(values: dict[str, float | None]) -> dict[str, float]:
    return {k: float(v) for k, v in values.items() if v is not None and math.isfinite(v)}


class Tracker(Protocol):
    def log(self, step: int, values: dict[str, float]) -> None: ...

    def close(self) -> None: ...


class TensorBoard:
    """Event files in ``folder``, as ``torch.utils.tensorboard`` writes them."""

    def __init__(self, folder: str) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise ConfigError("log_to tensorboard: install it (pip install "
                              "'sgdwalk[trackers]' or tensorboard)") from None  # fmt: skip
        self.writer = SummaryWriter(log_dir=folder)

    def log(self, step: int, values: dict[str, float]) -> None:
        for key, value in values.items():
            self.writer.add_scalar(key, value, step)

    def close(self) -> None:
        self.writer.close()


class WandB:
    """The script's active W&B run (``wandb.init`` before the Walker or the run)."""

    def __init__(self) -> None:
        try:
            import wandb
        except ImportError:
            raise ConfigError("log_to wandb: install it (pip install wandb)") from None
        if wandb.run is None:
            raise ConfigError("log_to wandb: no active W&B run; call wandb.init(...) first")
        self.run = wandb.run

    def log(self, step: int, values: dict[str, float]) -> None:
        self.run.log({**values, "sgdwalk/step": step})

    def close(self) -> None:
        pass  # the run is the script's: it finishes it


class Trackio:
    """A trackio run in ``project`` (started here, finished at the end)."""

    def __init__(self, project: str, name: str | None = None) -> None:
        try:
            import trackio
        except ImportError:
            raise ConfigError("log_to trackio: install it (pip install trackio)") from None
        self.trackio = trackio
        self.run = trackio.init(project=project, name=name)

    def log(self, step: int, values: dict[str, float]) -> None:
        self.trackio.log(values, step=step)

    def close(self) -> None:
        self.trackio.finish()


def parse_targets(spec: str | Iterable[str] | None) -> list[tuple[str, str]]:
    """'tensorboard:runs/x,wandb' -> [("tensorboard", "runs/x"), ("wandb", "")]."""
    if spec is None:
        return []
    parts = spec.split(",") if isinstance(spec, str) else list(spec)
    out = []
    for part in (p.strip() for p in parts):
        if not part:
            continue
        kind, _, where = part.partition(":")
        if kind not in KINDS:
            raise ConfigError(f"log_to: unknown tracker {kind!r}; use tensorboard:DIR, wandb or "
                              "trackio[:PROJECT]")  # fmt: skip
        if kind == "tensorboard" and not where:
            raise ConfigError("log_to: tensorboard needs a folder: tensorboard:DIR")
        out.append((kind, where))
    return out


class Trackers:
    """Every target asked for; ``record`` hands each a record's scalars."""

    def __init__(self, spec: str | Iterable[str] | None, name: str | None = None) -> None:
        self.targets: list[Tracker] = []
        for kind, where in parse_targets(spec):
            if kind == "tensorboard":
                self.targets.append(TensorBoard(where))
            elif kind == "wandb":
                self.targets.append(WandB())
            else:
                self.targets.append(Trackio(where or "sgdwalk", name))

    def __bool__(self) -> bool:
        return bool(self.targets)

    def record(self, rec: Record) -> None:
        if not self.targets:
            return
        got = scalars(rec)
        if got is None or not got[1]:
            return
        for t in self.targets:
            t.log(*got)

    def close(self) -> None:
        for t in self.targets:
            t.close()
        self.targets = []


__all__ = ["KINDS", "Trackers", "parse_targets", "scalars"]
