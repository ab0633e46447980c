"""Every Python block of the README's "Your own training loop" section runs as written (each in a
fresh interpreter, in an empty folder) and leaves a finished session."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from canned import HANG

from sgdwalk.session import list_sessions

README = Path(__file__).parent.parent / "README.md"


def blocks() -> list[str]:
    text = README.read_text()
    section = text.split("## Your own training loop", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, flags=re.S)


def test_the_section_has_the_three_examples():
    found = blocks()
    assert len(found) == 3
    assert "walker.attach(optimizer)" in found[0]
    assert "integrations.lightning" in found[1] and "integrations.hf" in found[2]


@pytest.mark.parametrize("index", [0, 1, 2], ids=["plain", "lightning", "hf"])
def test_a_readme_example_runs_and_leaves_a_finished_session(tmp_path, index):
    code = blocks()[index]
    if index:
        pytest.importorskip("lightning" if index == 1 else "transformers")
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                         text=True, timeout=HANG)  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    sessions, bad = list_sessions(tmp_path / "sessions")
    assert not bad and [s.status for s in sessions] == ["finished"]
    assert sessions[0].step_count() > 0
