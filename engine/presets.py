"""The presets (README "Presets"): named layers of run settings, below a config file and flags.

Plain data, no imports: ``sgdwalk.config`` lays a preset under the rest (``build_config``).
"""

from __future__ import annotations

from typing import Any

# The paper's settings (README "Presets"): plain SGD, momentum 0, constant lr, weight decay
# 1e-4, batch 100, CIFAR split 45k/5k, crop+flip. The probe stays a fixed 2048-example subset so a
# run is watchable live; pass --probe full for the paper's exact whole-training-set slices.
_PAPER = {"lr": 0.1, "batch_size": "100", "momentum": 0.0, "weight_decay": 1e-4, "epochs": 100}
PRESETS: dict[str, dict[str, Any]] = {
    "vgg11-cifar10": {**_PAPER, "model": "vgg11", "dataset": "cifar10", "batchnorm": True},
    "resnet56-cifar10": {**_PAPER, "model": "resnet56", "dataset": "cifar10"},
    "mlp-mnist": {**_PAPER, "model": "mlp", "dataset": "mnist", "batchnorm": True},
    "wrn-cifar100": {**_PAPER, "model": "wrn", "dataset": "cifar100"},
    "vgg11-tiny-imagenet": {**_PAPER, "model": "vgg11", "dataset": "tiny-imagenet"},
    "vgg11-cifar10-gd": {
        **_PAPER,
        "model": "vgg11",
        "dataset": "cifar10",
        "batch_size": "full",
        "augment": False,
    },  # fmt: skip
    "resnet56-cifar10-gd": {
        **_PAPER,
        "model": "resnet56",
        "dataset": "cifar10",
        "batch_size": "full",
        "augment": False,
    },  # fmt: skip
    "vgg11-cifar10-lr1": {**_PAPER, "model": "vgg11", "dataset": "cifar10", "lr": 1.0},
    "vgg11-cifar10-bs1000": {
        **_PAPER,
        "model": "vgg11",
        "dataset": "cifar10",
        "batch_size": "1000",
    },
    # Grokking (Power et al. 2022; the recipe of Nanda et al. 2023): a one-block decoder on
    # a + b mod 59, half the pairs training, full-batch AdamW with strong decoupled weight decay.
    # Measured: train accuracy passes 99% at step 140; validation stays at 47-49% until about step
    # 2,700, then rises to 100% by 5,000 (README "Transformers": 22 minutes on this 2-core CPU).
    # One step is one epoch (its train and validation accuracy are each step's), so the slices
    # are every 10th step and curvature every 250, on schedule: under a time budget the epoch
    # summaries alone use it up and almost nothing would be measured (19 steps of 2,080, measured).
    "grokking": {
        "model": "transformer",
        "dataset": "modular-addition",
        "optimizer": "adamw",
        "lr": 1e-3,
        "betas": "0.9,0.98",
        "weight_decay": 1.0,
        "batch_size": "full",
        "epochs": 5000,
        "budget": "off",
        "measure_every": 10,
        "hessian_every": "250",
        "top_k": 3,
        "align_batch_sizes": "100,full",
        "align_samples": 4,
    },
}
