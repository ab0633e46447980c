"""The trainer child: ``sgdwalk run --headless`` started for a dashboard, in the background.

The child gets the same flags and an explicit ``--session`` name; with ``--detach`` it runs in its
own session (``start_new_session``) so an SSH hang-up never reaches it. Its output goes to
``run.log`` inside the session folder. The session folder must not exist before the child creates
it (the writer creates it exclusively), so the log starts beside it and moves in once the session
appears (a rename keeps the child's open file). Then the dashboard follows the session like any
other reader.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from sgdwalk.config import RunConfig
from sgdwalk.errors import LaunchError, SessionError
from sgdwalk.session import DB_NAME, open_session
from sgdwalk.tui.text import ERROR_PREFIX

BOOL_PAIRS = {
    "batchnorm": ("--batchnorm", "--no-batchnorm"),
    "augment": ("--augment", "--no-augment"),
}
START_TIMEOUT = 300.0  # data loading on a cold machine can take a while
# The trainer runs a little below normal CPU priority, so the dashboard gets a core the moment it
# has a frame to draw. Measured on 2 cores (digits, 4 rounds each): key press to changed screen
# median 72 ms (p90 134) at +5 against 103 ms (p90 213) at 0; training steps/s 0.92 against 0.97
# of headless, within this machine's noise. Only CPU scheduling changes: GPU work does not.
TRAINER_NICE = 5
LOG_NAME = "run.log"


def child_argv(
    flags: dict[str, Any], config: Path | None, name: str, sessions_dir: Path
) -> list[str]:
    """``python -m tui.cli run --headless`` with every flag the user gave, and the session name."""
    argv = [sys.executable, "-m", "sgdwalk.tui.cli", "run", "--headless"]
    for key, value in flags.items():
        if value is None or key in ("session", "sessions_dir"):
            continue
        opt = "--" + key.replace("_", "-")
        if key in BOOL_PAIRS:
            argv.append(BOOL_PAIRS[key][0 if value else 1])
        elif isinstance(value, bool):
            argv += [opt] if value else []
        else:
            argv += [opt, str(value)]
    if config is not None:
        argv += ["--config", str(Path(config).resolve())]
    return argv + ["--session", name, "--sessions-dir", str(Path(sessions_dir).resolve())]


def start_trainer(
    cfg: RunConfig, flags: dict[str, Any], config_file: Path | None, detached: bool
) -> subprocess.Popen[bytes]:
    """Start ``run --headless`` for a claimed ``cfg`` in a child; returns once its session exists.

    ``detached``: the child gets a session of its own, so a hang-up never reaches it; otherwise it
    stays in this terminal's process group and a hang-up stops it cleanly.
    """
    assert cfg.session is not None, "claim(cfg) first"
    sessions = Path(cfg.sessions_dir)
    argv = child_argv(flags, config_file, cfg.session, sessions)
    if cfg.launches:
        argv = torchrun_argv(cfg, argv)
    return start_child(argv, cfg.session, sessions, new_session=detached)


def torchrun_argv(cfg: RunConfig, argv: list[str]) -> list[str]:
    """``python -m sgdwalk.tui.cli ...`` as ``python -m torch.distributed.run [...] -m
    sgdwalk.tui.cli ...``: one machine (``--standalone``), or several meeting at the endpoint."""
    opts = [f"--nproc-per-node={cfg.nproc}"]
    if cfg.nnodes is not None:
        opts += [f"--nnodes={cfg.nnodes}", "--rdzv-backend=c10d",
                 f"--rdzv-endpoint={cfg.rdzv_endpoint}"]  # fmt: skip
    else:
        opts.append("--standalone")
    rest, skip = [], False
    for arg in argv[2:]:  # torchrun would take these (or their prefixes) as its own options
        if skip or arg in DISTRIBUTED_FLAGS:
            skip = not skip
            continue
        rest.append(arg)
    return [argv[0], "-m", "torch.distributed.run", *opts, "-m", *rest]


DISTRIBUTED_FLAGS = ("--nproc", "--nnodes", "--rdzv-endpoint")  # each takes a value


def start_child(
    argv: list[str], name: str, sessions_dir: Path, new_session: bool,
    env: dict[str, str] | None = None,
) -> subprocess.Popen[bytes]:  # fmt: skip
    """Start the child with its output in a log file; returns once its session can be opened.

    ``new_session=False`` keeps the child in the terminal's process group, so a hang-up (SSH drop)
    reaches it and stops it cleanly, as a run without ``--detach`` should.
    Raises ``LaunchError`` with the child's own error line (and exit code) if it exits first.
    """
    sessions_dir.mkdir(parents=True, exist_ok=True)
    log_tmp = sessions_dir / f".{name}.{LOG_NAME}"
    env = os.environ | {"PYTHONUNBUFFERED": "1"} | (env or {})
    with open(log_tmp, "wb") as log:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=new_session, env=env)  # fmt: skip
    _lower_priority(proc.pid)
    _wait_for_session(proc, sessions_dir / name, log_tmp)
    os.replace(log_tmp, sessions_dir / name / LOG_NAME)
    return proc


def _lower_priority(pid: int) -> None:
    if not hasattr(os, "setpriority"):
        return  # not POSIX
    try:
        niceness = os.getpriority(os.PRIO_PROCESS, pid) + TRAINER_NICE
        os.setpriority(os.PRIO_PROCESS, pid, min(19, niceness))
    except ProcessLookupError:
        pass  # it already exited: _wait_for_session reports why


def _wait_for_session(proc: subprocess.Popen[bytes], directory: Path, log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if (directory / DB_NAME).exists():
            try:
                open_session(directory).close()
                return
            except SessionError:
                pass  # the child is still writing the schema
        code = proc.poll()
        if code is not None:
            lines = log.read_text(errors="replace").strip().splitlines()
            log.unlink(missing_ok=True)
            last = lines[-1].removeprefix(ERROR_PREFIX) if lines else ""
            raise LaunchError(last or f"the trainer exited with code {code}", code)
        time.sleep(0.1)
    raise LaunchError(f"the background run did not create its session within {START_TIMEOUT:.0f}s "
                      f"(pid {proc.pid}, log {log})", 1)  # fmt: skip
