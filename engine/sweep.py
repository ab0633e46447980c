"""A sweep: a grid over run settings, each point one session, all in one folder.

Why a folder of sessions: the paper's findings are comparisons (GD against SGD, learning rates,
batch sizes), and every point of a grid is an ordinary run with an ordinary session, so ``watch``,
``replay``, ``export`` and ``compare`` work on each as on any other. The sweep's folder
``SESSIONS/NAME`` is itself a sessions folder (each point ``SESSIONS/NAME/POINT/session.sqlite``)
and holds ``sweep.json``: the grid and the settings shared by every point, so a sweep that was
stopped can be taken up again (``resume``): a point whose session finished (or diverged: a result
too) is kept, one that was interrupted or failed is moved aside and run again.

Plain Python, no torch: the command line plans a sweep before anything loads.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sgdwalk.errors import ConfigError, SessionError
from sgdwalk.records import DIVERGED, FINISHED
from sgdwalk.session.schema import DB_NAME, check_session_name

PLAN = "sweep.json"
# settings whose commas are part of one value (betas: one pair B1,B2), or that name no run
NOT_SWEPT = ("align_batch_sizes", "log_to", "session", "sessions_dir", "nproc", "nnodes",
             "rdzv_endpoint", "betas")  # fmt: skip
KEPT = (FINISHED, DIVERGED)  # a point whose session ended so is done


@dataclass(frozen=True)
class Point:
    """One run of the grid: its session's name and its settings (text, as flags give them)."""

    name: str
    settings: dict[str, str]


def grid(flags: dict[str, Any]) -> tuple[dict[str, list[str]], dict[str, Any]]:
    """The swept settings (a value with commas: each of them) and the shared ones (the rest)."""
    swept, shared = {}, {}
    for key, value in flags.items():
        if value is None:
            continue
        text = str(value)
        if key not in NOT_SWEPT and "," in text:
            values = [v.strip() for v in text.split(",") if v.strip()]
            if len(set(values)) != len(values):
                raise ConfigError(f"--{key.replace('_', '-')}: a value twice in {text!r}")
            swept[key] = values
        else:
            shared[key] = value
    if not swept:
        raise ConfigError("sweep: give at least one setting several values, e.g. --lr 0.1,0.5")
    return swept, shared


def points(swept: dict[str, list[str]]) -> list[Point]:
    """Every combination, in the order the values were given; named by the values
    ("lr0.1-batch_size32")."""
    keys = list(swept)
    out = []
    for values in itertools.product(*(swept[k] for k in keys)):
        name = "-".join(f"{k}{v}" for k, v in zip(keys, values, strict=True))
        name = "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
        out.append(Point(check_session_name(name), dict(zip(keys, values, strict=True))))
    return out


def default_name(swept: dict[str, list[str]], shared: dict[str, Any]) -> str:
    """A sweep's name when none is given: its swept settings and a digest of its whole grid, so
    the same command names the same sweep (and so resumes it) and another grid another one."""
    wanted = {"swept": swept, "shared": {k: str(v) for k, v in shared.items()}}
    digest = hashlib.sha1(json.dumps(wanted, sort_keys=True).encode()).hexdigest()[:6]
    return check_session_name(f"sweep-{'-'.join(swept)}-{digest}")


def plan(folder: Path, swept: dict[str, list[str]], shared: dict[str, Any]) -> list[Point]:
    """Write (or, resuming, check) the sweep's plan in ``folder``; return its points."""
    wanted = {"swept": swept, "shared": {k: str(v) for k, v in shared.items()}}
    path = folder / PLAN
    if path.exists():
        try:
            had = json.loads(path.read_text())
        except (OSError, ValueError) as e:
            raise SessionError(f"{path} is not a sweep's plan ({e})") from None
        if had != wanted:
            raise SessionError(f"sweep {folder.name!r} exists with another grid; give another "
                               "--session name, or the same settings to resume it")  # fmt: skip
    else:
        if folder.exists() and any(folder.iterdir()):
            raise SessionError(f"{folder} exists and is not a sweep; give another --session name")
        folder.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(wanted, indent=2, sort_keys=True))
    return points(swept)


def to_run(folder: Path, point: Point) -> bool:
    """Whether ``point`` still has to run; an interrupted or failed session of it is moved aside
    (``POINT.stopped-N``), never deleted."""
    from sgdwalk.session import open_session

    directory = folder / point.name
    if not (directory / DB_NAME).exists():
        if directory.exists() and not any(directory.iterdir()):
            directory.rmdir()  # a claim that never got its session
        return True
    try:
        with open_session(directory) as s:
            if s.status in KEPT:
                return False
    except SessionError:
        pass  # damaged: run it again, keep the damaged one aside
    n = 1
    while (folder / f"{point.name}.stopped-{n}").exists():
        n += 1
    os.replace(directory, folder / f"{point.name}.stopped-{n}")
    return True
