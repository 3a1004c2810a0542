"""Test-wide settings: no network (pytest-socket + HF offline), CPU, a small thread count."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture
def sie3d_home(tmp_path, monkeypatch) -> Path:
    """An empty model cache for registry tests."""
    home = tmp_path / "sie3d_home"
    monkeypatch.setenv("SIE3D_HOME", str(home))
    return home


def pytest_collection_modifyitems(config, items):
    import torch

    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs CUDA")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)
