from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from canned import write_canned_session  # noqa: E402


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
