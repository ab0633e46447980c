"""``WalkerCallback`` for PyTorch Lightning: ``Trainer(callbacks=[WalkerCallback(probe=...)])``.

Where the two moments of an update are in Lightning: with automatic optimisation, Lightning calls
``optimizer.step(closure)`` and the closure runs forward and backward inside it, so the optimiser's
pre-step hook fires before the gradient exists. ``on_before_optimizer_step`` is the moment after
backward (after every accumulated micro-batch, and under 16-bit AMP after unscaling), so the step
starts there; it ends in the optimiser's post-step hook, which does not fire for a step the AMP
scaler skips (the Walker then records the skip). The batch loss is taken in ``on_before_backward``,
undoing Lightning's division by ``accumulate_grad_batches`` and the AMP scale.

The Walker's arguments are checked when the callback is made (a ``ConfigError``); a probe the
model cannot take, found once the fit has begun, is one line on stderr and the fit goes on
unmeasured.
"""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
import torch

from sgdwalk.control import ending
from sgdwalk.errors import SgdwalkError
from sgdwalk.records import FINISHED, INTERRUPTED
from sgdwalk.walker import Walker
from sgdwalk.walker_args import check_arguments
from sgdwalk.walker_session import say


class WalkerCallback(pl.Callback):
    """Measures a Lightning fit with a ``sgdwalk.Walker``; keyword arguments go to the Walker.

    ``loss_fn(module, batch)``: the mean loss of a batch; by default cross-entropy of
    ``module(x)`` against ``y`` for batches ``(x, y)``.
    """

    def __init__(self, probe: Any, loss_fn: Any = None, **walker_args: Any) -> None:
        check_arguments(**walker_args)  # misused now, not once training runs
        self.probe, self.loss_fn, self.walker_args = probe, loss_fn, walker_args
        self.walker: Walker | None = None

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        args = {"total_steps": _total(trainer), "meta": {"framework": "lightning"}}
        try:
            walker = Walker(pl_module, self.probe, self.loss_fn, **(args | self.walker_args))
        except SgdwalkError as e:  # training has begun: it goes on, unmeasured
            say(f"not measuring, training goes on: {e}")
            return
        self.walker = walker.attach(trainer.optimizers[0], before=False)

    def on_before_backward(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, loss: torch.Tensor
    ) -> None:
        if self.walker is None:
            return
        value = loss.detach().float()
        scaler = getattr(trainer.precision_plugin, "scaler", None)
        if scaler is not None:
            value = value / scaler.get_scale()
        self.walker.report(value * trainer.accumulate_grad_batches)

    def on_before_optimizer_step(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, optimizer: Any
    ) -> None:
        if self.walker is not None:
            self.walker.epoch = trainer.current_epoch + 1
            self.walker.before_step()

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.walker is not None:
            stopped = trainer.interrupted
            self.walker.close(INTERRUPTED if stopped else FINISHED)

    def on_exception(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException
    ) -> None:
        if self.walker is not None:
            self.walker.close(*ending(exception))


def _total(trainer: pl.Trainer) -> int | None:
    try:
        total = trainer.estimated_stepping_batches
    except Exception:  # noqa: BLE001 - an estimate only, for the ETA
        return None
    return int(total) if total != float("inf") else None
