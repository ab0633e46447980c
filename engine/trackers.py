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

Why a tracker's failure is a warning and never an error once training runs: a network drop or a
full disk under a tracker's folder must not cost the run, whose session has everything anyway.
A misnamed or missing tracker is refused before anything starts (``LogTargets.parse``).
"""

from __future__ import annotations

import contextlib
import importlib.util
import math
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Protocol

from sgdwalk.errors import ConfigError
from sgdwalk.records import CurvatureMeasured, EpochEnded, Record, StepMeasured

KINDS = ("tensorboard", "wandb", "trackio")
PACKAGES = {"tensorboard": "tensorboard", "wandb": "wandb", "trackio": "trackio"}


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
    kind: str

    def log(self, step: int, values: dict[str, float]) -> None: ...

    def close(self) -> None: ...


class TensorBoard:
    """Event files in ``folder``, as ``torch.utils.tensorboard`` writes them."""

    kind = "tensorboard"

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
    """The script's active W&B run (``wandb.init`` before the Walker or the run). ``start``: with
    none active, start one in ``project`` named ``name`` and finish it at the end (``sgdwalk run``,
    which has no script to start it)."""

    kind = "wandb"

    def __init__(self, project: str = "", name: str | None = None, start: bool = False) -> None:
        try:
            import wandb
        except ImportError:
            raise ConfigError("log_to wandb: install it (pip install wandb)") from None
        self.own = wandb.run is None and start
        if self.own:
            wandb.init(project=project or "sgdwalk", name=name)
        if wandb.run is None:
            raise ConfigError("log_to wandb: no active W&B run; call wandb.init(...) first")
        self.run = wandb.run

    def log(self, step: int, values: dict[str, float]) -> None:
        self.run.log({**values, "sgdwalk/step": step})

    def close(self) -> None:
        if self.own:  # else the run is the script's: it finishes it
            self.run.finish()


class Trackio:
    """A trackio run in ``project`` (started here, finished at the end)."""

    kind = "trackio"

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


def parse_targets(spec: str | Iterable[str] | None, knob: str = "log_to") -> list[tuple[str, str]]:
    """'tensorboard:runs/x,wandb' -> [("tensorboard", "runs/x"), ("wandb", "")]; a list's items
    may hold several too (a repeated flag)."""
    if spec is None:
        return []
    items = [spec] if isinstance(spec, str) else spec
    parts = [p for item in items for p in str(item).split(",")]
    out = []
    for part in (p.strip() for p in parts):
        if not part:
            continue
        kind, _, where = part.partition(":")
        if kind not in KINDS:
            raise ConfigError(f"{knob}: unknown tracker {kind!r}; use tensorboard:DIR, "
                              "wandb[:PROJECT] or trackio[:PROJECT]")  # fmt: skip
        if kind == "tensorboard" and not where:
            raise ConfigError(f"{knob}: tensorboard needs a folder: tensorboard:DIR")
        out.append((kind, where))
    return out


@dataclass(frozen=True)
class LogTargets:
    """The trackers a run's scalars also go to, parsed and checked installed (a run setting:
    ``str`` is its canonical text, "" for none)."""

    targets: tuple[tuple[str, str], ...] = ()

    @classmethod
    def parse(cls, value: object, knob: str = "--log-to") -> LogTargets:
        if isinstance(value, LogTargets):
            return value
        if value is None:
            return cls()
        if not isinstance(value, str | list | tuple):
            raise ConfigError(f"{knob}: give text like 'tensorboard:DIR', got {value!r}")
        targets = tuple(parse_targets(value, knob))
        for kind, _ in targets:
            if importlib.util.find_spec(PACKAGES[kind]) is None:
                raise ConfigError(f"{knob}: {kind} is not installed (pip install "
                                  f"'sgdwalk[trackers]' or {PACKAGES[kind]})")  # fmt: skip
        return cls(targets)

    def __bool__(self) -> bool:
        return bool(self.targets)

    def __str__(self) -> str:
        return ",".join(f"{k}:{w}" if w else k for k, w in self.targets)

    def per_run(self, name: str) -> LogTargets:
        """For one run of several (a sweep's point): TensorBoard's folder gets a subfolder of
        the run's own, so its reader shows each run as one."""
        return LogTargets(tuple((k, f"{w.rstrip('/')}/{name}" if k == "tensorboard" else w)
                                for k, w in self.targets))  # fmt: skip


def warn_line(message: str) -> None:
    """A tracker's failure, one line on stderr (a closed stderr is no failure)."""
    with contextlib.suppress(OSError, ValueError):
        print(f"sgdwalk: warning: {message}", file=sys.stderr, flush=True)


class Trackers:
    """Every target asked for; ``record`` hands each a record's scalars.

    ``strict``: a target misnamed or misused (no active W&B run) raises ``ConfigError`` (the
    Walker, when it is made); any other failure to make one (an unwritable folder), or any at all
    when not strict (a trainer already running), is a warning and the others go on. ``start_wandb``:
    start a W&B run when none is active. A target that fails while logging is dropped with one
    warning (``warn``); training never stops for it.
    """

    def __init__(
        self, spec: str | Iterable[str] | LogTargets | None, name: str | None = None, *,
        strict: bool = True, start_wandb: bool = False,
        warn: Callable[[str], None] = warn_line,
    ) -> None:  # fmt: skip
        self.targets: list[Tracker] = []
        self.warn = warn
        pairs = spec.targets if isinstance(spec, LogTargets) else parse_targets(spec)
        for kind, where in pairs:
            try:
                self.targets.append(_make(kind, where, name, start_wandb))
            except Exception as e:  # noqa: BLE001 - a misuse is refused, the rest said
                if strict and isinstance(e, ConfigError):
                    self.close()
                    raise
                warn(f"not logging to {kind}, training goes on: {_why(e)}")

    def __bool__(self) -> bool:
        return bool(self.targets)

    def record(self, rec: Record) -> None:
        if not self.targets:
            return
        got = scalars(rec)
        if got is None or not got[1]:
            return
        for t in list(self.targets):
            try:
                t.log(*got)
            except Exception as e:  # noqa: BLE001 - a tracker never stops training
                self.targets.remove(t)
                self.warn(f"{t.kind} failed, no more logging to it, training goes on: {_why(e)}")
                with contextlib.suppress(Exception):
                    t.close()

    def close(self) -> None:
        targets, self.targets = self.targets, []
        for t in targets:
            try:
                t.close()
            except Exception as e:  # noqa: BLE001 - the run has ended well; the session has it all
                self.warn(f"{t.kind} failed to close: {_why(e)}")


def _make(kind: str, where: str, name: str | None, start_wandb: bool) -> Tracker:
    if kind == "tensorboard":
        return TensorBoard(where)
    if kind == "wandb":
        return WandB(where, name, start_wandb)
    return Trackio(where or "sgdwalk", name)


def _why(e: BaseException) -> str:
    return str(e) if isinstance(e, ConfigError) else f"{type(e).__name__}: {e}"


__all__ = ["KINDS", "LogTargets", "Trackers", "parse_targets", "scalars"]
