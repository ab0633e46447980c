"""Config values that are more than a number, parsed once into types.

Why types: the batch size ("64" or "full"), the probe ("full", "batch", N or the default), the
curvature schedule ("2" epochs, "500s" steps, "off") and the alignment batch sizes arrive as text
from flags, TOML files and the Walker's arguments. Each is parsed here, once, into a small frozen
value that answers the questions the run asks of it (is it full-batch? is this step due?), and
``str()`` of it is its canonical text, which is what a session stores (``"40s"``, never ``40``
read back as epochs). Every parser names the knob it reads (``--hessian-every`` for the command
line, ``Walker: hessian_every`` for the Python API) in its one-line ``ConfigError``.

Plain Python, no torch: the dashboard reads a session's schedule with the same parser.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Literal

from sgdwalk.errors import ConfigError

OFF_WORDS = ("off", "none", "0", "never")  # a schedule that is off
DEFAULT_PROBE = 2048  # probe examples when none is asked for: min(2048, train size)
MAX_POINTS = 1000  # a slice of K points costs K forward passes of the probe set per step


def _fail(knob: str, why: str) -> ConfigError:
    return ConfigError(f"{knob}: {why}")


def _whole(text: str) -> int | None:
    """A positive whole number written in digits, else None."""
    return int(text) if text.isdigit() and int(text) >= 1 else None


@dataclass(frozen=True)
class Schedule:
    """Curvature passes every ``every`` epochs or steps (and once at the start)."""

    every: int
    unit: Literal["epochs", "steps"]

    @classmethod
    def parse(cls, value: object, knob: str = "--hessian-every") -> Schedule | None:
        """'off' -> None; '2' -> every 2 epochs; '500s' -> every 500 steps."""
        text = str(value).strip().lower()
        if text in OFF_WORDS:
            return None
        steps = text.endswith("s")
        n = _whole(text[:-1] if steps else text)
        if n is None:
            raise _fail(knob, f"use epochs ('2'), steps ('500s') or 'off', got {value!r}")
        return cls(n, "steps" if steps else "epochs")

    def due(self, unit: str, count: int) -> bool:
        """Whether a pass is due after ``count`` steps or epochs (``unit``)."""
        return unit == self.unit and count % self.every == 0

    def describe(self) -> str:
        return f"every {self.every} {self.unit[:-1] if self.every == 1 else self.unit}"

    def __str__(self) -> str:
        return f"{self.every}s" if self.unit == "steps" else str(self.every)


@dataclass(frozen=True)
class TimeBudget:
    """How much of the training time measuring may take (``sgdwalk.budget``): a share
    ``fraction`` of it (0.5: the run at most 1.5x slower, a random share of the steps measured),
    ``auto`` (every step when the whole run is short, else ``budget.AUTO_FRACTION``), or neither:
    every step, whatever it costs."""

    fraction: float | None
    auto: bool = False

    @classmethod
    def parse(cls, value: object, knob: str = "--budget") -> TimeBudget:
        """'auto'; 'off' (every step); a share such as '0.5' (above 0, at most 100)."""
        text = str(value).strip().lower()
        if text == "auto":
            return cls(None, auto=True)
        if text in ("off", "none", "every"):
            return cls(None)
        try:
            fraction = float(text)
        except ValueError:
            fraction = -1.0
        if not 0 < fraction <= 100:  # (NaN fails too)
            raise _fail(knob, f"use 'auto', 'off' (every step) or a share of the training time "
                              f"above 0 (0.5: at most 1.5x slower), got {value!r}")  # fmt: skip
        return cls(fraction)

    def __str__(self) -> str:
        return "auto" if self.auto else "off" if self.fraction is None else f"{self.fraction:g}"


def schedule_text(schedule: Schedule | None) -> str:
    """The canonical text of a schedule, 'off' included."""
    return "off" if schedule is None else str(schedule)


@dataclass(frozen=True)
class BatchSize:
    """A mini-batch of ``n`` examples, or the whole training split (``n`` None: gradient descent)."""

    n: int | None

    @classmethod
    def parse(cls, value: object, knob: str = "--batch-size") -> BatchSize:
        text = str(value).strip().lower()
        if text == "full":
            return cls(None)
        n = _whole(text)
        if n is None:
            raise _fail(knob, f"must be a positive integer or 'full', got {value!r}")
        return cls(n)

    @property
    def full(self) -> bool:
        return self.n is None

    def of(self, n_train: int) -> int:
        """Examples per step on a training split of ``n_train``."""
        return n_train if self.n is None else self.n

    def __str__(self) -> str:
        return "full" if self.n is None else str(self.n)


@dataclass(frozen=True)
class ProbeSpec:
    """The probe set: the default subset, the whole training split, each step's own batch, or a
    fixed subset of ``n`` examples."""

    kind: Literal["default", "full", "batch", "subset"] = "default"
    n: int | None = None

    @classmethod
    def parse(cls, value: object, knob: str = "--probe") -> ProbeSpec:
        if value is None:
            return cls()
        text = str(value).strip().lower()
        if text in ("full", "batch"):
            return cls(text)  # type: ignore[arg-type]
        n = _whole(text)
        if n is None:
            raise _fail(knob, f"must be 'full', 'batch' or a positive integer, got {value!r}")
        return cls("subset", n)

    @property
    def fixed(self) -> bool:
        """Whether the probe is one set for the whole run (not each step's batch)."""
        return self.kind != "batch"

    def size(self, n_train: int) -> int:
        """Examples in the fixed probe (for ``batch``: the set the epoch summary and the Hessian
        use, the default one)."""
        if self.kind == "full":
            return n_train
        if self.kind == "subset":
            assert self.n is not None
            return self.n
        return min(DEFAULT_PROBE, n_train)

    def stored(self) -> str | None:
        """The canonical text (None: the default)."""
        if self.kind == "default":
            return None
        return str(self.n) if self.kind == "subset" else self.kind


@dataclass(frozen=True)
class AlignSizes:
    """The batch sizes of the gradient-alignment draws; None stands for the whole pool."""

    sizes: tuple[int | None, ...]

    @classmethod
    def parse(cls, value: object, knob: str = "--align-batch-sizes") -> AlignSizes:
        """'100,1000,full' -> (100, 1000, None)."""
        parts = value if isinstance(value, list | tuple) else str(value).split(",")
        out: list[int | None] = []
        for part in parts:
            p = str(part).strip().lower()
            if p == "full":
                out.append(None)
            elif (n := _whole(p)) is not None:
                out.append(n)
            else:
                raise _fail(knob, f"each size must be a positive integer or 'full', got {part!r}")
        if not out:
            raise _fail(knob, "give at least one batch size")
        return cls(tuple(out))

    def clip(self, pool: int) -> list[int]:
        """Clipped to the pool, 'full' mapped to it, deduplicated, ascending."""
        return sorted({pool if s is None else min(s, pool) for s in self.sizes})

    def __str__(self) -> str:
        return ",".join("full" if s is None else str(s) for s in self.sizes)


ALIGN_DEFAULT = AlignSizes((100, 1000, 10000, None))  # the paper's, clipped to the pool


@dataclass(frozen=True)
class Betas:
    """Adam's decay rates (β1 of the first moment, β2 of the second), each in [0, 1)."""

    beta1: float
    beta2: float

    @classmethod
    def parse(cls, value: object, knob: str = "--betas") -> Betas:
        """'0.9,0.98' (or a TOML list [0.9, 0.98]) -> Betas(0.9, 0.98)."""
        if isinstance(value, Betas):
            return value
        parts = value if isinstance(value, list | tuple) else str(value).split(",")
        try:
            numbers = [float(str(p).strip()) for p in parts]
        except ValueError:
            numbers = []
        if len(numbers) != 2:
            raise _fail(knob, f"give two numbers B1,B2 (e.g. 0.9,0.999), got {value!r}")
        if not all(0 <= b < 1 for b in numbers):  # (NaN fails too)
            raise _fail(knob, f"each must be in [0, 1) (a decay rate), got {value!r}")
        return cls(numbers[0], numbers[1])

    def __str__(self) -> str:
        return f"{self.beta1!r},{self.beta2!r}"  # repr: the shortest text that reads back exact


def betas_text(betas: Betas | None) -> str | None:
    """The canonical text of the betas (None: the optimizer's own)."""
    return None if betas is None else str(betas)


def env_seconds(name: str, default: float, low: float = 0.0) -> float:
    """Seconds from the environment variable ``name``: its number when it is one above ``low``
    (and finite), else ``default`` (a typo in a tuning variable never stops a run)."""
    try:
        seconds = float(os.environ.get(name, default))
    except ValueError:
        return default
    return seconds if low < seconds < 1e9 else default
