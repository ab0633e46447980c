"""How runs end: SIGKILL loses nothing committed; signals stop cleanly; divergence is recorded."""

from __future__ import annotations

import math
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from canned import HANG, reap

from sgdwalk import open_session
from sgdwalk.records import PAUSED_EVENT, RESUMED_EVENT, StepMeasured
from sgdwalk.tui.commands.trainer import TRAINER_NICE

SGDWALK = str(Path(sys.executable).with_name("sgdwalk"))


@pytest.fixture(autouse=True)
def _reap():
    """Kill any run a failing test left behind (a 200-epoch child would hog the CPU)."""
    yield
    reap(STARTED, 10)


STARTED: list[subprocess.Popen] = []


def start(
    tmp_path: Path, name: str, *extra: str, stdout: int = subprocess.DEVNULL
) -> subprocess.Popen:
    args = [SGDWALK, "run", "--headless", "--sessions-dir", str(tmp_path), "--session", name,
            "--epochs", "200", "--hessian-every", "off", *extra]  # fmt: skip
    proc = subprocess.Popen(args, stdout=stdout, stderr=subprocess.PIPE,
                            stdin=subprocess.DEVNULL, env=os.environ | {"NO_COLOR": "1"})  # fmt: skip
    STARTED.append(proc)
    return proc


def wait_until(cond, timeout: float = HANG) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.05)


def wait_for_steps(db: Path, n: int, proc: subprocess.Popen, timeout: float = HANG) -> int:
    deadline = time.time() + timeout
    while time.time() < deadline:
        assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
        if db.exists():
            try:
                with sqlite3.connect(db, timeout=1) as con:
                    count = con.execute("SELECT COUNT(*) FROM steps").fetchone()[0]
                if count >= n:
                    return count
            except sqlite3.OperationalError:
                pass  # schema not there yet
        time.sleep(0.1)
    raise AssertionError("run did not reach the step count in time")


@pytest.mark.slow
def test_sigkill_mid_epoch_keeps_every_committed_step(tmp_path: Path):
    # 188 steps an epoch: more than the writer takes between time-based commits
    proc = start(tmp_path, "killed", "--batch-size", "8", "--probe", "256", "--budget", "off")
    db = tmp_path / "killed" / "session.sqlite"
    seen = wait_for_steps(db, 20, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    with sqlite3.connect(db) as con:
        assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    with open_session(tmp_path / "killed") as s:
        assert s.status == "interrupted"  # stored "running", but the writer's pid is dead
        steps = list(s.steps())
        assert len(steps) >= seen
        assert [r.step for r in steps] == list(range(1, len(steps) + 1))
        assert steps[-1].step % 188 != 0  # died mid-epoch, not at a boundary commit
        for r in steps:
            assert isinstance(r, StepMeasured) and len(r.slice) == 11
            assert all(math.isfinite(v) for v in r.slice)
            assert r.floor_loss == min(r.slice)


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP])
def test_signals_stop_cleanly_as_interrupted(tmp_path: Path, sig: signal.Signals):
    proc = start(tmp_path, "stopped")
    wait_for_steps(tmp_path / "stopped" / "session.sqlite", 5, proc)
    proc.send_signal(sig)
    assert proc.wait(30) == 130
    with open_session(tmp_path / "stopped") as s:
        assert s.stored_status == "interrupted"
        events = [e for e in s.events() if e.kind == "interrupted"]
        assert len(events) == 1
        assert s.last_step() == events[0].step  # everything up to the stop was committed


def wait_for_event(session_dir: Path, kind: str, proc: subprocess.Popen, timeout: float = HANG):
    deadline = time.time() + timeout
    while time.time() < deadline:
        assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
        with open_session(session_dir) as s:
            events = [e for e in s.events() if e.kind == kind]
            if events:
                return events[-1], s.last_step()
        time.sleep(0.1)
    raise AssertionError(f"no {kind!r} event in time")


@pytest.mark.slow
def test_pause_and_resume_signals_are_acknowledged_in_the_session(tmp_path: Path):
    proc = start(tmp_path, "held", stdout=subprocess.PIPE)
    wait_for_steps(tmp_path / "held" / "session.sqlite", 5, proc)
    proc.send_signal(signal.SIGUSR1)
    paused, last = wait_for_event(tmp_path / "held", PAUSED_EVENT, proc)
    assert last == paused.step  # the event lands with every step before it committed
    with open_session(tmp_path / "held") as s:
        beat = s._meta()["heartbeat"]
        wait_until(lambda: float(s._meta()["heartbeat"]) >= float(beat) + 1.0)
        assert s.last_step() == paused.step and s.alive  # the heartbeat goes on, training not
    proc.send_signal(signal.SIGUSR2)
    resumed, _ = wait_for_event(tmp_path / "held", RESUMED_EVENT, proc)
    assert resumed.step == paused.step
    wait_for_steps(tmp_path / "held" / "session.sqlite", paused.step + 3, proc)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 130
    out = proc.stdout.read().decode()
    assert f"paused at step {paused.step}" in out and f"resumed at step {paused.step}" in out


@pytest.mark.slow
def test_detach_leaves_a_lower_priority_trainer_in_its_own_session(tmp_path: Path):
    args = [SGDWALK, "run", "--detach", "--sessions-dir", str(tmp_path), "--session", "bg",
            "--epochs", "200", "--train-size", "256", "--hessian-every", "off"]  # fmt: skip
    out = subprocess.run(
        args, capture_output=True, text=True, timeout=HANG, stdin=subprocess.DEVNULL
    )
    assert out.returncode == 0, out.stderr
    pid = int(out.stdout.split("(pid ")[1].split(")")[0])
    try:
        assert os.getpriority(os.PRIO_PROCESS, pid) == min(
            19, os.getpriority(os.PRIO_PROCESS, 0) + TRAINER_NICE
        )
        assert os.getsid(pid) != os.getsid(0)  # a hang-up of this terminal cannot reach it
        with open_session(tmp_path / "bg") as s:
            assert s.alive  # it trains on after the command returned
    finally:
        os.kill(pid, signal.SIGTERM)
    deadline = time.time() + 60
    while time.time() < deadline:
        with open_session(tmp_path / "bg") as s:
            if s.stored_status != "running":
                break
        time.sleep(0.2)
    with open_session(tmp_path / "bg") as s:
        assert s.stored_status == "interrupted"
    assert "interrupted" in (tmp_path / "bg" / "run.log").read_text()


@pytest.mark.slow
def test_divergence_stops_with_an_event(tmp_path: Path):
    proc = start(tmp_path, "boom", "--lr", "1e6", "--no-batchnorm")
    _, err = proc.communicate(timeout=HANG)
    assert proc.returncode == 3, err
    with open_session(tmp_path / "boom") as s:
        assert s.status == "diverged"
        (event,) = [e for e in s.events() if e.kind == "diverged"]
        assert event.level == "error" and f"step {event.step}" in event.message
        assert not math.isfinite(s.step(event.step).batch_loss)
        assert s.last_step() == event.step
