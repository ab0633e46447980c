"""The Walker's arguments, checked before anything is made.

Why here, and all of them: a misused argument is the one failure a script can be told about
before its training starts, so it is a ``ConfigError`` then, one line naming the Python argument
(``Walker: points: ...``), never a flag of the command line and never a traceback from the middle
of a measurement later. Everything that can go wrong once training runs is the Walker's business
(one line on stderr, training goes on). The integrations' callbacks check the Walker arguments
they are given when they are made, with the same table (``check_arguments``).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping
from typing import Any

import torch

from sgdwalk.errors import ConfigError, SessionError
from sgdwalk.settings import Settings
from sgdwalk.slicing import SLICE_MODES
from sgdwalk.values import MAX_POINTS, Schedule

MAX_SEED = 2**63 - 1  # torch's generators take a 64-bit seed


def fail(argument: str, why: str) -> ConfigError:
    return ConfigError(f"Walker: {argument}: {why}")


def whole(argument: str, low: int, high: int | None = None, none: bool = False) -> Checker:
    """A whole number from ``low`` (to ``high``); ``none``: None allowed too."""

    def check(value: Any) -> None:
        if value is None and none:
            return
        if not isinstance(value, int) or isinstance(value, bool):
            raise fail(argument, f"must be a whole number, got {value!r}")
        if value < low or (high is not None and value > high):
            span = f"from {low}" if high is None else f"from {low} to {high}"
            raise fail(argument, f"must be {span}, got {value}")

    return check


def _budget(value: Any) -> None:
    if value is None:
        return
    number = isinstance(value, int | float) and not isinstance(value, bool)
    if not number or not math.isfinite(value) or value <= 0:
        raise fail("budget", f"must be a positive fraction of the training time (0.5: at most "
                             f"half as long), got {value!r}")  # fmt: skip


def _slice_mode(value: Any) -> None:
    if not isinstance(value, str) or value not in SLICE_MODES:
        raise fail("slice_mode", f"must be one of {', '.join(SLICE_MODES)}, got {value!r}")


def _flag(argument: str) -> Checker:
    def check(value: Any) -> None:
        if not isinstance(value, bool):
            raise fail(argument, f"must be True or False, got {value!r}")

    return check


def _session(value: Any) -> None:
    from sgdwalk.session.schema import check_session_name

    if value is None:
        return
    try:
        check_session_name(value)
    except SessionError as e:
        raise fail("session", str(e)) from None


def _sessions_dir(value: Any) -> None:
    if value is not None and not isinstance(value, str | os.PathLike):
        raise fail("sessions_dir", f"must be a path, got {value!r}")


def _meta(value: Any) -> None:
    meta_of(value)


def _hessian_every(value: Any) -> None:
    steps_schedule(value)


def _log_to(value: Any) -> None:
    from sgdwalk.trackers import LogTargets

    LogTargets.parse(value, "Walker: log_to")


def meta_of(value: Any) -> dict[str, Any]:
    """``meta`` as the session stores it: a dict of JSON values (anything else as its repr)."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise fail("meta", f"must be a dict, got a {type(value).__name__}")
    try:
        out: dict[str, Any] = jsonable(dict(value))
    except RecursionError:
        raise fail("meta", "it contains itself; give a dict of plain values") from None
    return out


def steps_schedule(value: int | str | None) -> Schedule | None:
    """The Walker's ``hessian_every``: steps between curvature passes, as an int or 'Ns' (the
    command line's step form); None or 'off': no passes."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise fail("hessian_every", f"must be a number of steps (40 or '40s'), got {value!r}")
    if isinstance(value, int) and value < 1:
        raise fail("hessian_every", f"must be at least 1 step, got {value}")
    text = f"{value}s" if isinstance(value, int) else str(value)
    schedule = Schedule.parse(text, "Walker: hessian_every")
    if schedule is not None and schedule.unit != "steps":
        n = schedule.every
        raise fail("hessian_every", f"counts steps ({n} or '{n}s'), got {value!r}")
    return schedule


Checker = Callable[[Any], None]
CHECKS: dict[str, Checker] = {
    "session": _session, "sessions_dir": _sessions_dir,
    "points": whole("points", 1, MAX_POINTS), "measure_every": whole("measure_every", 0),
    "hessian_every": _hessian_every, "top_k": whole("top_k", 1),
    "probe_size": whole("probe_size", 1), "chunk": whole("chunk", 1, none=True),
    "budget": _budget, "batch_size": whole("batch_size", 1, none=True),
    "total_steps": whole("total_steps", 1, none=True), "meta": _meta,
    "seed": whole("seed", 0, MAX_SEED), "slice_mode": _slice_mode, "decompose": _flag("decompose"),
    "batch_sharpness": _flag("batch_sharpness"),
    "track_sharpness": _flag("track_sharpness"),
    "log_to": _log_to,
}  # fmt: skip


def check_arguments(**arguments: Any) -> None:
    """Each of the Walker's keyword arguments checked (``ConfigError`` naming the first bad one);
    a name the Walker does not take is one too."""
    for name, value in arguments.items():
        if name not in CHECKS:
            raise ConfigError(f"Walker: {name}: not an argument of the Walker "
                              f"(it takes {', '.join(CHECKS)})")  # fmt: skip
        CHECKS[name](value)


SETTINGS = (
    "points",
    "measure_every",
    "slice_mode",
    "top_k",
    "seed",
    "decompose",
    "budget",
    "batch_sharpness",
    "track_sharpness",
)  # the Walker's arguments that are Settings'


def settings_of(arguments: Mapping[str, Any]) -> Settings:
    """The Instrument's settings from the Walker's (checked) arguments."""
    return Settings(hessian_every=steps_schedule(arguments["hessian_every"]),
                    **{k: arguments[k] for k in SETTINGS})  # fmt: skip


def jsonable(value: Any) -> Any:
    """``value`` as JSON-ready data: numbers, text, lists, dicts; anything else as its repr."""
    if isinstance(value, bool | int | str) or value is None:
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else repr(value)
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, tuple | list):
        return [jsonable(v) for v in value]
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        return jsonable(value.item())
    return repr(value)
