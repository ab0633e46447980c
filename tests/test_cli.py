"""The commands as a user types them, in a subprocess: bad input is one line and exit code 2."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import typing
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import pytest
from canned import HANG, run_cli, write_canned_session

from sgdwalk import open_session
from sgdwalk.config import RunConfig, setting
from sgdwalk.values import BatchSize

SGDWALK = str(Path(sys.executable).with_name("sgdwalk"))


def sgdwalk(
    *args: str, cwd: Path | None = None, timeout: float = HANG
) -> subprocess.CompletedProcess:
    env = os.environ | {"NO_COLOR": "1", "COLUMNS": "200"}
    env.pop("SGDWALK_SESSIONS", None)
    return subprocess.run([SGDWALK, *args], capture_output=True, text=True, cwd=cwd, env=env,
                          timeout=timeout, stdin=subprocess.DEVNULL)  # fmt: skip


def assert_one_line_error(proc: subprocess.CompletedProcess, *needles: str) -> None:
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


FAST_BAD = [
    (["--lr", "-1"], "--lr"),
    (["--lr", "0"], "--lr"),
    (["--epochs", "0"], "--epochs"),
    (["--epochs", "x"], "--epochs"),
    (["--model", "nope"], "unknown model"),
    (["--dataset", "nope"], "unknown dataset"),
    (["--points", "1"], "--points"),
    (["--slice-mode", "fast"], "--slice-mode"),
    (["--batch-size", "0"], "--batch-size"),
    (["--probe", "-3"], "--probe"),
    (["--momentum", "1.5"], "--momentum"),
    (["--hessian-every", "x"], "--hessian-every"),
    (["--align-batch-sizes", "0,100"], "--align-batch-sizes"),
    (["--preset", "nope"], "unknown preset"),
    (["--session", "a/b"], "invalid session name"),
    (["--session", ".."], "invalid session name"),
    (["--no-such-flag"], "No such option"),
]


@pytest.mark.parametrize("args, needle", FAST_BAD, ids=[" ".join(a) for a, _ in FAST_BAD])
def test_bad_run_flags(tmp_path: Path, args: list[str], needle: str):
    proc = sgdwalk("run", "--headless", "--sessions-dir", str(tmp_path), *args)
    assert_one_line_error(proc, needle)
    assert not any(tmp_path.iterdir())  # nothing half-made


DATA_BAD = [
    (["--batch-size", "5000"], "larger than the training split"),
    (["--probe", "99999"], "larger than the training split"),
    (["--dataset", "cifar10", "--data-dir", "{tmp}/none"], "--download"),
    (["--top-k", "99999999"], "--top-k"),
    (["--hessian-probe", "99999"], "--hessian-probe"),
]


@pytest.mark.parametrize("args, needle", DATA_BAD, ids=[" ".join(a) for a, _ in DATA_BAD])
def test_bad_values_that_need_the_data(tmp_path: Path, args: list[str], needle: str):
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    proc = sgdwalk("run", "--headless", "--sessions-dir", str(tmp_path / "s"), *args)
    assert_one_line_error(proc, needle)


def test_unwritable_sessions_folder(tmp_path: Path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    proc = sgdwalk(
        "run", "--headless", "--sessions-dir", str(blocker / "sessions"), "--epochs", "1"
    )
    assert_one_line_error(proc, "cannot write sessions folder")


def test_existing_session_name_is_refused(tmp_path: Path):
    write_canned_session(tmp_path / "taken")
    before = (tmp_path / "taken" / "session.sqlite").read_bytes()
    proc = sgdwalk("run", "--headless", "--sessions-dir", str(tmp_path), "--session", "taken")
    assert_one_line_error(proc, "already exists")
    assert (tmp_path / "taken" / "session.sqlite").read_bytes() == before


def test_bad_config_file(tmp_path: Path):
    cfg = tmp_path / "c.toml"
    cfg.write_text("lr = [")
    assert_one_line_error(sgdwalk("run", "--config", str(cfg)), "not valid TOML")
    cfg.write_text("learning_rate = 0.1\n")
    assert_one_line_error(sgdwalk("run", "--config", str(cfg)), "unknown key")


@pytest.mark.slow
def test_headless_run_config_file_then_ls(tmp_path: Path):
    cfg = tmp_path / "run.toml"
    cfg.write_text('epochs = 2\nlr = 0.05\nbatch-size = 100\nhessian-every = "off"\n')
    proc = sgdwalk("run", "--config", str(cfg), "--lr", "0.2", "--sessions-dir", str(tmp_path),
                   "--session", "first")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "epoch 1/2" in out and "epoch 2/2" in out and "barriers" in out and "interior-min" in out
    with open_session(tmp_path / "first") as s:
        assert s.status == "finished"
        assert s.config["lr"] == 0.2 and s.config["batch_size"] == "100"  # flag beats file
        assert s.step_count() == 30 and len(list(s.epochs())) == 2
        assert s.info["versions"]["torch"]
    ls = sgdwalk("ls", "--sessions-dir", str(tmp_path))
    assert ls.returncode == 0 and "first" in ls.stdout and "finished" in ls.stdout
    rows = json.loads(sgdwalk("ls", "--json", "--sessions-dir", str(tmp_path)).stdout)
    assert rows[0]["name"] == "first" and rows[0]["steps"] == 30


def test_ls_on_an_empty_and_a_missing_folder(tmp_path: Path):
    proc = sgdwalk("ls", "--sessions-dir", str(tmp_path))
    assert proc.returncode == 0 and "no sessions" in proc.stdout
    assert_one_line_error(
        sgdwalk("ls", "--sessions-dir", str(tmp_path / "nope")), "no sessions folder"
    )


def test_ls_lists_good_sessions_and_marks_foreign_files(tmp_path: Path):
    write_canned_session(tmp_path / "good")
    (tmp_path / "bad").mkdir()
    sqlite3.connect(tmp_path / "bad" / "session.sqlite").execute("CREATE TABLE x (y)")
    proc = sgdwalk("ls", "--sessions-dir", str(tmp_path))
    assert proc.returncode == 0 and "│ good" in proc.stdout
    (mark,) = [line for line in proc.stdout.splitlines() if "bad" in line]
    assert mark.startswith("✖ bad: ") and "not an sgdwalk session" in mark


def test_help_is_instant_and_explains():
    proc = sgdwalk("--help")
    assert proc.returncode == 0 and "run" in proc.stdout and "ls" in proc.stdout
    proc = sgdwalk("run", "--help")
    assert "--probe" in proc.stdout and "--batch-size" in proc.stdout


@pytest.mark.slow
def test_bench_json_prints_the_ratios():
    proc = sgdwalk("bench", "--json", "--repeats", "2")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    for key in ("slice_ratio", "record_overhead", "decompose_per_slice",
                "batch_sharpness_per_slice"):  # fmt: skip
        assert isinstance(result["ratios"][key], float)
    for key in ("t_forward", "t_slice", "t_step", "t_step_recorded", "t_decompose",
                "t_batch_sharpness", "t_slice_loop_plain", "t_slice_vmap_plain"):  # fmt: skip
        assert result["times"][key] > 0
    assert result["shortcut"] == "on: the first layer '1' (Linear)"
    ways = [f"{m}{s}" for m in ("loop", "vmap") for s in ("", "_plain")]
    fastest = min(ways, key=lambda w: result["times"][f"t_slice_{w}"])
    assert result["ratios"]["slice_ratio"] == result["ratios"][f"slice_ratio_{fastest}"]
    name = fastest.removesuffix("_plain") + (
        "" if "plain" in fastest else " + first-layer shortcut"
    )
    assert result["slice_mode"] == f"auto: {name}"


@pytest.mark.slow
def test_bench_at_a_diverging_lr_says_so_in_one_line():
    assert_one_line_error(sgdwalk("bench", "--lr", "1e30", "--repeats", "1"),
                          "--lr: training diverged at lr 1e+30")  # fmt: skip


@pytest.mark.parametrize("command", ["replay", "watch", "export"])
def test_a_corrupt_or_foreign_file_is_not_a_session(tmp_path: Path, command: str):
    junk = tmp_path / "junk.sqlite"
    junk.write_bytes(b"not a database at all" * 64)
    assert_one_line_error(sgdwalk(command, str(junk)), "not an sgdwalk session")
    foreign = tmp_path / "foreign" / "session.sqlite"
    foreign.parent.mkdir()
    sqlite3.connect(foreign).execute("CREATE TABLE t (x)").connection.commit()
    assert_one_line_error(sgdwalk(command, str(foreign.parent)), "foreign SQLite file")
    waitless = ["--wait", "0"] if command == "watch" else []
    assert_one_line_error(sgdwalk(command, str(tmp_path / "missing"), *waitless), "no session")


RUN_OWN_OPTIONS = {"config", "headless", "in_process", "detach"}  # not settings of the run


def _run_options() -> dict[str, Any]:
    import typer

    from sgdwalk.tui.cli import app

    return {p.name: p for p in typer.main.get_command(app).commands["run"].params}  # type: ignore[attr-defined]


def test_every_run_setting_is_a_run_option_unset_by_default():
    """``RunConfig``'s fields are ``run``'s options: same names, the help declared on the
    field, None (unset) by default so that presets and config files layer under the flags."""
    from sgdwalk.tui.options import help_text, parameters

    options = _run_options()
    settings = {f.name: f for f in fields(RunConfig)}
    assert set(options) == set(settings) | RUN_OWN_OPTIONS
    for name, f in settings.items():
        assert options[name].default is None, name
        assert options[name].help == help_text(f), name
        assert options[name].opts == ["--" + name.replace("_", "-")], name
    assert options["batchnorm"].secondary_opts == ["--no-batchnorm"]
    assert options["download"].is_flag and not options["download"].secondary_opts
    taken = {p.name: typing.get_args(p.annotation)[0] for p in parameters(RunConfig)}
    assert taken["batch_size"] == taken["hessian_every"] == str | None  # parsed by build_config
    assert taken["epochs"] == int | None and taken["lr"] == float | None
    assert "[default: min(2048, train size)]" in options["probe"].help
    assert options["momentum"].help == "momentum β (sgd: heavy ball; rmsprop) [default: 0]"


@dataclass(frozen=True)
class _Tiny:
    steps: int = setting(3, "steps to take")
    rate: float = setting(0.25, "step size")
    size: BatchSize = setting(BatchSize(8), "batch size or 'full'", parse=BatchSize.parse)
    fast: bool = setting(False, "go fast")
    norm: bool | None = setting(None, "normalise", shown="the model's own")
    name: str | None = setting(None, "a name")


def test_a_new_setting_is_an_option_with_no_other_change():
    import typer

    from sgdwalk.tui.options import takes_settings

    app, seen = typer.Typer(add_completion=False), []

    @app.command()
    @takes_settings(_Tiny)
    def go(verbose: bool = False, **settings: Any) -> None:
        seen.append(dict(settings, verbose=verbose))

    app(["--steps", "5", "--size", "full", "--fast", "--no-norm"], standalone_mode=False)
    app([], standalone_mode=False)
    unset = dict.fromkeys(("steps", "rate", "size", "fast", "norm", "name"))
    assert seen == [unset | {"steps": 5, "size": "full", "fast": True, "norm": False,
                             "verbose": False}, unset | {"verbose": False}]  # fmt: skip
    params = {p.name: p for p in typer.main.get_command(app).params}
    assert list(params) == ["steps", "rate", "size", "fast", "norm", "name", "verbose"]
    assert params["steps"].help == "steps to take [default: 3]"
    assert params["rate"].help == "step size [default: 0.25]"
    assert params["size"].help == "batch size or 'full' [default: 8]"
    assert params["fast"].help == "go fast" and params["fast"].opts == ["--fast"]
    assert params["norm"].help == "normalise [default: the model's own]"
    assert params["norm"].secondary_opts == ["--no-norm"]
    assert params["name"].help == "a name"


def test_export_figure_choices_are_the_figure_table():
    from sgdwalk.tui.figures import FIGURES

    code, out, _ = run_cli("export", "--help")
    assert code == 0
    words = " ".join(out.split())
    for name in FIGURES:
        assert name in words, name
    assert f"{list(FIGURES)[-1]} or all" in words
