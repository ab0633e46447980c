"""engine/ never imports the UI stack (STYLE.md: one-way dependency)."""

from __future__ import annotations

import subprocess
import sys

UI = ("textual", "rich", "plotext", "typer", "tui", "textual_plotext")


def _loaded_after(code: str) -> set[str]:
    probe = f"{code}\nimport sys\nprint(' '.join(sorted(m.split('.')[0] for m in sys.modules)))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    return set(out.stdout.split())


def test_engine_imports_no_ui_library():
    loaded = _loaded_after(
        "import engine, engine.train, engine.session, engine.bench, engine.runner, engine.data"
    )
    assert not loaded & set(UI), loaded & set(UI)


def test_reading_a_session_does_not_need_torch():
    loaded = _loaded_after("from engine import open_session")
    assert "torch" not in loaded


def test_cli_help_does_not_import_torch():
    loaded = _loaded_after("import tui.cli")
    assert "torch" not in loaded
