"""End to end: ``sgdwalk run`` in a real terminal (tmux), driven by keys, read from the screen.

The dashboard runs in another process, so the test polls the captured pane; there is no event to
wait on across the terminal.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from canned import HANG

from sgdwalk.session import open_session

ROOT = Path(__file__).parent.parent
SGDWALK = ROOT / ".venv" / "bin" / "sgdwalk"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("tmux") is None or not SGDWALK.exists(), reason="needs tmux"),
]


SOCKET = "sgdwalk-tests"  # a private tmux server: other sessions' options cannot change the size


def tmux(*args: str) -> str:
    argv = ["tmux", "-L", SOCKET, *args]
    return subprocess.run(argv, check=True, capture_output=True, text=True).stdout


def screen(name: str) -> str:
    return tmux("capture-pane", "-p", "-t", name)


def start(name: str, cmd: str) -> None:
    """``cmd`` in a detached 120x40 tmux window named ``name``."""
    tmux("-f", "/dev/null", "new", "-d", "-s", name, "-x", "120", "-y", "40", cmd)
    tmux("set-option", "-t", name, "window-size", "manual")
    tmux("resize-window", "-t", name, "-x", "120", "-y", "40")  # a fresh server may start at 80x24


def wait_gone(name: str, pattern: str, timeout: float = HANG) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not re.search(pattern, screen(name)):
            return
        time.sleep(0.2)
    raise AssertionError(f"{pattern!r} never went away:\n{screen(name)}")


def wait_for(name: str, pattern: str, timeout: float = HANG) -> re.Match[str]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        m = re.search(pattern, screen(name))
        if m:
            return m
        time.sleep(0.2)
    raise AssertionError(f"{pattern!r} never appeared:\n{screen(name)}")


def test_run_in_tmux_shows_the_walk_and_obeys_pause_and_stop(tmp_path):
    name = f"sgdwalk-e2e-{tmp_path.name}"
    cmd = (f"env -u COLUMNS -u LINES {SGDWALK} run --epochs 2000 --hessian-every off --sessions-dir {tmp_path} "
           f"--session e2e; echo EXIT=$?; sleep 30")  # fmt: skip
    start(name, cmd)
    try:
        wait_for(name, r"slices · last 20 steps")
        wait_for(name, r"barriers · \d+ total")
        wait_for(name, r"step \d+/48000 · epoch \d+/2000 · [\d.]+ steps/s")
        tmux("send-keys", "-t", name, "p")
        held = wait_for(name, r"⏸ paused after step (\d+)").group(1)  # the trainer says it holds
        wait_for(name, rf"step {held}/48000")
        with open_session(tmp_path / "e2e") as s:  # two heartbeats later, still at that step
            beat = float(s._meta()["heartbeat"])
            while float(s._meta()["heartbeat"]) < beat + 2.0:
                time.sleep(0.1)
            assert s.last_step() == int(held)
        assert wait_for(name, r"step (\d+)/48000").group(1) == held
        tmux("send-keys", "-t", name, "p")
        wait_for(name, r"● live")
        tmux("send-keys", "-t", name, "?")  # the help page, as the terminal shows it
        wait_for(name, r"sgdwalk watch — keys")
        wait_for(name, r"p +pause / resume training")
        tmux("send-keys", "-t", name, "Escape")
        wait_gone(name, r"sgdwalk watch — keys")  # the slices title shows under the help too
        tmux("send-keys", "-t", name, "C-c")  # Ctrl+C asks, as q does
        wait_for(name, r"\[s\] stop the run cleanly and quit")
        tmux("send-keys", "-t", name, "s")
        wait_for(name, r"EXIT=130")
    finally:
        subprocess.run(["tmux", "-L", SOCKET, "kill-session", "-t", name], check=False)
    assert open_session(tmp_path / "e2e").status == "interrupted"


USER_SCRIPT = """
import torch
from torch import nn
import sgdwalk

torch.manual_seed(0)
x, y = torch.randn(512, 3, 8, 8), torch.randint(0, 4, (512,))
model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 36, 4))
optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
with sgdwalk.Walker(model, probe=(x[:128], y[:128])) as walker:
    walker.attach(optimizer)
    for step in range(10**6):
        i = step * 32 % 512
        loss = nn.functional.cross_entropy(model(x[i:i + 32]), y[i:i + 32])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
"""


def test_exec_shows_a_users_script_live_and_pauses_and_stops_it(tmp_path):
    name = f"sgdwalk-exec-{tmp_path.name}"
    (tmp_path / "train.py").write_text(USER_SCRIPT)
    python = ROOT / ".venv" / "bin" / "python"
    cmd = (f"cd {tmp_path} && env -u COLUMNS -u LINES {SGDWALK} exec --session mine "
           f"--sessions-dir {tmp_path} -- {python} train.py; echo EXIT=$?; sleep 30")  # fmt: skip
    start(name, cmd)
    try:
        wait_for(name, r"● live · step \d+ · epoch 1 · [\d.]+ steps/s .* batch 32 · cpu · mine")
        wait_for(name, r"slices · last 20 steps")
        tmux("send-keys", "-t", name, "p")
        held = wait_for(name, r"⏸ paused after step (\d+)").group(1)  # the script holds
        tmux("send-keys", "-t", name, "p")
        wait_for(name, r"● live")
        tmux("send-keys", "-t", name, "s")
        wait_for(name, r"■ interrupted")
        wait_for(name, r"interrupted: stopped by SIGTERM")
        tmux("send-keys", "-t", name, "q")
        wait_for(name, r"EXIT=130")
    finally:
        subprocess.run(["tmux", "-L", SOCKET, "kill-session", "-t", name], check=False)
    with open_session(tmp_path / "mine") as s:
        assert s.status == "interrupted" and s.step_count() > int(held)
        assert s.config["model"] == "Sequential" and s.config["source"] == "walker"


def test_run_nproc_2_in_tmux_shows_rank_0s_session_and_stops_it(tmp_path):
    name = f"sgdwalk-nproc-{tmp_path.name}"
    cmd = (f"env -u COLUMNS -u LINES {SGDWALK} run --nproc 2 --epochs 2000 --hessian-every off "
           f"--sessions-dir {tmp_path} --session np; echo EXIT=$?; sleep 30")  # fmt: skip
    start(name, cmd)
    try:
        wait_for(name, r"● live · step \d+/48000 · epoch \d+/2000 · [\d.]+ steps/s")
        tmux("send-keys", "-t", name, "p")  # reaches rank 0, the session's writer
        wait_for(name, r"⏸ paused after step (\d+)")
        tmux("send-keys", "-t", name, "p")
        wait_for(name, r"● live")
        tmux("send-keys", "-t", name, "q")
        wait_for(name, r"\[s\] stop the run cleanly and quit")
        tmux("send-keys", "-t", name, "s")
        wait_for(name, r"EXIT=130")
    finally:
        subprocess.run(["tmux", "-L", SOCKET, "kill-session", "-t", name], check=False)
    with open_session(tmp_path / "np") as s:
        assert s.status == "interrupted" and s.info["world_size"] == 2
