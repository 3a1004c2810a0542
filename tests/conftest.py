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


@pytest.fixture(scope="session")
def quick_rig_run(tmp_path_factory) -> Path:
    """A small run directory as ``sie3d generate`` leaves it for viewers (``config.yaml``, ``avatar.rig``,
    ``avatar.spz``, ``turntable.gif``): the quick preset's avatar of the astronaut photo before training
    (photo fit, person-fitted template, Gaussians painted from the photo, at the photo's own expression);
    ~30 s on 2 CPU cores, built once per session."""
    import skimage.data
    import torch

    from sie3d.avatar.rig import write_rig
    from sie3d.avatar.spz import save_spz
    from sie3d.config import load_config, save_config
    from sie3d.render.media import render_turntable, save_turntable
    from sie3d.subject import initial_avatar, make_subject, prepare_subject

    run = tmp_path_factory.mktemp("quick_rig_run")
    config = load_config(REPO_ROOT / "params/quick.yaml")
    save_config(config, run / "config.yaml")
    cpu = torch.device("cpu")
    prepared = prepare_subject(make_subject([skimage.data.astronaut()], config.models), config, cpu)
    gaussians = initial_avatar(prepared, config, cpu)
    write_rig(gaussians, prepared.photo_expression, run / "avatar.rig", config.cameras)
    with torch.no_grad():
        splats = gaussians.to_world(prepared.template.deform(prepared.photo_expression))
    save_spz(splats, run / "avatar.spz")
    save_turntable(render_turntable(splats, 4, 64, config.cameras, backend=config.render.backend),
                   run / "turntable.gif")
    return run
