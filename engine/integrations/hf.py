"""``WalkerCallback`` for the Hugging Face ``Trainer``: ``Trainer(..., callbacks=[WalkerCallback()])``.

The step starts in ``on_pre_optimizer_step`` (after gradient accumulation and clipping; the clip
unscales fp16 gradients) and ends in ``on_optimizer_step``; a step the fp16 scaler skipped
(``optimizer.step_was_skipped``) is recorded as skipped. The batch loss is the ``loss`` the model
returns in training mode (a forward hook). The probe defaults to the first ``probe_size`` examples
of the training set through the dataloader's collator (the same rows on every rank under DDP), and
the loss to the model's own (``model(**batch).loss``).

The Walker's arguments are checked when the callback is made (a ``ConfigError``); what can only
be found once training has begun (a probe the model cannot take, no first rows to take from an
``IterableDataset``) is one line on stderr, and training goes on unmeasured.
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import TrainerCallback

from sgdwalk.errors import ConfigError, SgdwalkError
from sgdwalk.records import FINISHED
from sgdwalk.values import DEFAULT_PROBE
from sgdwalk.walker import Walker
from sgdwalk.walker_args import check_arguments
from sgdwalk.walker_session import say


def _first_rows(loader: Any, n: int) -> Any:
    """The training set's first ``n`` examples through the loader's collator: the same rows on
    every rank (a distributed loader's own batches differ between ranks)."""
    data = loader.dataset
    if isinstance(data, torch.utils.data.IterableDataset) or not hasattr(data, "__len__"):
        raise ConfigError(f"WalkerCallback: probe: the training set is an IterableDataset "
                          f"({type(data).__name__}), with no first rows to take; give "
                          "WalkerCallback(probe=...), a batch of examples")  # fmt: skip
    return loader.collate_fn([data[i] for i in range(min(n, len(data)))])


def model_loss(model: torch.nn.Module, batch: Any) -> torch.Tensor:
    """The loss a Hugging Face model computes itself from a batch with ``labels``."""
    return model(**batch).loss


class WalkerCallback(TrainerCallback):
    """Measures a ``Trainer`` run with a ``sgdwalk.Walker``; keyword arguments go to the Walker."""

    def __init__(self, probe: Any = None, loss_fn: Any = model_loss, **walker_args: Any) -> None:
        check_arguments(**walker_args)  # misused now, not once training runs
        self.probe, self.loss_fn, self.walker_args = probe, loss_fn, walker_args
        self.walker: Walker | None = None

    def on_train_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        try:
            self.walker = self._walker(args, state, kw)
        except SgdwalkError as e:  # training has begun: it goes on, unmeasured
            say(f"not measuring, training goes on: {e}")

    def _walker(self, args: Any, state: Any, kw: dict[str, Any]) -> Walker:
        model, optimizer = kw["model"], kw["optimizer"]
        probe = self.probe
        if probe is None:
            size = self.walker_args.get("probe_size", DEFAULT_PROBE)
            probe = _first_rows(kw["train_dataloader"], size)
        batch = args.per_device_train_batch_size * args.gradient_accumulation_steps
        defaults = {"total_steps": state.max_steps or None, "batch_size": batch,
                    "meta": {"framework": "transformers"}}  # fmt: skip
        walker = Walker(model, probe, self.loss_fn, **(defaults | self.walker_args))
        # accelerate wraps the optimiser; the steps' two moments are this callback's own
        return walker.attach(getattr(optimizer, "optimizer", optimizer), before=False, after=False)

    def on_pre_optimizer_step(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        if self.walker is not None:
            self.walker.epoch = int(state.epoch or 0) + 1
            self.walker.before_step()

    def on_optimizer_step(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        if self.walker is None:
            return
        if getattr(kw.get("optimizer"), "step_was_skipped", False):
            self.walker.skipped()
        else:
            self.walker.after_step()

    def on_train_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        if self.walker is not None:
            self.walker.close(FINISHED)
