"""The status line's text, as pure functions of the buffers (easy to test, no Textual).

Fields are ordered by how much a user needs them, so that a narrow terminal leaves out the least
useful (the session name) first, whole; below ``WIDE`` columns the labels shrink. A run or a watched session
shows where training is and how fast (``run_fields``); a replay where its cursor is
(``replay_fields``).
"""

from __future__ import annotations

from sgdwalk.records import FAILED, FINISHED, RUNNING
from sgdwalk.tui.dashboard.buffers import Buffers

WIDE = 110
STATE_MARKS = {FINISHED: "✔", FAILED: "✖", RUNNING: "▶"}


def clock(seconds: float) -> str:
    s = int(max(0, seconds))
    h, rem = divmod(s, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def _of(n: int, total: int | None) -> str:
    return f"{n}/{total}" if total else str(n)


def run_fields(b: Buffers, width: int, held: bool = False) -> list[str]:
    """step, epoch, steps/s, ETA, lr, batch size, device, session (no rate or ETA while ``held``:
    paused, stopped, ended, or its writer gone)."""
    narrow = width < WIDE
    f = b.facts
    last = b.last
    step = last.step if last else 0
    epoch = last.epoch if last else 0
    rate = None if held else b.steps_per_second()
    out = [
        f"step {_of(step, f.total_steps)}",
        f"{'ep' if narrow else 'epoch'} {_of(epoch, f.epochs)}",
        f"{rate:.1f} {'st/s' if narrow else 'steps/s'}" if rate else "-- steps/s",
    ]
    if rate and f.total_steps and step < f.total_steps:
        out.append(eta(b, step, rate))
    if last is not None:
        out.append(_lr(b, last.lr))
        out.append(f"{'b' if narrow else 'batch '}{f.batch_size or last.batch_size}")
    if b.phase:
        out.insert(0, b.phase)
    out += [f.device, f.session]
    return [x for x in out if x]


def replay_fields(b: Buffers, step: int, last: int, epoch: int, status: str) -> list[str]:
    """step and epoch of the replay's cursor, barriers so far, lr, batch size, device, session and
    its stored status."""
    n_epochs = b.facts.epochs
    out = [
        f"step {step}/{last}",
        f"epoch {epoch}/{n_epochs}" if n_epochs else f"epoch {epoch}",
        f"{b.barriers} barriers",
    ]
    if b.last is not None:
        out += [_lr(b, b.last.lr), f"batch {b.last.batch_size}"]
    out += [f"[{status}]", b.facts.device, b.facts.session]
    return [x for x in out if x]


def _lr(b: Buffers, lr: float) -> str:
    """ "lr 0.1", or "adamw lr 0.001": the optimizer is named unless it is plain SGD."""
    name = b.facts.optimizer
    return f"lr {lr:g}" if name in ("", "sgd") else f"{name} lr {lr:g}"


def eta(b: Buffers, step: int, rate: float) -> str:
    """Time left: the steps at the training rate, plus the curvature passes still to come at
    the time the last ones took (said so when passes are part of it)."""
    total = b.facts.total_steps or step
    seconds = (total - step) / rate
    passes, each = b.facts.passes_after(step), b.pass_seconds()
    if not passes:
        return f"ETA {clock(seconds)}"
    if each is None:
        return f"ETA {clock(seconds)} + {passes} curvature passes"
    return f"ETA {clock(seconds + passes * each)} incl. {passes} curvature"


PADDING = 2  # the status line's padding, one column each side


def join(fields: list[str], width: int) -> str:
    """The fields that fit in ``width`` columns, whole, in order of need: one that does not fit
    is left out (never cut in the middle of a number); the first is shortened with "…" only
    when even it does not fit."""
    sep = " " if width < WIDE else " · "
    room = max(1, width - PADDING)
    out: list[str] = []
    used = 0
    for field in fields:
        extra = len(field) + (len(sep) if out else 0)
        if used + extra <= room:
            out.append(field)
            used += extra
        elif not out:
            out.append(field[: room - 1] + "…")
            used = room
    return sep.join(out)
