"""Run configuration: one frozen dataclass, validated in one place.

Layers, lowest first: defaults < ``--preset`` < ``--config FILE.toml`` < flags on the command line.
``build_config`` merges them and ``validate`` turns every bad value into a ``ConfigError`` whose
message is the single line the CLI prints (exit code 2). Values that are more than a number (the
batch size, the probe, the curvature schedule, the alignment batch sizes) are parsed once, as the
layers merge, into the types of ``sgdwalk.values``; ``as_dict`` writes their canonical text, which
is what a session stores and what ``build_config`` reads back (a trainer child gets its claimed
config so). Checks that need the data (batch or probe larger than the training split) happen in
``check_against_data`` once the dataset is loaded.

Each setting is declared once, as a field of ``RunConfig`` made by ``setting``: its type, default,
help and, for a value given as text, its parser and canonical text (the field's metadata, plain
words and functions, no UI library). ``sgdwalk run``'s options are made from these fields
(``sgdwalk.tui.options``), so a new setting is a new field here and nowhere else.
"""

from __future__ import annotations

import math
import os
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from sgdwalk.errors import ConfigError
from sgdwalk.session.naming import DEFAULT_SESSIONS, SESSIONS_ENV
from sgdwalk.values import (
    ALIGN_DEFAULT,
    DEFAULT_PROBE,
    MAX_POINTS,
    AlignSizes,
    BatchSize,
    ProbeSpec,
    Schedule,
    schedule_text,
)

MODELS = ("mlp", "cnn", "vgg11", "resnet56", "wrn")
DATASETS = ("digits", "mnist", "cifar10", "cifar100", "tiny-imagenet", "synthetic-cifar10",
            "synthetic-mnist")  # fmt: skip
DEVICES = ("auto", "cpu", "cuda")


def setting(
    default: Any,
    help: str,
    *,
    shown: str | None = None,
    parse: Callable[[Any], Any] | None = None,
    text: Callable[[Any], Any] = str,
) -> Any:
    """A run setting: its default and what ``sgdwalk run --help`` says of it (the field's
    metadata). ``shown``: the words of its "[default: ...]" where the default's canonical text
    would not say it (a default of None or False shows none). ``parse``: the setting is more than
    a number, given as text (text -> value, raising ``ConfigError``); ``text``: value -> its
    canonical text."""
    meta: dict[str, Any] = {"help": help}
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
    momentum: float = setting(0.0, "SGD momentum")
    weight_decay: float = setting(0.0, "L2 weight decay")
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
}

FIELD_NAMES = {f.name for f in fields(RunConfig)}


def _same(value: Any) -> Any:
    return value


# the parsed fields: text -> value (raising ConfigError naming the flag), and value -> text
_PARSE = {f.name: f.metadata["parse"] for f in fields(RunConfig) if "parse" in f.metadata}
_TEXT = {f.name: f.metadata["text"] for f in fields(RunConfig) if "text" in f.metadata}


CONFIG_MAX_BYTES = 1 << 20  # a settings file is a few lines; anything this big is a mistake


def load_toml(path: Path) -> dict[str, Any]:
    """Read a ``--config`` file: top-level keys named like the flags (dashes or underscores),
    or the same keys in a ``[run]`` table."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"config file not found: {path}")
    if not path.is_file():
        raise ConfigError(f"config file {path} is not a regular file")
    try:
        if path.stat().st_size > CONFIG_MAX_BYTES:
            raise ConfigError(f"config file {path} is larger than 1 MiB; is it a settings file?")
        with open(path, "rb") as fh:
            raw = tomllib.load(fh)
    except OSError as e:
        raise ConfigError(f"cannot read config file {path}: {e.strerror or e}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"config file {path} is not valid TOML: {e}") from None
    raw = raw.get("run", raw)  # allow a [run] table
    if not isinstance(raw, dict):
        raise ConfigError(f"config file {path}: 'run' must be a table of settings ([run])")
    out = {}
    for key, value in raw.items():
        name = key.replace("-", "_")
        if name not in FIELD_NAMES:
            raise ConfigError(f"config file {path}: unknown key {key!r}")
        out[name] = value
    return out


def build_config(flags: dict[str, Any], config_file: Path | None = None) -> RunConfig:
    """Merge defaults < preset < config file < flags (``None`` flags are unset) and validate."""
    from_file = load_toml(config_file) if config_file else {}
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
        if kind == "float":
            return float(value)
        if kind in ("bool", "bool | None"):
            if not isinstance(value, bool):
                raise ValueError
            return value
        return value if value is None else str(value)
    except (TypeError, ValueError, OverflowError):
        raise ConfigError(f"--{name.replace('_', '-')}: bad value {value!r}") from None


def _fail(flag: str, why: str) -> None:
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
                _fail("seed", f"must be in 0..{MAX_SEED}, got {value}")
        elif isinstance(value, int) and not isinstance(value, bool) and value > MAX_INT:
            _fail(f.name.replace("_", "-"), f"{value} is beyond any sensible size (max {MAX_INT})")
    for flag, n in (("batch-size", c.batch_size.n), ("probe", c.probe.n)):
        if n is not None and n > MAX_INT:
            _fail(flag, f"{n} is beyond any sensible size (max {MAX_INT})")
    if c.points > MAX_POINTS:
        _fail("points", f"at most {MAX_POINTS} (each point is a forward pass of the probe set "
                        f"every step), got {c.points}")  # fmt: skip
    cores = os.cpu_count() or 1
    if c.threads is not None and c.threads > THREADS_PER_CORE * cores:
        _fail("threads", f"{c.threads} is far beyond this machine's {cores} cores "
                         f"(at most {THREADS_PER_CORE * cores})")  # fmt: skip
    for flag, folder in (("sessions-dir", c.sessions_dir), ("data-dir", c.data_dir)):
        if not folder.strip():
            _fail(flag, "give a folder (it is empty)")
    if c.decompose and c.hessian_every is None:
        _fail("decompose", "splits steps by the eigenvectors of curvature passes: it needs "
                           "--hessian-every")  # fmt: skip
    if not 1 <= c.nproc <= MAX_NPROC:
        _fail("nproc", f"must be in 1..{MAX_NPROC}, got {c.nproc}")
    if (c.nnodes is None) != (c.rdzv_endpoint is None):
        _fail("nnodes", "several machines need both --nnodes and --rdzv-endpoint host:port")


def validate(c: RunConfig) -> None:
    _check_ranges(c)
    if c.model not in MODELS:
        _fail("model", f"unknown model {c.model!r}; choose from {', '.join(MODELS)}")
    if c.dataset not in DATASETS:
        _fail("dataset", f"unknown dataset {c.dataset!r}; choose from {', '.join(DATASETS)}")
    if c.device not in DEVICES:
        _fail("device", f"unknown device {c.device!r}; choose from {', '.join(DEVICES)}")
    if c.epochs < 1:
        _fail("epochs", f"must be at least 1, got {c.epochs}")
    if not (math.isfinite(c.lr) and c.lr > 0):
        _fail("lr", f"must be a positive number, got {c.lr}")
    if not (math.isfinite(c.momentum) and 0 <= c.momentum < 1):
        _fail("momentum", f"must be in [0, 1), got {c.momentum}")
    if not (math.isfinite(c.weight_decay) and c.weight_decay >= 0):
        _fail("weight-decay", f"must be >= 0, got {c.weight_decay}")
    if c.points < 2:
        _fail("points", f"a slice needs at least 2 intervals (K >= 2), got {c.points}")
    for flag, value in (("probe-chunk", c.probe_chunk), ("hessian-probe", c.hessian_probe),
                        ("train-size", c.train_size), ("threads", c.threads)):  # fmt: skip
        if value is not None and value < 1:
            _fail(flag, f"must be a positive integer, got {value}")
    if c.measure_every < 1:
        _fail("measure-every", f"must be at least 1, got {c.measure_every}")
    if c.slice_mode not in SLICE_MODES:
        _fail("slice-mode", f"unknown mode {c.slice_mode!r}; choose from {', '.join(SLICE_MODES)}")
    if c.top_k < 1:
        _fail("top-k", f"must be at least 1, got {c.top_k}")
    if c.align_samples < 1:
        _fail("align-samples", f"must be at least 1, got {c.align_samples}")
    if c.wrn_depth < 10 or (c.wrn_depth - 4) % 6:
        _fail("wrn-depth", f"must be 6n+4 (e.g. 16, 28), got {c.wrn_depth}")
    if c.wrn_width < 1:
        _fail("wrn-width", f"must be at least 1, got {c.wrn_width}")


LANCZOS_BYTES = 4 << 30  # the Lanczos basis (about 4k + 60 vectors of the model's size) fits this


def check_against_data(c: RunConfig, n_train: int, n_params: int, available: int = 0) -> None:
    """Checks that need the loaded data and model (``available``: training examples in the
    dataset before ``--train-size``)."""
    if c.train_size is not None and available and c.train_size > available:
        _fail("train-size", f"{c.train_size} is more than the {available} training examples "
                            f"of {c.dataset}")  # fmt: skip
    if c.batch_size.n is not None and c.batch_size.n > n_train:
        _fail(
            "batch-size", f"{c.batch_size} is larger than the training split ({n_train} examples)"
        )
    if c.probe.n is not None and c.probe.n > n_train:
        _fail("probe", f"{c.probe.n} is larger than the training split ({n_train} examples)")
    if c.hessian_probe is not None and c.hessian_probe > n_train:
        _fail("hessian-probe", f"{c.hessian_probe} is larger than the training split ({n_train})")
    if c.train_size is not None and c.train_size < 2:
        _fail("train-size", "needs at least 2 examples")
    if c.hessian_every is None:
        return
    if c.top_k > n_params:
        _fail("top-k", f"{c.top_k} is larger than the model's {n_params} parameters")
    basis = (4 * c.top_k + 61) * n_params * 4
    if basis > LANCZOS_BYTES:
        _fail("top-k", f"{c.top_k} eigenpairs of a {n_params:,}-parameter model need a "
                       f"{basis / 2**30:.0f} GiB Lanczos basis (at most 4 GiB); ask for fewer")  # fmt: skip
    if not c.align_batch_sizes.clip(n_train):
        _fail("align-batch-sizes", "no batch size left after clipping to the training size")
