"""Shared fixtures: the sample data and golden tensors live in ../shared (skipped when absent)."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never wait on a model hub in tests

import torch  # noqa: E402

from lorat_scale import paths  # noqa: E402

torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data, or skip with a clear message."""
    p = paths.shared_data()
    if not p.is_dir():
        pytest.skip(f"sample data not found at {p} (set LORAT_SHARED to the shared/ folder)")
    return p


@pytest.fixture(scope="session")
def golden() -> Path:
    """../shared/golden, or skip with a clear message."""
    p = paths.golden()
    if not p.is_dir():
        pytest.skip(f"golden tensors not found at {p} (set LORAT_SHARED to the shared/ folder)")
    return p


@pytest.fixture(scope="module")
def one_torch_thread():
    """One intra-op thread: small CPU forwards run ~3x faster on a shared, busy 2-core machine."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
