"""Hostile moments around the processes sgdwalk starts: a session folder deleted mid-run, a script
that ignores SIGTERM, a launcher killed or interrupted alone, a machine that never joins, a rank
that stops answering, a batch BatchNorm cannot train on, a script that makes no Walker.

Every wait is on a condition, bounded by ``canned.HANG`` against a hang; the grace before a kill
and the collective timeout are made short through their environment variables, so the kills
happen within the test's patience, not at a speed the test demands.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from canned import CANNED_CONFIG, CANNED_INFO, HANG, aio, until

from sgdwalk.config import build_config
from sgdwalk.errors import StorageError
from sgdwalk.records import INTERRUPTED, PhaseProgressed
from sgdwalk.session import SessionWriter, open_session
from sgdwalk.shard import Shard
from sgdwalk.tui.commands.children import tree

SGDWALK = str(Path(sys.executable).with_name("sgdwalk"))
# a rank's collectives wait 30 s: on a busy machine one rank can start a first collective more
# than 8 s after the other (CI: "another rank stopped answering" before the first step); the
# test of a stopped rank asks for 8 (``RANK_WAIT``) to see that bound kept
QUICK = {"SGDWALK_STOP_GRACE": "3", "SGDWALK_RANK_TIMEOUT": "30", "SGDWALK_RDZV_TIMEOUT": "3",
         "NO_COLOR": "1"}  # fmt: skip
RANK_WAIT = {"SGDWALK_RANK_TIMEOUT": "8"}
STARTED: list[subprocess.Popen] = []


@pytest.fixture(autouse=True)
def _reap():
    """Kill whatever a failing test left behind, every process under it too."""
    yield
    for proc in STARTED:
        for pid in tree(proc.pid) if proc.poll() is None else []:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        proc.wait(HANG)
    STARTED.clear()


def start(*args: str, env: dict[str, str] | None = None, **kw) -> subprocess.Popen:
    proc = subprocess.Popen([SGDWALK, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            stdin=subprocess.DEVNULL, text=True,
                            env=os.environ | QUICK | (env or {}), **kw)  # fmt: skip
    STARTED.append(proc)
    return proc


def train(tmp_path: Path, *extra: str) -> list[str]:
    return ["run", "--headless", "--epochs", "200", "--hessian-every", "off", "--sessions-dir",
            str(tmp_path), "--session", "n", *extra]  # fmt: skip


def wait_until(cond, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + HANG
    while not cond():
        assert time.monotonic() < deadline, "condition not reached in time"
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"ended first ({proc.returncode}): {proc.stderr.read()}")
        time.sleep(0.05)


def steps_in(directory: Path) -> int:
    try:
        with open_session(directory) as s:
            return s.step_count()
    except Exception:  # noqa: BLE001 - not there yet
        return 0


def ranks_of(proc: subprocess.Popen) -> dict[int, int]:
    """The torchrun ranks under ``proc``: rank -> pid."""
    out = {}
    for pid in tree(proc.pid):
        try:
            env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"LOCAL_RANK=0" in env or b"LOCAL_RANK=1" in env:
            rank = next(int(e[5:]) for e in env if e.startswith(b"RANK="))
            out[rank] = pid
    return out


def gone(pids) -> bool:
    """Whether every process in ``pids`` has ended (a zombie counts: it no longer runs)."""
    for pid in pids:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z":
            return False
    return True


def ending(proc: subprocess.Popen) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=HANG)
    return proc.returncode, out, err


# ---------------------------------------------------------------- 1. the session folder deleted


def test_a_writer_notices_its_folder_deleted_at_commit_and_by_heartbeat(tmp_path):
    for by_heartbeat in (False, True):
        folder = tmp_path / f"s{by_heartbeat}"
        writer = SessionWriter(folder, {}, {})
        shutil.rmtree(folder)
        if by_heartbeat:  # no commit comes during a curvature pass: the heartbeat notices
            wait_until(lambda w=writer: w._heartbeat.lost)
            with pytest.raises(StorageError, match="deleted or moved"):
                writer.write(PhaseProgressed(0, 0, "curvature", 1, 10))
        else:
            with pytest.raises(StorageError, match="deleted or moved"):
                writer.commit()
        with pytest.raises(StorageError):
            writer.close(INTERRUPTED)


@pytest.mark.slow
def test_a_session_folder_deleted_mid_run_ends_it_with_exit_4(tmp_path):
    proc = start(*train(tmp_path))
    wait_until(lambda: steps_in(tmp_path / "n") >= 5, proc)
    shutil.rmtree(tmp_path / "n")
    code, out, err = ending(proc)
    assert code == 4, err
    assert err.count("\n") == 1 and "its folder was deleted or moved" in err
    assert "finished" not in out and not (tmp_path / "n").exists()


# ---------------------------------------------------------------- 2. a script that ignores SIGTERM

STUBBORN = """
import signal, sys, time, torch
from torch import nn
import sgdwalk

x, y = torch.randn(64, 5), torch.randint(0, 3, (64,))
model = nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 3))
opt = torch.optim.SGD(model.parameters(), lr=0.1)
walker = sgdwalk.Walker(model, (x, y))
walker.attach(opt)
signal.signal(signal.SIGTERM, signal.SIG_IGN)
signal.signal(signal.SIGINT, signal.SIG_IGN)
signal.signal(signal.SIGHUP, signal.SIG_IGN)
for step in range(10**7):
    loss = nn.functional.cross_entropy(model(x[:32]), y[:32])
    opt.zero_grad()
    loss.backward()
    opt.step()
    time.sleep(0.01)
"""


def only_session(folder: Path) -> Path:
    (found,) = [p for p in folder.iterdir() if (p / "session.sqlite").exists()]
    return found


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP])
def test_exec_kills_a_script_that_ignores_a_stop_after_the_grace(tmp_path, sig):
    (tmp_path / "train.py").write_text(STUBBORN)
    proc = start("exec", "--headless", "--sessions-dir", str(tmp_path / "s"), "--",
                 sys.executable, str(tmp_path / "train.py"))  # fmt: skip
    wait_until(lambda: any(steps_in(p) >= 3 for p in (tmp_path / "s").glob("*")), proc)
    members = tree(proc.pid)
    proc.send_signal(sig)  # to sgdwalk alone, not to its group
    code, _, err = ending(proc)
    assert code == 128 + signal.SIGKILL, err  # the script's own end, as a shell says it
    assert "not stopped 3 s after" in err and "killing it" in err and "Traceback" not in err
    wait_until(lambda: gone(members))
    with open_session(only_session(tmp_path / "s")) as s:
        assert s.stored_status == INTERRUPTED and "killed (SIGKILL)" in s.message
        assert [e.kind for e in s.events()][-1] == INTERRUPTED


@pytest.mark.slow
def test_a_dashboards_trainer_that_will_not_stop_is_killed_when_the_dashboard_quits(
    tmp_path, monkeypatch
):
    """The dashboard quits (its `q`, `s`); the trainer child is stopped (here SIGSTOPped: it
    cannot take the SIGTERM) and killed after the grace, and the session says so."""
    from sgdwalk.runner import claim, session_of
    from sgdwalk.tui.commands import dashboards

    monkeypatch.setenv("SGDWALK_STOP_GRACE", "3")
    monkeypatch.setattr(dashboards, "watch", lambda *a, **k: 0)  # the dashboard, quit at once
    cfg = claim(build_config({"epochs": 200, "hessian_every": "off",
                              "sessions_dir": str(tmp_path), "session": "d"}))  # fmt: skip
    proc = dashboards.start_trainer(cfg, detached=False)
    wait_until(lambda: steps_in(session_of(cfg)) >= 3)
    os.kill(proc.pid, signal.SIGSTOP)
    shown, code, status = dashboards.watch_owned(proc, session_of(cfg), proc.pid)
    assert (shown, code, status) == (0, 128 + signal.SIGKILL, INTERRUPTED)
    with open_session(session_of(cfg)) as s:
        assert s.stored_status == INTERRUPTED and "not stopped 3 s after SIGTERM" in s.message


# ---------------------------------------------------------------- 3. the launcher, alone


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP])
def test_a_stop_signal_to_run_nproc_alone_stops_every_rank(tmp_path, sig):
    proc = start(*train(tmp_path, "--nproc", "2"))
    wait_until(lambda: steps_in(tmp_path / "n") >= 5, proc)
    members = tree(proc.pid)
    assert len(ranks_of(proc)) == 2
    proc.send_signal(sig)  # to sgdwalk alone (SIGINT was ignored, SIGTERM left them training)
    code, out, err = ending(proc)
    assert code == 130, err
    wait_until(lambda: gone(members))
    assert "Traceback" not in err and "SignalException" not in err  # torchrun's noise: run.log
    assert "sgdwalk: interrupted: session n" in out
    with open_session(tmp_path / "n") as s:
        assert s.stored_status == INTERRUPTED and s.message == "stopped by request"
    assert re.search(r"torch[./]distributed", (tmp_path / "n" / "run.log").read_text())


@pytest.mark.slow
def test_ranks_stop_by_themselves_when_run_nproc_is_killed(tmp_path):
    proc = start(*train(tmp_path, "--nproc", "2"))
    wait_until(lambda: steps_in(tmp_path / "n") >= 5, proc)
    members = tree(proc.pid)
    proc.kill()  # nothing can pass this on: the ranks notice their owner is gone
    proc.wait(HANG)
    wait_until(lambda: gone(members))
    with open_session(tmp_path / "n") as s:
        assert s.stored_status == INTERRUPTED


# ---------------------------------------------------------------- 4. machines, ranks that never answer


@pytest.mark.slow
def test_a_machine_that_never_joins_is_one_line_naming_the_endpoint(tmp_path):
    proc = start("run", "--headless", "--nnodes", "2", "--rdzv-endpoint", "localhost:29517",
                 "--sessions-dir", str(tmp_path), "--session", "n")  # fmt: skip
    code, _, err = ending(proc)
    assert code == 2, err
    lines = err.strip().splitlines()
    assert lines[0] == "sgdwalk: waiting for 2 machines to meet at localhost:29517 (up to 3 s)"
    assert len(lines) == 2 and "localhost:29517 within 3 s" in lines[1], err
    assert not (tmp_path / "n").exists()


@pytest.mark.slow
@pytest.mark.parametrize("rank", [1, 0])
def test_a_stopped_rank_ends_the_run_interrupted_within_the_bounds(tmp_path, rank):
    proc = start(*train(tmp_path, "--nproc", "2"), env=RANK_WAIT)
    wait_until(lambda: steps_in(tmp_path / "n") >= 5, proc)
    members = tree(proc.pid)
    os.kill(ranks_of(proc)[rank], signal.SIGSTOP)  # its heartbeat (rank 0's) goes on, or not
    code, out, err = ending(proc)
    assert code == 130, err
    assert "Traceback" not in err
    wait_until(lambda: gone(members))
    with open_session(tmp_path / "n") as s:
        assert s.stored_status == INTERRUPTED
        if rank == 1:  # rank 0 waited 8 s for it, then said so
            assert s.message.startswith("another rank stopped answering (a collective waits")
        else:  # rank 0 itself was stopped, then killed: sgdwalk recorded the ending
            assert s.message.startswith("rank 0 ended without recording an ending")
            assert "rank 0 did not record its ending" in err


# ---------------------------------------------------------------- 7. BatchNorm and batches of one


def test_a_last_probe_chunk_of_one_row_goes_with_the_chunk_before_it():
    assert [(Shard(65, r, 2, unit=64).start, Shard(65, r, 2, unit=64).stop) for r in (0, 1)] == [
        (0, 0), (0, 65)]  # fmt: skip
    assert [Shard(193, r, 2, unit=64).rows for r in (0, 1)] == [slice(0, 64), slice(64, 193)]
    assert [Shard(101, r, 2).rows for r in (0, 1)] == [slice(0, 50), slice(50, 101)]


def test_pieces_never_leave_one_example_alone():
    import torch

    from sgdwalk.batches import pieces

    assert [len(p) for p in pieces(torch.arange(2001), 1000)] == [1000, 1001]
    assert [len(p) for p in pieces(torch.arange(2002), 1000)] == [1000, 1000, 2]
    assert [len(p) for p in pieces(torch.arange(1), 1000)] == [1]


@pytest.mark.slow
@pytest.mark.parametrize("extra, steps", [(["--train-size", "257", "--probe", "256"], 4),
                                          (["--nproc", "2", "--train-size", "259",
                                            "--probe", "256"], 4)])  # fmt: skip
def test_a_last_batch_batchnorm_cannot_train_on_is_left_out_with_a_note(tmp_path, extra, steps):
    proc = start("run", "--headless", "--epochs", "1", "--hessian-every", "off", "--sessions-dir",
                 str(tmp_path), "--session", "n", *extra)  # fmt: skip
    code, out, err = ending(proc)
    assert code == 0, err
    assert "it is left out, as --drop-last does" in out
    with open_session(tmp_path / "n") as s:
        assert s.status == "finished" and s.step_count() == steps


@pytest.mark.slow
def test_a_batch_split_too_thin_for_batchnorm_across_ranks_is_one_line(tmp_path):
    proc = start("run", "--headless", "--nproc", "2", "--batch-size", "3", "--sessions-dir",
                 str(tmp_path), "--session", "n")  # fmt: skip
    code, _, err = ending(proc)
    assert code == 2, err
    assert err.strip().splitlines() == [
        "sgdwalk: error: --batch-size 3: mlp's BatchNorm needs at least 2 examples per batch per "
        "process (--nproc 2 splits each batch); give at least 4, or --no-batchnorm"
    ]
    assert not (tmp_path / "n").exists()


@pytest.mark.slow
@pytest.mark.parametrize("extra", [["--probe", "65"], ["--train-size", "257"],
                                   ["--nproc", "2", "--probe", "129"]])  # fmt: skip
def test_a_last_probe_chunk_of_one_example_is_measured(tmp_path, extra):
    proc = start("run", "--headless", "--epochs", "1", "--sessions-dir", str(tmp_path),
                 "--session", "n", *extra)  # fmt: skip
    code, _, err = ending(proc)
    assert code == 0 and "Traceback" not in err, err


# ---------------------------------------------------------------- 8. exec


def exec_(tmp_path: Path, *argv: str, detach: bool = False) -> subprocess.CompletedProcess:
    flags = ["--detach"] if detach else []
    return subprocess.run([SGDWALK, "exec", *flags, "--sessions-dir", str(tmp_path / "s"), "--",
                           *argv], capture_output=True, text=True, timeout=HANG,
                          stdin=subprocess.DEVNULL, env=os.environ | QUICK)  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize("exit_with, code", [(0, 2), (5, 5)])
def test_exec_of_a_script_without_a_walker_says_so_with_its_exit_code(tmp_path, exit_with, code):
    script = tmp_path / "plain.py"
    script.write_text(f"import sys\nprint('hello')\nprint(repr(sys.stdin.read()))\n"
                      f"sys.exit({exit_with})\n")  # fmt: skip
    for detach in (False, True):
        out = exec_(tmp_path, sys.executable, str(script), detach=detach)
        assert out.returncode == code, out.stderr
        assert out.stderr == (f"sgdwalk: error: exec: {script} ended (exit code {exit_with}) "
                              "without creating a session: does it make a sgdwalk.Walker?"
                              + (" (its last line: '')" if detach else "") + "\n")  # fmt: skip
        if not detach:
            assert out.stdout == "hello\n''\n"  # its stdin is /dev/null
        assert not any((tmp_path / "s").iterdir())


@pytest.mark.slow
def test_exec_detach_without_a_terminal_leaves_the_script_in_the_background(tmp_path):
    (tmp_path / "train.py").write_text(STUBBORN)
    out = exec_(tmp_path, sys.executable, str(tmp_path / "train.py"), detach=True)
    assert out.returncode == 0, out.stderr
    pid = int(out.stdout.split("(pid ")[1].split(")")[0])
    try:
        assert "runs in the background" in out.stdout and "run.log" in out.stdout
        assert os.getsid(pid) == pid != os.getsid(0)  # its own session: no hang-up reaches it
        with open_session(only_session(tmp_path / "s")) as s:
            assert s.alive
    finally:
        os.kill(pid, signal.SIGKILL)


def test_exec_help_says_stdin_is_dev_null():
    out = subprocess.run([SGDWALK, "exec", "--help"], capture_output=True, text=True,
                         timeout=HANG, env=os.environ | {"COLUMNS": "200"})  # fmt: skip
    assert "stdin is /dev/null" in " ".join(out.stdout.split())


@aio
async def test_the_quit_question_names_the_command_that_leaves_it_running(tmp_path):
    from sgdwalk.tui.dashboard.app import make_app
    from sgdwalk.tui.dashboard.dialogs import QuitScreen
    from sgdwalk.tui.dashboard.sources import WatchSource

    for kind, how, wrong in (("walker", "`sgdwalk exec --detach -- ...`", "run --detach"),
                             ("trainer", "`sgdwalk run --detach`", "exec")):  # fmt: skip
        writer = SessionWriter(tmp_path / kind, CANNED_CONFIG | {"source": kind}, CANNED_INFO)
        source = WatchSource(open_session(tmp_path / kind), owned=True)
        app = make_app(source)
        try:
            async with app.run_test(size=(120, 40)) as pilot:
                await until(pilot, lambda s=source: s.writer_alive)
                await pilot.press("q")
                await until(pilot, lambda a=app: isinstance(a.screen, QuitScreen))
                text = " ".join(app.screen.text.split())
                assert how in text and wrong not in text
                assert "one that will not stop is killed after 30 s" in text
                await pilot.press("escape")
        finally:
            source.stop()
            source.close()
            writer.close(INTERRUPTED)


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("tmux") is None, reason="needs tmux")
def test_exec_dashboard_stop_kills_a_script_that_ignores_sigterm(tmp_path):
    def tmux(*args: str) -> str:
        return subprocess.run(["tmux", "-L", "sgdwalk-tests-launch", *args], check=True,
                              capture_output=True, text=True).stdout  # fmt: skip

    def shows(text: str) -> bool:
        return text in " ".join(tmux("capture-pane", "-p", "-J", "-t", name).split())

    (tmp_path / "train.py").write_text(STUBBORN)
    name = f"launch-{tmp_path.name}"
    cmd = (f"env -u COLUMNS -u LINES SGDWALK_STOP_GRACE=3 {SGDWALK} exec --session mine "
           f"--sessions-dir {tmp_path} -- {sys.executable} {tmp_path / 'train.py'}; "
           "echo EXIT=$?; sleep 60")  # fmt: skip
    tmux("-f", "/dev/null", "new", "-d", "-s", name, "-x", "120", "-y", "40", cmd)
    try:
        wait_until(lambda: shows("● live"))
        tmux("send-keys", "-t", name, "q")
        wait_until(lambda: shows("stop the run cleanly and quit"))
        tmux("send-keys", "-t", name, "s")  # SIGTERM, which the script ignores: it hung here
        wait_until(lambda: shows("EXIT="))
        assert shows("not stopped 3 s after SIGTERM: killing it") and shows("EXIT=137")
    finally:
        subprocess.run(["tmux", "-L", "sgdwalk-tests-launch", "kill-session", "-t", name],
                       check=False)  # fmt: skip
    with open_session(tmp_path / "mine") as s:
        assert s.stored_status == INTERRUPTED and "killed (SIGKILL)" in s.message


def test_collective_timeouts_and_grace_are_read_from_the_environment(monkeypatch):
    from sgdwalk import torchrun
    from sgdwalk.shard import collective_timeout
    from sgdwalk.tui.commands.children import stop_grace

    monkeypatch.setenv("SGDWALK_RANK_TIMEOUT", "12")
    monkeypatch.setenv("SGDWALK_STOP_GRACE", "nonsense")
    monkeypatch.setenv("SGDWALK_RDZV_TIMEOUT", "45")
    assert (collective_timeout(), stop_grace(), torchrun.rendezvous_timeout()) == (12, 30, 45)
    cfg = build_config({"nproc": 2, "nnodes": "2", "rdzv_endpoint": "localhost:29400"})
    assert "--rdzv-conf=join_timeout=45" in torchrun.argv(cfg, ["m"])
