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


@pytest.fixture(scope="session")
def quick_avatar(tmp_path_factory):
    """``quick_avatar(expression) -> run directory``: the astronaut through ``sie3d generate`` with
    params/quick.yaml, made once per session and expression and shared by the tests that check different
    properties of that avatar (tests/test_generate.py)."""
    import imageio.v3 as iio
    from skimage.data import astronaut

    from sie3d.cli import main

    root = tmp_path_factory.mktemp("quick_avatar")
    photo = root / "astronaut.png"
    iio.imwrite(photo, astronaut())
    runs: dict[str, tuple[Path, int]] = {}

    def make(expression: str) -> Path:
        if expression not in runs:  # a failure is kept too: the next test does not generate it again
            out = root / expression
            runs[expression] = out, main(["generate", str(photo), "--expression", expression, "--out", str(out),
                                          "--params", str(REPO_ROOT / "params/quick.yaml")])
        out, code = runs[expression]
        assert code == 0, f"sie3d generate --expression {expression} failed"
        return out

    return make


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
