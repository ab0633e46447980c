"""``watch``: following a session another process writes, live, finished or dead."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
from canned import HANG, aio, drawn, until, write_then_die

from sgdwalk.config import build_config
from sgdwalk.records import FINISHED, INTERRUPTED
from sgdwalk.runner import claim
from sgdwalk.session import SessionError, open_session
from sgdwalk.tui.commands.trainer import child_env, claimed_config, trainer_argv
from sgdwalk.tui.dashboard.app import make_app
from sgdwalk.tui.dashboard.sources import WatchSource

ROOT = Path(__file__).parent.parent


def status(app) -> str:
    return app.dashboard.query_one("#status").text


def open_when_ready(path: Path, proc: subprocess.Popen, tries: int = 1200):
    """Another process creates the session: poll for it (no event to wait on across processes)."""
    for _ in range(tries):
        try:
            return open_session(path)
        except SessionError:
            assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
            time.sleep(0.05)
    raise AssertionError("session never appeared")


@pytest.mark.slow
@aio
async def test_watch_follows_a_headless_run_in_another_process(tmp_path):
    argv = [sys.executable, "-m", "sgdwalk.tui.cli", "run", "--headless", "--epochs", "1",
            "--train-size", "320", "--hessian-every", "off", "--probe", "256",
            "--sessions-dir", str(tmp_path), "--session", "w"]  # fmt: skip
    proc = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        session = open_when_ready(tmp_path / "w", proc)
        source = WatchSource(session)
        app = make_app(source)
        async with app.run_test(size=(120, 40)) as pilot:
            await until(pilot, source.done.is_set)
            await drawn(pilot, app)
            scr = app.dashboard
            assert scr.buffers.last.step == 5  # 320 examples / batch 64, 1 epoch
            assert [e.epoch for e in scr.chart("barriers").data.epochs] == [1]
            assert scr.chart("slices").data.steps[-1].step == 5
            assert FINISHED in status(app)
    finally:
        proc.wait(timeout=HANG)
    assert proc.returncode == 0


@aio
async def test_watch_a_finished_session_shows_it_all(canned_session):
    source = WatchSource(open_session(canned_session))
    app = make_app(source)
    async with app.run_test(size=(80, 24)) as pilot:
        await until(pilot, source.done.is_set)
        await drawn(pilot, app)
        assert "step 96/96" in status(app) and FINISHED in status(app)
        await pilot.press("q")  # nothing is running: quits at once
    assert not app.is_running


@aio
async def test_watch_says_when_the_writer_died(tmp_path):
    write_then_die(tmp_path / "dead")
    source = WatchSource(open_session(tmp_path / "dead"))
    app = make_app(source)
    async with app.run_test(size=(80, 24)) as pilot:
        await until(pilot, source.done.is_set)
        await drawn(pilot, app)
        assert INTERRUPTED in status(app) and "no heartbeat" in status(app)
        assert app.dashboard.buffers.last.step == 24


def test_detach_passes_every_flag_and_the_session_name(tmp_path, monkeypatch):
    """The child gets the claimed config as data: every flag, the session name and folder."""
    flags = {"model": "mlp", "epochs": 2, "lr": None, "batchnorm": False, "download": True,
             "allow_divergence": None, "session": None, "sessions_dir": str(tmp_path),
             "hessian_every": "40s", "probe": "full", "batch_size": "full"}  # fmt: skip
    cfg = claim(build_config(flags))
    assert (tmp_path / cfg.session).is_dir()  # the parent claimed the folder
    argv = trainer_argv(cfg)
    assert argv[1:] == ["-m", "sgdwalk.tui.commands.child"]
    for key, value in child_env(cfg).items():
        monkeypatch.setenv(key, value)
    got = claimed_config()
    assert got == cfg and got.session == cfg.session and got.sessions_dir == str(tmp_path)
    assert (got.model, got.epochs, got.batchnorm, got.download) == ("mlp", 2, False, True)
    assert got.as_dict()["hessian_every"] == "40s" and got.full_batch


def test_watch_waits_for_a_session_a_starting_run_creates(tmp_path):
    from canned import write_canned_session

    from sgdwalk.tui.commands.dashboards import open_when_there

    def create_soon() -> None:
        time.sleep(0.5)  # the run starting in another window
        write_canned_session(tmp_path / "late")

    import threading

    maker = threading.Thread(target=create_soon)
    maker.start()
    try:
        session = open_when_there("late", tmp_path, wait=120)  # opens while it is written
        assert session.name == "late"
        session.close()
    finally:
        maker.join()
    with open_when_there("late", tmp_path, wait=0) as session:
        assert session.step_count() == 96
    with pytest.raises(SessionError, match="no session 'never'"):
        open_when_there("never", tmp_path, wait=0.3)
