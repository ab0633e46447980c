"""``sgdwalk sweep`` and ``sgdwalk compare`` as a user types them: a grid trained, stopped,
resumed, and read back side by side."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from canned import HANG, reap, run_cli

from sgdwalk import open_session

SGDWALK = str(Path(sys.executable).with_name("sgdwalk"))
TINY = ("--epochs", "1", "--hessian-every", "off", "--train-size", "128", "--batch-size", "32")
STARTED: list[subprocess.Popen] = []


@pytest.fixture(autouse=True)
def _reap():
    """Kill a sweep a failing test left behind, and its runs (they stop once it is gone)."""
    yield
    reap(STARTED)


def sgdwalk(*args: str, **kw) -> subprocess.CompletedProcess[str]:
    return subprocess.run([SGDWALK, *args], capture_output=True, text=True, timeout=HANG,
                          stdin=subprocess.DEVNULL, env=os.environ | {"NO_COLOR": "1"}, **kw)  # fmt: skip


def compare_json(sessions: Path, *specs: str) -> list[dict]:
    out = sgdwalk("compare", "--sessions-dir", str(sessions), "--json", *specs)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


@pytest.mark.slow
def test_a_sweep_trains_its_grid_and_the_same_command_keeps_what_finished(tmp_path):
    args = ("sweep", "--lr", "0.1,0.5", *TINY, "--sessions-dir", str(tmp_path), "--session",
            "grid", "--parallel", "2", "--threads", "1")  # fmt: skip
    out = sgdwalk(*args)  # no terminal: headless
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert "sweep grid: 2 runs, 2 at a time, 1 thread each" in lines[0]
    assert sorted(line.split(":")[1].strip() for line in lines[1:3]) == ["lr0.1", "lr0.5"]
    assert all(": finished, 4 steps, interior-min " in line for line in lines[1:3])
    assert "compare its runs: sgdwalk compare grid" in lines[-1]
    got = compare_json(tmp_path, "grid")
    assert [(r["name"], r["lr"], r["status"], r["steps"]) for r in got] == [
        ("lr0.1", 0.1, "finished", 4), ("lr0.5", 0.5, "finished", 4)]  # fmt: skip
    assert {"interior_min_fraction", "barriers_per_epoch", "final_loss", "lambda1"} <= set(got[0])
    with open_session(tmp_path / "grid" / "lr0.1") as s:
        assert s.config["threads"] == 1 and s.config["epochs"] == 1
        started = s.started_at

    again = sgdwalk(*args)  # everything finished: kept, nothing trains
    assert again.returncode == 0, again.stderr
    assert "2 runs (2 finished before, kept)" in again.stdout
    with open_session(tmp_path / "grid" / "lr0.1") as s:
        assert s.started_at == started
    table = sgdwalk("compare", str(tmp_path / "grid" / "lr0.1"), str(tmp_path / "grid" / "lr0.5"))
    assert table.returncode == 0, table.stderr  # no terminal: the table, printed once
    assert "lr0.1" in table.stdout and "lr0.5" in table.stdout and "finished" in table.stdout


def steps_in(db: Path) -> int:
    if not db.exists():
        return 0  # (connecting would make the file, and take the run's folder)
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1) as con:
            return con.execute("SELECT COUNT(*) FROM steps").fetchone()[0]
    except sqlite3.OperationalError:
        return 0  # not there yet, or its schema still being written


def wait_until(cond, proc: subprocess.Popen, timeout: float = HANG) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.05)


@pytest.mark.slow
def test_a_stopped_sweep_keeps_every_step_and_the_same_command_resumes_it(tmp_path):
    args = ("sweep", "--lr", "0.1,0.5", "--epochs", "40", "--hessian-every", "off",
            "--train-size", "64", "--batch-size", "16", "--sessions-dir", str(tmp_path),
            "--session", "grid", "--parallel", "1", "--threads", "1")  # fmt: skip
    proc = subprocess.Popen([SGDWALK, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            stdin=subprocess.DEVNULL, text=True)  # fmt: skip
    STARTED.append(proc)
    first = tmp_path / "grid" / "lr0.1" / "session.sqlite"
    wait_until(lambda: steps_in(first) >= 3, proc)
    proc.send_signal(signal.SIGINT)  # as Ctrl+C: every run stops, none more starts
    out, err = proc.communicate(timeout=HANG)
    assert proc.returncode == 130, err
    assert "lr0.1: interrupted" in out and "sweep grid stopped" in out
    with open_session(first.parent) as s:
        assert s.status == "interrupted"
        kept = s.step_count()
    assert kept >= 3
    assert not (tmp_path / "grid" / "lr0.5").exists()

    again = sgdwalk(*args)
    assert again.returncode == 0, again.stderr
    assert "lr0.1: finished, 160 steps" in again.stdout
    assert "lr0.5: finished, 160 steps" in again.stdout
    with open_session(tmp_path / "grid" / "lr0.1.stopped-1") as s:  # moved aside, every step
        assert s.status == "interrupted" and s.step_count() == kept
    assert [r["name"] for r in compare_json(tmp_path, "grid")] == ["lr0.1", "lr0.5"]


def test_bad_sweeps_are_one_line_and_exit_2(tmp_path):
    where = ("--sessions-dir", str(tmp_path))
    for args, words in (
        (("--lr", "0.1,abc"), "--lr: bad value 'abc'"),
        (("--lr", "0.1"), "sweep: give at least one setting several values"),
        (("--lr", "0.1,0.1"), "--lr: a value twice in '0.1,0.1'"),
        (("--lr", "0.1,0.5", "--parallel", "0"), "--parallel: must be from 1 to"),
        (("--lr", "0.1,0.5", "--log-to", "mlflow"), "--log-to: unknown tracker 'mlflow'"),
        (("--lr", "0.1,0.5", "--session", "../x"), "session"),
    ):
        code, out, err = run_cli("sweep", *args, *where)
        assert code == 2, (args, err)
        assert err.startswith("sgdwalk: error: ") and words in err and err.count("\n") == 1
    assert not list(tmp_path.iterdir())  # nothing planned, nothing claimed
    code, _, err = run_cli("compare", "nosuch", *where)
    assert code == 2 and err.startswith("sgdwalk: error: ")


@pytest.mark.slow
def test_each_run_of_a_sweep_logs_to_its_own_tensorboard_folder(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = sgdwalk("sweep", "--batch-size", "32,64", *TINY[:-2], "--sessions-dir", str(tmp_path),
                  "--threads", "1", "--log-to", f"tensorboard:{tmp_path / 'tb'}")  # fmt: skip
    assert out.returncode == 0, out.stderr
    for name, steps in (("batch_size32", 4), ("batch_size64", 2)):
        acc = EventAccumulator(str(tmp_path / "tb" / name))
        acc.Reload()
        assert [e.step for e in acc.Scalars("train/batch_loss")] == list(range(1, steps + 1))
    (sweep,) = [p for p in tmp_path.iterdir() if p.name.startswith("sweep-batch_size-")]
    assert (sweep / "sweep.json").is_file()  # named by its grid: the same command resumes it


TMUX = "sgdwalk-sweep-tests"  # a private tmux server


def tmux(*args: str) -> str:
    return subprocess.run(["tmux", "-L", TMUX, *args], check=True, capture_output=True,
                          text=True).stdout  # fmt: skip


def wait_for_screen(name: str, text: str) -> str:
    deadline = time.monotonic() + HANG
    while time.monotonic() < deadline:
        screen = tmux("capture-pane", "-p", "-t", name)
        if text in screen:
            return screen
        time.sleep(0.2)
    raise AssertionError(f"{text!r} never appeared:\n{screen}")


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("tmux") is None, reason="needs tmux")
def test_in_a_terminal_the_comparison_view_shows_the_runs_p_holds_them_and_q_stops_them(tmp_path):
    name = f"sweep-{tmp_path.name}"
    cmd = (f"env -u COLUMNS -u LINES {SGDWALK} sweep --lr 0.1,0.5 --epochs 100000 "
           f"--hessian-every off --train-size 64 --sessions-dir {tmp_path} --session grid "
           f"--parallel 2 --threads 1; echo EXIT=$?; sleep 30")  # fmt: skip
    tmux("-f", "/dev/null", "new", "-d", "-s", name, "-x", "120", "-y", "40", cmd)
    try:
        wait_for_screen(name, "sweep grid · 2 runs · 2 running")
        tmux("send-keys", "-t", name, "p")
        wait_for_screen(name, "all held")
        for point in ("lr0.1", "lr0.5"):  # each trainer says it holds
            deadline = time.monotonic() + HANG
            while time.monotonic() < deadline:
                with open_session(tmp_path / "grid" / point) as s:
                    if any(e.kind == "paused" for e in s.events()):
                        break
                time.sleep(0.2)
            else:
                raise AssertionError(f"{point} never paused")
        tmux("send-keys", "-t", name, "p")
        wait_for_screen(name, "2 running · figure")
        tmux("send-keys", "-t", name, "q")
        screen = wait_for_screen(name, "EXIT=130")
    finally:
        subprocess.run(["tmux", "-L", TMUX, "kill-session", "-t", name], check=False)
    assert "lr0.1: interrupted" in screen and "lr0.5: interrupted" in screen
    for point in ("lr0.1", "lr0.5"):
        with open_session(tmp_path / "grid" / point) as s:
            assert s.status == "interrupted" and s.step_count() >= 1


def optuna_example() -> str:
    text = (Path(__file__).parent.parent / "README.md").read_text()
    section = text.split("### Sweeps beyond one machine", 1)[1].split("\n## ", 1)[0]
    (code,) = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    return code


@pytest.mark.slow
def test_the_readmes_optuna_trials_write_one_folder_that_compare_reads(tmp_path):
    import optuna  # noqa: F401 - the test command installs it (the optuna extra)

    code = optuna_example()
    assert "n_trials=3" in code
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                         text=True, timeout=HANG)  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    got = sgdwalk("compare", "optuna-lr", "--json", cwd=tmp_path)  # ./sessions, as a user has it
    assert got.returncode == 0, got.stderr
    runs = json.loads(got.stdout)
    assert [r["name"] for r in runs] == ["trial-0", "trial-1", "trial-2"]
    assert all(r["status"] == "finished" and r["steps"] == 16 for r in runs)
    assert len({r["lr"] for r in runs}) == 3  # each trial its own learning rate
    assert all(0 <= r["interior_min_fraction"] <= 1 for r in runs)


def test_sweep_help_takes_runs_settings_as_lists():
    code, out, _ = run_cli("sweep", "--help")
    assert code == 0
    assert "--lr <str>" in out and "--batch-size <str>" in out and "--parallel" in out
    assert "the sweep's name" in out and "comma-separated" in out
