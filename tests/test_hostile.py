"""Hostile places and moments: a full disk, read-only folders, escape codes in session files,
odd export targets, stops in the middle of a curvature pass, a terminal that is gone, clocks of
other hosts, no network."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from canned import HANG, aio, drawn, run_cli, tmpfs, until, write_canned_session, write_then_die

from sgdwalk.errors import DataError, SessionError
from sgdwalk.records import FAILED, FINISHED, INTERRUPTED
from sgdwalk.session import open_session

SGDWALK = str(Path(sys.executable).with_name("sgdwalk"))


def wait_until(cond, timeout: float = HANG) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.05)


# ---------------------------------------------------------------- a full disk


@pytest.mark.slow
def test_a_full_disk_is_one_line_exit_4_and_keeps_every_committed_step(tmp_path):
    with tmpfs(tmp_path / "small", "size=400k") as small:
        proc = subprocess.run([SGDWALK, "run", "--headless", "--epochs", "100", "--hessian-every",
                               "off", "--sessions-dir", str(small), "--session", "f"],
                              capture_output=True, text=True, timeout=HANG)  # fmt: skip
        assert proc.returncode == 4, proc.stderr
        assert proc.stderr.count("\n") == 1
        assert proc.stderr.startswith(f"sgdwalk: error: cannot write the session at {small}/f/")
        assert proc.stderr.rstrip().endswith("disk full")
        assert not (small / "f" / "error.txt").exists()  # not a bug: nothing to trace
        with sqlite3.connect(small / "f" / "session.sqlite") as con:
            assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        with open_session(small / "f") as s:
            assert s.status in (FAILED, INTERRUPTED)  # failed if the status could be written
            steps = [r.step for r in s.steps()]
            assert steps == list(range(1, len(steps) + 1)) and len(steps) > 24


# ---------------------------------------------------------------- read-only places


@pytest.mark.slow
def test_sessions_on_a_read_only_filesystem_read_and_export(tmp_path):
    with tmpfs(tmp_path / "ro", "size=8m") as ro:
        write_canned_session(ro / "done")
        write_then_die(ro / "died")  # committed, never checkpointed: its rows are in the WAL
        subprocess.run(["mount", "-o", "remount,ro", str(ro)], check=True)
        with open_session(ro / "done") as s:
            assert s.status == FINISHED and s.step_count() == 96
        code, out, err = run_cli("ls", "--sessions-dir", str(ro))
        assert code == 0 and "done" in out and "finished" in out, err
        code, out, err = run_cli("export", str(ro / "done"), "-o", str(tmp_path / "f.txt"))
        assert code == 0 and (tmp_path / "f.txt").is_file(), err
        try:
            with open_session(ro / "died") as s:
                assert s.status == INTERRUPTED and s.step_count() == 24
        except SessionError as e:
            assert "read-only here" in str(e)


def test_a_folder_without_write_permission_reads(tmp_path):
    if os.geteuid() == 0:
        pytest.skip("root writes anywhere; the read-only mount test covers it")
    path = write_canned_session(tmp_path / "shared" / "s")
    os.chmod(path, 0o555)
    try:
        with open_session(path) as s:
            assert s.status == FINISHED and s.step_count() == 96
    finally:
        os.chmod(path, 0o755)


# ---------------------------------------------------------------- escapes and markup


def poisoned(tmp_path: Path) -> Path:
    """A session whose folder name, message, config and events carry escapes and Rich markup."""
    path = write_canned_session(tmp_path / "sessions" / "canned")
    with sqlite3.connect(path / "session.sqlite") as con:
        con.execute("UPDATE meta SET value = ? WHERE key = 'message'", ("\x1b[2Jcleared",))
        con.execute("UPDATE meta SET value = ? WHERE key = 'config'",
                    ('{"model": "[bold]x", "dataset": "\\u001b[31mred", "lr": 0.1, "epochs": 4}',))  # fmt: skip
        con.execute("UPDATE events SET message = ?", ("\x1b]0;title\x07done",))
    target = path.parent / "[red]n\x1b[2J"
    path.rename(target)
    return target


def test_ls_shows_escapes_and_markup_as_plain_text(tmp_path):
    path = poisoned(tmp_path)
    code, out, err = run_cli("ls", "--sessions-dir", str(path.parent))
    assert code == 0, err
    assert "\x1b" not in out and "\x07" not in out
    assert "[red]n\\x1b[2J" in out and "[bold]x" in out and "\\x1b[31mred" in out


@aio
async def test_replay_shows_escapes_as_plain_text(tmp_path):
    from sgdwalk.tui.dashboard.app import make_app
    from sgdwalk.tui.dashboard.replay import ReplaySource

    app = make_app(ReplaySource(open_session(poisoned(tmp_path))))
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("end")
        await drawn(pilot, app)
        scr = app.dashboard
        status, events = scr.query_one("#status").text, scr.query_one("#events").lines_shown
        shown = status + "".join(scr.query_one("#events").lines[i].text for i in range(len(events)))
        assert "\x1b" not in shown and "\x07" not in shown
        assert "\\x1b[2J" in shown and "\\x1b]0;title\\x07done" in shown


# ---------------------------------------------------------------- export targets


def test_export_never_follows_or_replaces_a_link_without_force(tmp_path):
    session = write_canned_session(tmp_path / "sessions" / "canned")
    link = tmp_path / "fig.txt"
    link.symlink_to(tmp_path / "elsewhere.txt")  # dangling
    code, _, err = run_cli("export", str(session), "-o", str(link))
    assert code == 2 and "exists; use --force" in err
    assert not (tmp_path / "elsewhere.txt").exists()
    code, _, err = run_cli("export", str(session), "-o", str(link), "--force")
    assert code == 0, err
    assert not link.is_symlink() and link.is_file() and not (tmp_path / "elsewhere.txt").exists()


def test_export_into_a_new_folder_and_to_an_unwritable_place(tmp_path):
    session = write_canned_session(tmp_path / "sessions" / "canned")
    code, _, err = run_cli("export", str(session), "-o", str(tmp_path / "newdir") + "/")
    assert code == 0, err
    assert (tmp_path / "newdir" / "canned-slices.txt").is_file()
    (tmp_path / "afile").write_text("x")
    code, _, err = run_cli("export", str(session), "-o", str(tmp_path / "afile" / "x.txt"))
    assert code == 2 and err.count("\n") == 1 and "cannot write" in err


def test_an_explicit_sessions_folder_wins_over_a_folder_here(tmp_path):
    write_canned_session(tmp_path / "sessions" / "canned")
    (tmp_path / "here" / "canned").mkdir(parents=True)  # not a session, same name
    code, out, err = run_cli("export", "canned", "--sessions-dir", str(tmp_path / "sessions"),
                             "-o", "-", cwd=tmp_path / "here")  # fmt: skip
    assert code == 0 and "Figure 1" in out, err


# ---------------------------------------------------------------- liveness


def test_a_heartbeat_from_another_hosts_future_does_not_keep_a_session_running(tmp_path):
    write_then_die(tmp_path / "s")
    with sqlite3.connect(tmp_path / "s" / "session.sqlite") as con:
        con.execute("UPDATE meta SET value = ? WHERE key = 'host'", ("elsewhere",))
        con.execute(
            "UPDATE meta SET value = ? WHERE key = 'heartbeat'", (repr(time.time() + 3600),)
        )
    with open_session(tmp_path / "s") as s:
        assert s.stored_status == "running" and not s.alive and s.status == INTERRUPTED


@aio
async def test_watch_shows_no_rate_once_the_writer_is_gone(tmp_path):
    from sgdwalk.tui.dashboard.app import make_app
    from sgdwalk.tui.dashboard.sources import WatchSource

    write_then_die(tmp_path / "dead")
    source = WatchSource(open_session(tmp_path / "dead"))
    app = make_app(source)
    async with app.run_test(size=(120, 40)) as pilot:
        await until(pilot, source.done.is_set)
        await drawn(pilot, app)
        await until(pilot, lambda: "no heartbeat" in app.dashboard.query_one("#status").text)
        status = app.dashboard.query_one("#status").text
        assert "-- steps/s" in status and "ETA" not in status


# ---------------------------------------------------------------- stops and lost terminals


def _in_curvature(path: Path) -> bool:
    try:
        with open_session(path) as s:
            phase = s.phase
    except SessionError:
        return False
    return phase is not None and phase["phase"] == "curvature" and phase["done"] >= 1


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP])
def test_a_stop_inside_a_curvature_pass_ends_the_run_within_seconds(tmp_path, sig):
    argv = [SGDWALK, "run", "--headless", "--model", "vgg11", "--train-size", "400", "--epochs",
            "1", "--sessions-dir", str(tmp_path), "--session", "v"]  # fmt: skip
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        wait_until(lambda: _in_curvature(tmp_path / "v") or proc.poll() is not None)
        assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
        proc.stdout.close()  # the terminal is gone: every print now fails
        proc.send_signal(sig)
        sent = time.monotonic()
        proc.wait(timeout=HANG)
        took = time.monotonic() - sent
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    with open_session(tmp_path / "v") as s:
        assert s.status == INTERRUPTED and s.stored_status == INTERRUPTED
        assert not list(s.curvature())  # it stopped inside the pass, not after it
    assert not (tmp_path / "v" / "error.txt").exists()
    assert proc.returncode == 130
    assert took < 300  # a bound against a hang only: a busy machine makes a chunk slow


# ---------------------------------------------------------------- no network


@pytest.mark.parametrize("dataset, host", [("mnist", "ossci-datasets.s3.amazonaws.com"),
                                           ("cifar10", "www.cs.toronto.edu")])  # fmt: skip
def test_download_without_a_network_is_one_line(tmp_path, monkeypatch, dataset, host):
    import urllib.error
    import urllib.request

    import torch

    from sgdwalk.data import load_data

    def offline(*_a, **_k):
        raise urllib.error.URLError(OSError(-3, "Temporary failure in name resolution"))

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    with pytest.raises(DataError) as e:
        load_data(dataset, tmp_path / "data", torch.device("cpu"), download=True)
    text = str(e.value)
    assert "\n" not in text and f"from {host}" in text and str(tmp_path / "data") in text
    assert "name resolution" in text
