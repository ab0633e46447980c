from __future__ import annotations

import signal
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from canned import write_canned_session  # noqa: E402


def pytest_configure(config):
    """Signals at their defaults in pytest's processes, so the children the tests start too: a
    run started from a script that ignores SIGINT (``nohup``, some CI runners) would otherwise
    hand the ignoring on, and a test that stops a child with SIGINT would wait for nothing."""
    for sig in (signal.SIGINT, signal.SIGTERM, getattr(signal, "SIGHUP", None)):
        if sig is not None and signal.getsignal(sig) == signal.SIG_IGN:
            handler = signal.default_int_handler if sig == signal.SIGINT else signal.SIG_DFL
            signal.signal(sig, handler)


def _cuda() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:
        return False


def pytest_collection_modifyitems(config, items):
    if _cuda():
        return
    skip = pytest.mark.skip(reason="needs CUDA")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def canned_session(tmp_path: Path) -> Path:
    """A finished session folder with 4 epochs x 24 steps, K=10, curvature records."""
    return write_canned_session(tmp_path / "sessions" / "canned")
