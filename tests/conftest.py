from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from canned import write_canned_session  # noqa: E402

# A Walker takes one torch thread per free core unless the script chose (sgdwalk.cpu): the tests
# compare runs bit for bit, with and without a Walker, so their thread count is fixed here, as a
# script's own choice, at torch's default (one per core), in this process and every child.
os.environ.setdefault("OMP_NUM_THREADS", str(len(os.sched_getaffinity(0))))


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


@pytest.fixture
def float64():
    """float64 as torch's default dtype and one thread, for the test's duration."""
    import torch

    before, threads = torch.get_default_dtype(), torch.get_num_threads()
    torch.set_default_dtype(torch.float64)
    torch.set_num_threads(1)
    yield
    torch.set_default_dtype(before)
    torch.set_num_threads(threads)
