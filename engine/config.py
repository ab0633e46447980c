"""Run configuration: one frozen dataclass, validated in one place.

Layers, lowest first: defaults < ``--preset`` < ``--config FILE.toml`` < flags on the command line.
``build_config`` merges them and ``validate`` turns every bad value into a ``ConfigError`` whose
message is the single line the CLI prints (exit code 2). Values that are more than a number (the
batch size, the probe, the curvature schedule, the alignment batch sizes) are parsed once, as the
layers merge, into the types of ``sgdwalk.values``; ``as_dict`` writes their canonical text, which
is what a session stores and what ``build_config`` reads back (a trainer child gets its claimed
config so). Checks that need the data (batch or probe larger than the training split) happen in
``sgdwalk.train.check_against_data`` once the dataset is loaded.

Each setting is declared once, as a field of ``RunConfig`` made by ``setting``: its type, default,
help and, for a value given as text, its parser and canonical text (the field's metadata, plain
words and functions, no UI library). ``sgdwalk run``'s options are made from these fields
(``sgdwalk.tui.options``), so a new setting is a new field here and nowhere else.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from sgdwalk.config_file import load_toml
from sgdwalk.errors import ConfigError
from sgdwalk.presets import PRESETS
from sgdwalk.session.naming import DEFAULT_SESSIONS, SESSIONS_ENV
from sgdwalk.trackers import LogTargets
from sgdwalk.values import (
    ALIGN_DEFAULT,
    DEFAULT_PROBE,
    MAX_POINTS,
    AlignSizes,
    BatchSize,
    Betas,
    ProbeSpec,
    Schedule,
    TimeBudget,
    betas_text,
    schedule_text,
)

MODELS = ("mlp", "cnn", "vgg11", "resnet56", "wrn", "transformer")
DATASETS = ("digits", "mnist", "cifar10", "cifar100", "tiny-imagenet", "synthetic-cifar10",
            "synthetic-mnist", "modular-addition")  # fmt: skip
OPTIMIZERS = ("sgd", "adam", "adamw", "rmsprop")
DEVICES = ("auto", "cpu", "cuda")


def setting(
    default: Any,
    help: str,
    *,
    shown: str | None = None,
    parse: Callable[[Any], Any] | None = None,
    text: Callable[[Any], Any] = str,
    many: bool = False,
) -> Any:
    """A run setting: its default and what ``sgdwalk run --help`` says of it (the field's
    metadata). ``shown``: the words of its "[default: ...]" where the default's canonical text
    would not say it (a default of None or False shows none). ``parse``: the setting is more than
    a number, given as text (text -> value, raising ``ConfigError``); ``text``: value -> its
    canonical text. ``many``: a flag that may be given several times (its values a list)."""
    meta: dict[str, Any] = {"help": help}
    if many:
        meta["many"] = True
    if shown is not None:
        meta["shown"] = shown
    if parse is not None:
        meta |= {"parse": parse, "text": text}
    return field(default=default, metadata=meta)


def _either(names: tuple[str, ...]) -> str:
    return f"{', '.join(names[:-1])} or {names[-1]}"


@dataclass(frozen=True)
class RunConfig:
    model: str = setting("mlp", _either(MODELS))
    dataset: str = setting("digits", _either(DATASETS), shown="digits, embedded")
    data_dir: str = setting("data", "where datasets live")
    download: bool = setting(False, "download the dataset if missing")
    epochs: int = setting(10, "epochs to train")
    # lr 0.5, measured: interior minima on 77% of the first 2 epochs' steps (0.1: 2%)
    lr: float = setting(0.5, "learning rate (constant)")
    batch_size: BatchSize = setting(
        BatchSize(64), "mini-batch size, or 'full' for full-batch GD", parse=BatchSize.parse
    )
    drop_last: bool = setting(
        False, "leave out each epoch's short last mini-batch (a noisier step)"
    )
    momentum: float = setting(0.0, "momentum β (sgd: heavy ball; rmsprop)")
    weight_decay: float = setting(
        0.0,
        "weight decay: L2 (added to the gradient) for sgd, adam and rmsprop; decoupled "
        "(θ shrinks by lr·wd each step) for adamw",
    )
    optimizer: str = setting("sgd", _either(OPTIMIZERS))
    betas: Betas | None = setting(
        None,
        "adam/adamw decay rates β1,β2",
        shown="torch's 0.9,0.999",
        parse=Betas.parse,
        text=betas_text,
    )
    eps: float | None = setting(
        None, "adam/adamw/rmsprop ε (added to the preconditioner √v̂)", shown="torch's 1e-8"
    )
    seed: int = setting(0, "seed for init, data order and probe set")
    device: str = setting("auto", _either(DEVICES))
    threads: int | None = setting(None, "CPU threads for torch", shown="one per free core, "
                                  "measured at the start: fewer when other jobs are busy")  # fmt: skip
    points: int = setting(10, "K: slice points α = 0, 1/K, .., 1")
    probe: ProbeSpec = setting(
        ProbeSpec(),
        "data the landscape is measured on: 'full', 'batch' or N examples",
        shown=f"min({DEFAULT_PROBE}, train size)",
        parse=ProbeSpec.parse,
        text=ProbeSpec.stored,
    )
    probe_chunk: int | None = setting(
        None, "examples per probe forward pass", shown="the batch size with BatchNorm"
    )
    measure_every: int = setting(1, "measure every N-th step")
    budget: TimeBudget = setting(
        TimeBudget(None, auto=True),
        "the most of the training time measuring may take: a share (0.5: at most 1.5x slower; a "
        "random share of the steps is measured, in bursts of 4), 'off' (every step) or 'auto' "
        "(every step when that makes the whole run at most 3 minutes, else 0.5)",
        parse=TimeBudget.parse,
    )
    slice_mode: str = setting(
        "auto",
        "how the K slice points are evaluated: 'loop' (K passes), 'vmap' (one batched pass) or "
        "'auto' (both, with and without the first-layer shortcut, timed on the first steps; the "
        "fastest kept and noted in the session)",
    )
    hessian_every: Schedule | None = setting(
        Schedule(1, "epochs"),
        "curvature schedule: every N epochs ('2'), N steps ('500s') or 'off'; also at the start",
        parse=Schedule.parse,
        text=schedule_text,
    )
    hessian_probe: int | None = setting(
        None, "Hessian on a fixed subset of N probe examples", shown="the probe"
    )
    top_k: int = setting(10, "Hessian eigenpairs to track")
    align_batch_sizes: AlignSizes = setting(
        ALIGN_DEFAULT, "batch sizes for gradient alignment", parse=AlignSizes.parse
    )
    align_samples: int = setting(10, "mini-batches drawn per size")
    decompose: bool = setting(
        False,
        "split each step by the top-k Hessian eigenvectors of the latest curvature pass: "
        "dominant fraction and the loss of each part (2 forward passes)",
    )
    batch_sharpness: bool = setting(
        False,
        "per measured step, the batch Hessian's curvature along the step's gradient, "
        "g·H_B g/‖g‖² (one Hessian-vector product on the batch)",
    )
    track_sharpness: bool = setting(
        False,
        "per measured step, the optimizer's edge ratio, followed from the last curvature pass by "
        "one Hessian-vector product a step (needs --hessian-every)",
    )
    batchnorm: bool | None = setting(None, "BatchNorm in mlp/cnn/vgg11")  # None: the model's
    augment: bool | None = setting(None, "crop+flip (CIFAR default)")  # None: the dataset's
    wrn_depth: int = setting(16, "WideResNet depth, 6n+4")
    wrn_width: int = setting(4, "WideResNet width factor")
    train_size: int | None = setting(None, "train on the first N examples only")
    allow_divergence: bool = setting(False, "keep going when the loss becomes NaN/inf")
    session: str | None = setting(None, "session name", shown="DATASET-MODEL-TIME")
    sessions_dir: str = setting(
        DEFAULT_SESSIONS, "sessions folder", shown=f"${SESSIONS_ENV} or ./{DEFAULT_SESSIONS}"
    )
    log_to: LogTargets = setting(
        LogTargets(),
        "also send the scalars to tensorboard:DIR, wandb[:PROJECT] or trackio[:PROJECT] "
        "(repeat, or comma-separated; the session keeps everything regardless)",
        parse=LogTargets.parse,
        many=True,
    )
    preset: str | None = setting(None, "one of the paper's settings (see README)")
    nproc: int = setting(
        1,
        "train on N processes with torchrun and DDP (gloo on CPU, nccl on CUDA), the probe "
        "sharded across them; the batch size stays the global one",
    )
    nnodes: str | None = setting(None, "machines for torchrun (e.g. 2), with --rdzv-endpoint")
    rdzv_endpoint: str | None = setting(
        None, "host:port every machine's torchrun meets at, with --nnodes"
    )

    def as_dict(self) -> dict[str, Any]:
        """Every field as JSON-ready data; parsed values as their canonical text."""
        return {f.name: _TEXT.get(f.name, _same)(getattr(self, f.name)) for f in fields(self)}

    @property
    def full_batch(self) -> bool:
        return self.batch_size.full


FIELD_NAMES = {f.name for f in fields(RunConfig)}


def _same(value: Any) -> Any:
    return value


# the parsed fields: text -> value (raising ConfigError naming the flag), and value -> text
_PARSE = {f.name: f.metadata["parse"] for f in fields(RunConfig) if "parse" in f.metadata}
_TEXT = {f.name: f.metadata["text"] for f in fields(RunConfig) if "text" in f.metadata}


def build_config(flags: dict[str, Any], config_file: Path | None = None) -> RunConfig:
    """Merge defaults < preset < config file < flags (``None`` flags are unset) and validate."""
    from_file = load_toml(config_file, FIELD_NAMES) if config_file else {}
    given = {k: v for k, v in flags.items() if v is not None}
    preset = given.get("preset", from_file.get("preset"))
    layers: dict[str, Any] = {}
    if preset is not None:
        if preset not in PRESETS:
            raise ConfigError(f"unknown preset {preset!r}; choose from {', '.join(PRESETS)}")
        layers.update(PRESETS[preset])
    layers.update(from_file)
    layers.update(given)
    unknown = set(layers) - FIELD_NAMES
    if unknown:
        raise ConfigError(f"unknown setting(s): {', '.join(sorted(unknown))}")
    normalised = {k: _coerce(k, v) for k, v in layers.items()}
    cfg = RunConfig(**normalised)
    validate(cfg)
    return cfg


def _coerce(name: str, value: Any) -> Any:
    """Bring TOML/CLI values to the field's type, or raise ConfigError."""
    kind = {f.name: f.type for f in fields(RunConfig)}[name]
    if name in _PARSE:
        parsed_type = type(RunConfig.__dataclass_fields__[name].default)
        if isinstance(value, parsed_type) or (name == "hessian_every" and value is None):
            return value  # already parsed (``dataclasses.replace``, a preset)
        if isinstance(value, list) and name == "align_batch_sizes":
            value = ",".join(str(v) for v in value)
        return _PARSE[name](value)
    try:
        if kind in ("int", "int | None"):
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError
            return int(value)
        if kind in ("float", "float | None"):
            return float(value)
        if kind in ("bool", "bool | None"):
            if not isinstance(value, bool):
                raise ValueError
            return value
        return value if value is None else str(value)
    except (TypeError, ValueError, OverflowError):
        raise ConfigError(f"--{name.replace('_', '-')}: bad value {value!r}") from None


def fail(flag: str, why: str) -> None:
    """The one line of a bad ``--flag`` value."""
    raise ConfigError(f"--{flag}: {why}")


SLICE_MODES = ("auto", "loop", "vmap")


MAX_INT = 2**31 - 1  # counts and sizes beyond this are typing errors, and SQLite and torch limits
MAX_SEED = 2**63 - 1  # torch's generators take a 64-bit seed (offsets are added to it)
MAX_NPROC = 1024  # processes per machine
THREADS_PER_CORE = 4  # more threads than this per core only thrash (and can crash OpenMP)


def _check_ranges(c: RunConfig) -> None:
    """Integers within what the machine and the libraries can take, before anything runs."""
    for f in fields(RunConfig):
        value = getattr(c, f.name)
        if f.name == "seed":
            if not 0 <= value <= MAX_SEED:
                fail("seed", f"must be in 0..{MAX_SEED}, got {value}")
        elif isinstance(value, int) and not isinstance(value, bool) and value > MAX_INT:
            fail(f.name.replace("_", "-"), f"{value} is beyond any sensible size (max {MAX_INT})")
    for flag, n in (("batch-size", c.batch_size.n), ("probe", c.probe.n)):
        if n is not None and n > MAX_INT:
            fail(flag, f"{n} is beyond any sensible size (max {MAX_INT})")
    if c.points > MAX_POINTS:
        fail("points", f"at most {MAX_POINTS} (each point is a forward pass of the probe set "
                        f"every step), got {c.points}")  # fmt: skip
    cores = os.cpu_count() or 1
    if c.threads is not None and c.threads > THREADS_PER_CORE * cores:
        fail("threads", f"{c.threads} is far beyond this machine's {cores} cores "
                         f"(at most {THREADS_PER_CORE * cores})")  # fmt: skip
    for flag, folder in (("sessions-dir", c.sessions_dir), ("data-dir", c.data_dir)):
        if not folder.strip():
            fail(flag, "give a folder (it is empty)")
    if c.decompose and c.hessian_every is None:
        fail("decompose", "splits steps by the eigenvectors of curvature passes: it needs "
                           "--hessian-every")  # fmt: skip
    if not 1 <= c.nproc <= MAX_NPROC:
        fail("nproc", f"must be in 1..{MAX_NPROC}, got {c.nproc}")
    if (c.nnodes is None) != (c.rdzv_endpoint is None):
        fail("nnodes", "several machines need both --nnodes and --rdzv-endpoint host:port")


def _check_optimizer(c: RunConfig) -> None:
    """The optimizer and the knobs it has: a knob it lacks is refused, never silently ignored."""
    if c.optimizer not in OPTIMIZERS:
        fail("optimizer", f"unknown optimizer {c.optimizer!r}; choose from "
                           f"{', '.join(OPTIMIZERS)}")  # fmt: skip
    adam = c.optimizer in ("adam", "adamw")
    if c.betas is not None and not adam:
        fail("betas", f"{c.optimizer} has no betas (adam and adamw do); for momentum use "
                       "--momentum")  # fmt: skip
    if c.momentum and adam:
        fail("momentum", f"{c.optimizer}'s momentum is β1 of --betas B1,B2")
    if c.eps is not None and c.optimizer == "sgd":
        fail("eps", "sgd has no ε (adam, adamw and rmsprop do)")
    if c.eps is not None and not (math.isfinite(c.eps) and c.eps > 0):
        fail("eps", f"must be a positive number, got {c.eps}")


TOKEN_DATASETS = ("modular-addition",)  # inputs are token ids: an embedding's, not pixels


def _check_tokens(c: RunConfig) -> None:
    """Token sequences go to the transformer and images to the others; crops are for images."""
    tokens = c.dataset in TOKEN_DATASETS
    if tokens and c.model != "transformer":
        fail("model", f"{c.model} reads images, and {c.dataset} is token sequences: use "
                       "--model transformer")  # fmt: skip
    if c.model == "transformer" and not tokens:
        fail("model", f"transformer reads token sequences, and {c.dataset} is images: use "
                       f"--dataset {' or '.join(TOKEN_DATASETS)}")  # fmt: skip
    if tokens and c.augment:
        fail("augment", f"crop+flip is for images; {c.dataset} is token sequences")


def validate(c: RunConfig) -> None:
    _check_ranges(c)
    if c.model not in MODELS:
        fail("model", f"unknown model {c.model!r}; choose from {', '.join(MODELS)}")
    if c.dataset not in DATASETS:
        fail("dataset", f"unknown dataset {c.dataset!r}; choose from {', '.join(DATASETS)}")
    if c.device not in DEVICES:
        fail("device", f"unknown device {c.device!r}; choose from {', '.join(DEVICES)}")
    if c.epochs < 1:
        fail("epochs", f"must be at least 1, got {c.epochs}")
    if not (math.isfinite(c.lr) and c.lr > 0):
        fail("lr", f"must be a positive number, got {c.lr}")
    if not (math.isfinite(c.momentum) and 0 <= c.momentum < 1):
        fail("momentum", f"must be in [0, 1), got {c.momentum}")
    if not (math.isfinite(c.weight_decay) and c.weight_decay >= 0):
        fail("weight-decay", f"must be >= 0, got {c.weight_decay}")
    _check_optimizer(c)
    _check_tokens(c)
    if c.points < 2:
        fail("points", f"a slice needs at least 2 intervals (K >= 2), got {c.points}")
    for flag, value in (("probe-chunk", c.probe_chunk), ("hessian-probe", c.hessian_probe),
                        ("train-size", c.train_size), ("threads", c.threads)):  # fmt: skip
        if value is not None and value < 1:
            fail(flag, f"must be a positive integer, got {value}")
    if c.measure_every < 1:
        fail("measure-every", f"must be at least 1, got {c.measure_every}")
    if c.slice_mode not in SLICE_MODES:
        fail("slice-mode", f"unknown mode {c.slice_mode!r}; choose from {', '.join(SLICE_MODES)}")
    if c.top_k < 1:
        fail("top-k", f"must be at least 1, got {c.top_k}")
    if c.align_samples < 1:
        fail("align-samples", f"must be at least 1, got {c.align_samples}")
    if c.wrn_depth < 10 or (c.wrn_depth - 4) % 6:
        fail("wrn-depth", f"must be 6n+4 (e.g. 16, 28), got {c.wrn_depth}")
    if c.wrn_width < 1:
        fail("wrn-width", f"must be at least 1, got {c.wrn_width}")
