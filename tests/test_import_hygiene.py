"""engine/ never imports the UI stack (README "Design": one-way dependency)."""

from __future__ import annotations

import subprocess
import sys

UI = ("textual", "rich", "plotext", "typer", "sgdwalk.tui", "textual_plotext")


def _loaded_after(code: str) -> set[str]:
    """Top-level modules loaded after ``code``, plus ``sgdwalk.tui`` when any of it is."""
    names = "{m.split('.')[0] for m in sys.modules} | {'sgdwalk.tui' for m in sys.modules if m.startswith('sgdwalk.tui')}"
    probe = f"{code}\nimport sys\nprint(' '.join(sorted({names})))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    return set(out.stdout.split())


def test_engine_imports_no_ui_library():
    loaded = _loaded_after(
        "import sgdwalk, sgdwalk.train, sgdwalk.session, sgdwalk.bench, sgdwalk.runner, sgdwalk.data, "
        "sgdwalk.curvature"
    )
    assert not loaded & set(UI), loaded & set(UI)


def test_reading_a_session_does_not_need_torch():
    loaded = _loaded_after("from sgdwalk import open_session")
    assert "torch" not in loaded


def test_cli_help_does_not_import_torch():
    loaded = _loaded_after("import sgdwalk.tui.cli")
    assert "torch" not in loaded


def test_the_walker_stack_does_not_import_the_built_in_trainer():
    """The Walker and the built-in trainer are two clients of one measuring core
    (``sgdwalk.instrument``): neither sits above the other."""
    names = ("sgdwalk.train", "sgdwalk.runner", "sgdwalk.config", "sgdwalk.data", "sgdwalk.ranks")
    probe = (
        "import sys, sgdwalk.walker, sgdwalk.integrations.lightning, sgdwalk.integrations.hf\n"
        f"print(' '.join(m for m in {names!r} if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.split() == []
