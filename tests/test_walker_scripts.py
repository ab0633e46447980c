"""A user's script with a Walker, as a process: how it ends (finished, failed, interrupted by a
signal, a forgotten close), pause and resume by signal, its own handlers left alone, and
``sgdwalk exec`` without a terminal."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from canned import HANG, STOPPED

from sgdwalk.records import FAILED, FINISHED, INTERRUPTED, PAUSED_EVENT, RESUMED_EVENT
from sgdwalk.session import open_session

pytestmark = pytest.mark.skipif(not hasattr(signal, "SIGUSR1"), reason="POSIX signals")

SCRIPT = """
import signal, sys, time
import torch
from torch import nn
import sgdwalk

torch.manual_seed(0)
x, y = torch.randn(256, 5), torch.randint(0, 3, (256,))
model = nn.Sequential(nn.Linear(5, 16), nn.Tanh(), nn.Linear(16, 3))
opt = torch.optim.SGD(model.parameters(), lr=0.1)
{before}
walker = sgdwalk.Walker(model, (x, y), session="s", sessions_dir=sys.argv[1], budget=None)
walker.attach(opt)
for step in range({steps}):
    loss = nn.functional.cross_entropy(model(x[:32]), y[:32])
    opt.zero_grad()
    loss.backward()
    opt.step()
    {body}
{after}
"""


def script(tmp_path: Path, steps: int = 5, before: str = "", body: str = "", after: str = ""):
    path = tmp_path / "train.py"
    path.write_text(textwrap.dedent(SCRIPT).format(steps=steps, before=before, body=body or "pass",
                                                   after=after))  # fmt: skip
    return path


def run(path: Path, sessions: Path, **kw) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(path), str(sessions)], capture_output=True,
                          text=True, timeout=HANG, **kw)  # fmt: skip


def session(sessions: Path):
    s = open_session(sessions / "s")
    return s, list(s.steps()), list(s.events())


def wait_for_steps(sessions: Path, n: int, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + HANG
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        try:
            with open_session(sessions / "s") as s:
                if s.step_count() >= n:
                    return
        except Exception:  # noqa: BLE001 - not created yet
            pass
        time.sleep(0.05)
    raise AssertionError(f"{n} steps never appeared")


def test_a_script_that_forgets_close_ends_finished(tmp_path):
    out = run(script(tmp_path, steps=4), tmp_path / "sessions")
    assert out.returncode == 0, out.stderr
    s, steps, events = session(tmp_path / "sessions")
    assert s.status == FINISHED and len(steps) == 4 and events[-1].kind == FINISHED


def test_an_uncaught_error_ends_failed_and_python_still_prints_it(tmp_path):
    out = run(script(tmp_path, steps=3, after="raise ValueError('bad data')"),
              tmp_path / "sessions")  # fmt: skip
    assert out.returncode == 1 and "ValueError: bad data" in out.stderr
    s, steps, events = session(tmp_path / "sessions")
    assert s.status == FAILED and "bad data" in s.message and len(steps) == 3


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP])
def test_a_stop_signal_ends_interrupted_with_every_step_kept(tmp_path, sig):
    sessions = tmp_path / "sessions"
    path = script(tmp_path, steps=10**6)
    proc = subprocess.Popen([sys.executable, str(path), str(sessions)], stderr=subprocess.PIPE,
                            text=True)  # fmt: skip
    wait_for_steps(sessions, 5, proc)
    proc.send_signal(sig)
    try:
        proc.wait(timeout=STOPPED)
    finally:
        if proc.poll() is None:
            proc.kill()  # a failed stop ends the test, not the machine's patience
    s, steps, events = session(sessions)
    assert s.status == INTERRUPTED and events[-1].kind == INTERRUPTED
    assert [r.step for r in steps] == list(range(1, len(steps) + 1))
    if sig != signal.SIGINT:
        assert s.message == f"stopped by {signal.Signals(sig).name}"


def test_pause_and_resume_by_signal_hold_training_between_steps(tmp_path):
    sessions = tmp_path / "sessions"
    path = script(tmp_path, steps=10**6)
    proc = subprocess.Popen([sys.executable, str(path), str(sessions)], stderr=subprocess.PIPE,
                            text=True)  # fmt: skip
    try:
        wait_for_steps(sessions, 3, proc)
        proc.send_signal(signal.SIGUSR1)
        deadline = time.monotonic() + HANG
        while True:
            with open_session(sessions / "s") as s:
                paused = [e for e in s.events() if e.kind == PAUSED_EVENT]
                if paused:
                    held = s.step_count()
                    break
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert paused[0].step == held  # every step before the pause is committed with it
        with open_session(sessions / "s") as s:
            assert s.step_count() == held  # (the pause event was committed after its steps)
        proc.send_signal(signal.SIGUSR2)
        wait_for_steps(sessions, held + 3, proc)
        with open_session(sessions / "s") as s:
            assert [e.kind for e in s.events()][-2:] == [PAUSED_EVENT, RESUMED_EVENT]
    finally:
        proc.terminate()
        proc.wait(timeout=HANG)


def test_the_users_own_signal_handler_is_kept(tmp_path):
    before = "signal.signal(signal.SIGTERM, lambda *a: print('mine', flush=True))"
    after = ("assert signal.getsignal(signal.SIGTERM).__name__ == '<lambda>'\n"
             "walker.close()\n"
             "assert signal.getsignal(signal.SIGUSR1) == signal.SIG_DFL")  # fmt: skip
    out = run(script(tmp_path, steps=2, before=before, after=after), tmp_path / "sessions")
    assert out.returncode == 0, out.stderr


def test_exec_without_a_terminal_runs_the_script_under_the_name_it_chose(tmp_path):
    path = script(tmp_path, steps=3, after="sys.exit(3)")
    sessions = tmp_path / "elsewhere"
    out = subprocess.run([sys.executable, "-m", "sgdwalk.tui.cli", "exec", "--session", "mine",
                          "--sessions-dir", str(sessions), "--", sys.executable, str(path),
                          str(tmp_path / "ignored")], capture_output=True, text=True,
                         timeout=HANG)  # fmt: skip
    assert out.returncode == 3, out.stderr  # the script's own exit code
    with open_session(sessions / "mine") as s:  # exec's name and folder win over the script's
        # sys.exit(3) is the script failing, as its exit code says (issue 22: it ended finished)
        assert s.step_count() == 3 and s.status == FAILED and s.message == "exit code 3"
    assert not (tmp_path / "ignored").exists()


def test_exec_one_line_errors(tmp_path):
    base = [sys.executable, "-m", "sgdwalk.tui.cli", "exec", "--sessions-dir", str(tmp_path)]
    for extra, words in (([], "give the command to run"),
                         (["--", "no-such-program-xyz"], "was not found")):  # fmt: skip
        out = subprocess.run(base + extra, capture_output=True, text=True, timeout=HANG)
        assert out.returncode == 2 and words in out.stderr and "Traceback" not in out.stderr
    os.makedirs(tmp_path / "taken")
    out = subprocess.run(base + ["--session", "taken", "--", "true"], capture_output=True,
                         text=True, timeout=HANG)  # fmt: skip
    assert out.returncode == 2 and "already exists" in out.stderr
