"""``sgdwalk export``: goldens, decoded png/pdf, exact csv/json round trips, and the command line
as a user types it (including each error, which must be one line and exit code 2).

Goldens are written by ``SGDWALK_UPDATE_GOLDEN=1 pytest tests/test_export.py`` and then compared
exactly.
"""

from __future__ import annotations

import csv
import json
import math
import os
import re
import subprocess
import sys
import zlib
from pathlib import Path

import pytest
from canned import CANNED_CONFIG, CANNED_INFO, HANG, canned_records

from sgdwalk.errors import UsageError
from sgdwalk.records import FINISHED
from sgdwalk.session import SessionWriter, open_session
from sgdwalk.tui.figures import FIGURES, FigureData
from sgdwalk.tui.figures import mpl as export_mpl
from sgdwalk.tui.figures.export import ExportRequest, collect, run_export

GOLDEN = Path(__file__).parent / "golden"
SGDWALK = Path(sys.executable).parent / "sgdwalk"


def sgdwalk(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("NO_COLOR", "SGDWALK_SESSIONS")}
    return subprocess.run([str(SGDWALK), *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=HANG)  # fmt: skip


def write_session(directory: Path, curvature: bool = True, **config) -> Path:
    w = SessionWriter(directory, CANNED_CONFIG | {"session": directory.name} | config, CANNED_INFO)
    for rec in canned_records(curvature=curvature):
        w.write(rec)
    w.close(FINISHED)
    return directory


def export(tmp_path: Path, *sessions: Path, name: str, **kw) -> Path:
    out = tmp_path / name
    run_export(ExportRequest(sessions=[str(s) for s in sessions], output=str(out), **kw))
    return out


# ---------------------------------------------------------------- goldens


@pytest.mark.parametrize("figure", list(FIGURES))
def test_txt_golden(canned_session, tmp_path, figure):
    text = export(tmp_path, canned_session, name=f"{figure}.txt", figure=figure).read_text()
    assert "\x1b" not in text
    golden = GOLDEN / f"canned-{figure}.txt"
    if os.environ.get("SGDWALK_UPDATE_GOLDEN"):
        golden.write_text(text, encoding="utf-8")
    assert text == golden.read_text(encoding="utf-8")


def test_overlay_golden_is_labelled_by_what_differs(tmp_path):
    a = write_session(tmp_path / "a", lr=0.1)
    b = write_session(tmp_path / "b", lr=0.5)
    text = export(tmp_path, a, b, name="o.txt", figure="loss", width=90, height=24).read_text()
    assert "lr=0.1 batch loss" in text and "lr=0.5 batch loss" in text
    golden = GOLDEN / "overlay-loss.txt"
    if os.environ.get("SGDWALK_UPDATE_GOLDEN"):
        golden.write_text(text, encoding="utf-8")
    assert text == golden.read_text(encoding="utf-8")


# ---------------------------------------------------------------- png / pdf


def _data(session: Path, figure: str, **kw) -> list[FigureData]:
    with open_session(session) as s:
        req = ExportRequest(sessions=[str(session)], **kw)
        jobs, _ = collect([s], req, [FIGURES[figure]])
        return jobs[0][1]


@pytest.mark.parametrize("figure, entries", [("slices", 3), ("barriers", 2), ("alignment", 5),
                                             ("cosine", 2), ("loss", 3)])  # fmt: skip
def test_matplotlib_figures_have_their_series(canned_session, figure, entries):
    fig = export_mpl.build_figure(FIGURES[figure], _data(canned_session, figure))
    ax = fig.axes[0]
    legend = ax.get_legend()
    assert legend is not None and len(legend.get_texts()) == entries
    assert ax.get_xlabel() and ax.get_ylabel()


def test_figure1_reads_like_the_paper(canned_session):
    data = _data(canned_session, "slices", epochs=[1])
    fig = export_mpl.build_figure(FIGURES["slices"], data)
    ax = fig.axes[0]
    lines = ax.get_lines()
    (steps,) = ax.collections  # the gray step lines
    assert len(steps.get_segments()) == 25  # one per step of epoch 1, and where the last ended
    floor = [ln for ln in lines if ln.get_label() == "valley floor"]
    assert floor[0].get_linestyle() == "--" and floor[0].get_color() == "C1"  # dashed orange
    curve = [ln for ln in lines if ln.get_label() == "interpolated loss"][0]
    assert len(curve.get_xdata()) == 24 * 11
    dots = [ln for ln in lines if ln.get_label() == "loss at step"][0]
    assert dots.get_xdata()[-1] == 25  # the last step has its dot where it ended
    assert ax.get_title() == "mlp on digits, lr 0.1, batch 64 · epoch 1, steps 1-24"


def test_the_default_slices_are_the_latest_steps(canned_session):
    (d,) = _data(canned_session, "slices")
    assert [r.step for r in d.steps] == list(range(57, 97))  # the last 40 measured steps


def test_png_decodes_and_is_not_blank(canned_session, tmp_path):
    import matplotlib.image

    png = export(tmp_path, canned_session, name="f.png")
    img = matplotlib.image.imread(png)
    assert img.shape[0] >= 600 and img.shape[1] >= 1200
    assert img[..., :3].std() > 0.05  # a blank image has no variance
    assert (img[..., :3] < 0.5).mean() > 0.005  # some dark ink (axes, text, lines)


def test_pdf_is_one_vector_page(canned_session, tmp_path):
    pdf = export(tmp_path, canned_session, name="f.pdf").read_bytes()
    assert pdf.startswith(b"%PDF") and pdf.rstrip().endswith(b"%%EOF")
    assert len(re.findall(rb"/Type\s*/Page\b", pdf)) == 1
    box = [float(v) for v in re.search(rb"/MediaBox\s*\[([^\]]+)\]", pdf).group(1).split()]
    assert box[2:] == pytest.approx([7.0 * 72, 3.6 * 72])
    streams = re.findall(rb"stream\r?\n(.*?)\r?\nendstream", pdf, re.S)
    ops = b"".join(zlib.decompress(s) for s in streams if s[:1] == b"x")
    assert ops.count(b" l\n") + ops.count(b" l ") > 200  # the curves are vector paths


def test_missing_matplotlib_says_how_to_install(canned_session, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(UsageError, match=r"pip install 'sgdwalk\[plots\]'"):
        export(tmp_path, canned_session, name="f.png")
    assert not (tmp_path / "f.png").exists()


# ---------------------------------------------------------------- csv / json


def _num(text: str):
    return None if text == "" else float(text)


def test_csv_round_trips_every_step_exactly(canned_session, tmp_path):
    out = export(tmp_path, canned_session, name="s.csv", steps="1:")
    with out.open(newline="") as f:
        rows = list(csv.DictReader(f))
    with open_session(canned_session) as s:
        steps = list(s.steps())
    assert len(rows) == len(steps) == 96
    for row, r in zip(rows, steps, strict=True):
        assert row["session"] == "canned" and int(row["step"]) == r.step
        assert [float(row[f"L_{j}"]) for j in range(11)] == r.slice
        for key in ("batch_loss", "floor_loss", "floor_alpha", "barrier_height", "elapsed"):
            assert float(row[key]) == getattr(r, key)
        assert _num(row["grad_cos"]) == r.grad_cos
        assert row["barrier"] == str(r.barrier)


def test_pandas_reads_csv_and_json_without_arguments(canned_session, tmp_path):
    import pandas as pd

    csv_out = export(tmp_path, canned_session, name="p.csv", steps="1:")
    frame = pd.read_csv(csv_out)
    with open_session(canned_session) as s:
        steps = list(s.steps())
    assert frame["step"].tolist() == [r.step for r in steps]
    assert frame["L_10"].tolist() == [r.slice[10] for r in steps]
    json_out = export(tmp_path, canned_session, name="p.json", steps="1:")
    # pandas parses JSON floats with its fast (not round-trip) parser by default: equal to 1 ulp
    alphas = pd.read_json(json_out)["floor_alpha"].tolist()
    assert alphas == pytest.approx([r.floor_alpha for r in steps], rel=1e-15)


def test_json_round_trips_and_is_strict(tmp_path):
    path = write_session(tmp_path / "n", curvature=False)
    w_rows = json.loads(export(tmp_path, path, name="c.json", figure="cosine").read_text())
    with open_session(path) as s:
        steps = list(s.steps())
    assert [r["grad_cos"] for r in w_rows] == [r.grad_cos for r in steps]
    assert list(w_rows[0]) == ["session", "step", "epoch", "grad_cos", "update_cos"]


def test_json_writes_nan_as_null_and_csv_as_nan(tmp_path):
    from sgdwalk.tui.figures.rows import write_csv, write_json

    rows = [{"a": math.nan, "b": 0.1 + 0.2, "c": None}]
    assert json.loads(write_json(rows)) == [{"a": None, "b": 0.30000000000000004, "c": None}]
    assert write_csv(rows) == "a,b,c\nnan,0.30000000000000004,\n"


def test_alignment_and_barrier_rows(canned_session, tmp_path):
    rows = json.loads(
        export(tmp_path, canned_session, name="a.json", figure="alignment").read_text()
    )
    assert len(rows) == 5 * 3  # five curvature records x three batch sizes
    assert rows[0]["eig_cos_mean_10"] == pytest.approx(0.11)
    bars = json.loads(
        export(tmp_path, canned_session, name="b.json", figure="barriers").read_text()
    )
    assert [r["total_barriers"] for r in bars] == [3, 6, 10, 13]


def test_epoch_and_window_choose_the_steps(canned_session, tmp_path):
    out = export(tmp_path, canned_session, name="w.csv", epochs=[2], window=10)
    with out.open(newline="") as f:
        assert [int(r["step"]) for r in csv.DictReader(f)] == list(range(25, 35))


# ---------------------------------------------------------------- svg / html


def test_svg_and_html_have_colour(canned_session, tmp_path):
    svg = export(tmp_path, canned_session, name="f.svg").read_text()
    html = export(tmp_path, canned_session, name="f.html").read_text()
    assert svg.startswith("<svg") and len(set(re.findall(r"fill: (#[0-9a-f]{6})", svg))) >= 4
    assert "<html" in html.lower() and len(set(re.findall(r"color: (#[0-9a-f]{6})", html))) >= 4


# ---------------------------------------------------------------- the command line


def test_cli_exports_by_name_and_refuses_to_overwrite(canned_session, tmp_path):
    sessions = str(canned_session.parent)
    ok = sgdwalk("export", "canned", "--sessions-dir", sessions, "-o", "fig1.txt", cwd=tmp_path)
    assert ok.returncode == 0, ok.stderr
    assert ok.stderr.strip() == "wrote fig1.txt"
    again = sgdwalk("export", "canned", "--sessions-dir", sessions, "-o", "fig1.txt", cwd=tmp_path)
    assert again.returncode == 2
    assert again.stderr.strip() == "sgdwalk: error: fig1.txt exists; use --force to overwrite it"
    forced = sgdwalk("export", "canned", "--sessions-dir", sessions, "-o", "fig1.txt", "--force",
                     cwd=tmp_path)  # fmt: skip
    assert forced.returncode == 0


@pytest.mark.slow
def test_cli_all_figures_png_into_a_directory(tmp_path):
    s = write_session(tmp_path / "nocurv", curvature=False)
    r = sgdwalk("export", str(s), "--figure", "all", "--format", "png", "-o", "figs", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in (tmp_path / "figs").iterdir()) == [
        "barriers.png", "cosine.png", "loss.png", "slices.png"]  # fmt: skip
    assert "skipped alignment" in r.stderr


def test_cli_stdout_csv(canned_session, tmp_path):
    r = sgdwalk("export", str(canned_session), "-f", "cosine", "--format", "csv", "-o", "-",
                cwd=tmp_path)  # fmt: skip
    assert r.returncode == 0 and r.stdout.startswith("session,step,epoch,grad_cos,update_cos\n")


ERRORS = [
    (["--figure", "nope"], "unknown figure 'nope'"),
    (["--format", "gif", "-o", "x"], "unknown format 'gif'"),
    (["-o", "x.gif"], "cannot tell the format"),
    (["--steps", "40:10"], "need 0 <= A < B"),
    (["--steps", "abc"], "expected A:B"),
    (["--steps", "5000:6000"], "nothing to draw for --figure slices"),
    (["--epoch", "9"], "no measured steps in epoch 9 (it has epochs 1-4"),
    (["--window", "0"], "need at least 1 step"),
    (["--figure", "all"], "give -o DIRECTORY"),
    (["--figure", "slices", "--epoch", "1", "--epoch", "2"], "give --epoch once"),
    (["--figure", "alignment"], "has no curvature records"),
    (["--format", "png", "-o", "-"], "png is binary"),
]


@pytest.mark.slow
@pytest.mark.parametrize("args, message", ERRORS, ids=[m for _, m in ERRORS])
def test_cli_errors_are_one_line_exit_2(tmp_path, args, message):
    s = write_session(tmp_path / "nocurv", curvature=False)
    r = sgdwalk("export", str(s), *args, cwd=tmp_path)
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert r.stderr.count("\n") == 1 and r.stderr.startswith("sgdwalk")
    assert message in r.stderr
    assert not any(p.is_file() and p.suffix != ".sqlite" for p in tmp_path.rglob("*") if
                   "nocurv" not in p.parts)  # fmt: skip


def test_cli_unknown_session(tmp_path):
    r = sgdwalk("export", "ghost", "--sessions-dir", str(tmp_path), cwd=tmp_path)
    assert r.returncode == 2 and "no session 'ghost'" in r.stderr


def test_overlay_labels_name_only_real_differences():
    """64 and "64" are one batch size; a setting one session does not state is no difference."""
    from sgdwalk.tui.figures.export import overlay_labels

    run = {"model": "mlp", "lr": 0.1, "batch_size": "64", "epochs": 10, "probe": None}
    walker = {"model": "mlp", "lr": 0.5, "batch_size": 64, "probe": 2048}
    assert overlay_labels([run, walker], ["a", "b"]) == ["lr=0.1", "lr=0.5"]
    assert overlay_labels([run, dict(run)], ["a", "b"]) == ["a", "b"]


@pytest.mark.parametrize("fmt", ["csv", "json"])
def test_numbers_of_the_slices_are_every_step_unless_a_range_is_given(canned_session, tmp_path,
                                                                      fmt):  # fmt: skip
    """The slices figure draws the last 40 steps; its numbers are every measured step."""
    import csv
    import json

    def count(path: Path) -> int:
        text = path.read_text()
        return (
            len(json.loads(text)) if fmt == "json" else len(list(csv.DictReader(text.splitlines())))
        )

    with open_session(canned_session) as s:
        measured = sum(r.measured for r in s.steps())
    assert count(export(tmp_path, canned_session, name=f"all.{fmt}")) == measured == 96
    assert count(export(tmp_path, canned_session, name=f"w.{fmt}", window=10)) == 10
    assert count(export(tmp_path, canned_session, name=f"e.{fmt}", epochs=[2])) == 24
