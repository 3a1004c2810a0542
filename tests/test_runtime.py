import json

import numpy as np
import pytest
import torch

from sie3d.config import load_config
from sie3d.run_dir import RunDir, read_manifest
from sie3d.runtime import resolve_device, seed_everything


def _draw():
    import random

    return random.random(), float(np.random.rand()), torch.randn(3).tolist()


def test_seeding_reproduces_python_numpy_and_torch():
    seed_everything(123)
    first = _draw()
    seed_everything(123)
    assert _draw() == first
    seed_everything(124)
    assert _draw() != first


def test_seeded_cpu_training_steps_are_bit_identical():
    def train():
        seed_everything(7)
        net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(), torch.nn.Conv2d(4, 1, 3))
        opt = torch.optim.Adam(net.parameters(), lr=1e-2)
        x = torch.randn(2, 3, 16, 16)
        for _ in range(5):
            opt.zero_grad()
            net(x).square().mean().backward()
            opt.step()
        return torch.cat([p.detach().flatten() for p in net.parameters()])

    assert torch.equal(train(), train())


def test_resolve_device():
    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type in ("cpu", "cuda")
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="CUDA is not available"):
            resolve_device("cuda")


def test_run_dir_writes_config_and_manifest(tmp_path, repo_root):
    config = load_config(repo_root / "params/quick.yaml")
    run = RunDir.create(tmp_path / "run", config, device="cpu")
    manifest = json.loads((tmp_path / "run/manifest.json").read_text())
    for key in ("seed", "params_hash", "git_revision", "device", "packages", "started", "finished"):
        assert key in manifest
    assert manifest["seed"] == 0 and manifest["params_hash"] == config.params_hash()
    assert manifest["packages"]["torch"] == torch.__version__
    assert manifest["status"] == "running" and manifest["finished"] is None
    assert load_config(tmp_path / "run/config.yaml") == config
    run.finish(summary="done")
    manifest = json.loads((tmp_path / "run/manifest.json").read_text())
    assert manifest["status"] == "finished" and manifest["finished"] and manifest["summary"] == "done"


def test_read_manifest_reads_what_rundir_writes_and_tolerates_damage(tmp_path, repo_root):
    assert read_manifest(tmp_path / "nothing") == {}
    config = load_config(repo_root / "params/quick.yaml")
    run = RunDir.create(tmp_path / "run", config, device="cpu")
    assert read_manifest(run.path)["status"] == "running"
    run.finish()
    manifest = read_manifest(run.path)
    assert manifest["status"] == "finished" and manifest["params_hash"] == config.params_hash()
    (run.path / "manifest.json").write_text('{"status": "fini')  # truncated by a crash
    assert read_manifest(run.path) == {}
    (run.path / "manifest.json").write_text("[1, 2]")
    assert read_manifest(run.path) == {}
