import random

import numpy as np
import torch

from sie3d.train.checkpoint import (
    capture_rng,
    checkpoint_path,
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    prune_checkpoints,
    restore_rng,
    save_checkpoint,
)


def test_save_load_latest_and_prune(tmp_path):
    for it in (5, 10, 100):
        save_checkpoint(checkpoint_path(tmp_path, it), {"iteration": it, "x": torch.arange(it)})
    (tmp_path / "checkpoints/ckpt_000200.pt.tmp").write_bytes(b"half a file")  # an interrupted write
    assert latest_checkpoint(tmp_path).name == "ckpt_000100.pt"
    assert load_checkpoint(latest_checkpoint(tmp_path))["x"].shape == (100,)
    prune_checkpoints(tmp_path, keep=2)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["ckpt_000010.pt", "ckpt_000100.pt"]
    assert latest_checkpoint(tmp_path / "nothing") is None


def test_rng_round_trip(tmp_path):
    gen = torch.Generator().manual_seed(3)
    save_checkpoint(tmp_path / "rng.pt", {"rng": capture_rng(gen)})
    expected = (random.random(), np.random.rand(), torch.rand(2), torch.rand(2, generator=gen))
    restore_rng(load_checkpoint(tmp_path / "rng.pt")["rng"], gen)
    again = (random.random(), np.random.rand(), torch.rand(2), torch.rand(2, generator=gen))
    assert expected[:2] == again[:2]
    assert torch.equal(expected[2], again[2]) and torch.equal(expected[3], again[3])
