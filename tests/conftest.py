"""Shared test settings: tiny thread count (CI has 2 cores) and the shared datasets folder."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402

torch.set_num_threads(1)

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "datasets"


@pytest.fixture(scope="session")
def shared_datasets() -> Path:
    """``../shared/datasets`` next to the project; tests that need it skip when it is absent."""
    if not SHARED.is_dir():
        pytest.skip(f"shared datasets not found at {SHARED}")
    return SHARED


@pytest.fixture(scope="session")
def shared_labels(shared_datasets: Path) -> Path:
    path = shared_datasets / "labels"
    if not path.is_dir():
        pytest.skip(f"shared label tables not found at {path}")
    return path


@pytest.fixture(scope="session")
def camvid_root(shared_datasets: Path) -> Path:
    path = shared_datasets / "camvid"
    if not (path / "train").is_dir():
        pytest.skip(f"CamVid not found at {path}")
    return path
