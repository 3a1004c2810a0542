"""``sie3d check``: the dry-run substitutions, and (slow) the paper preset at full size on synthetic weights."""

import os
import subprocess
import sys

import pytest
import torch

from sie3d.commands._synthetic import dry_run_config
from sie3d.config import load_config

pytestmark = pytest.mark.needs_offline_models


def test_dry_run_substitutes_only_what_is_not_cached(sie3d_home):
    config = load_config("params/paper.yaml", overrides=["render.resolution=64"])
    changed, notes = dry_run_config(config, torch.device("cpu"))
    assert changed.models.face_detector == "dlib" and changed.models.template == "builtin"
    assert changed.models.emotion_loss_classifier == "fer" and changed.render.backend == "torch"
    assert changed.guidance.latent_resolution == 8  # 64 px renders are not upsampled to 512 for the VAE
    assert changed.models.lora == "arc2face-lora" and changed.models.lora_scale == 0.45  # the prior is untouched
    assert changed.run.offline and len(notes) == 5
    released = load_config("params/paper.yaml", "params/released-code.yaml")
    assert dry_run_config(released, torch.device("cpu"))[0].loss.lambda_emotion == 0.0


@pytest.mark.slow
def test_paper_preset_at_full_size_on_synthetic_weights(tmp_path):
    """~4.4 GB of random weights in the real layouts, loaded by the real loaders, 2 iterations on CPU."""
    command = ["check", "--params", "params/paper.yaml", "--synthetic-weights", "--device", "cpu",
               "--set", "render.resolution=64", "--set", "train.iterations=2",
               "--set", "train.batch_size=1", "--set", "guidance.xs_inv_steps=1", "--workdir", str(tmp_path)]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    done = subprocess.run([sys.executable, "-c", "from sie3d.cli import main; raise SystemExit(main())", *command],
                          capture_output=True, text=True, env=env, timeout=1800)
    out = done.stdout
    assert done.returncode == 0, out[-3000:] + done.stderr[-3000:]
    for label, count in [("UNet", "859,520,964"), ("VAE", "83,653,863"), ("CLIP text encoder", "123,060,480"),
                         ("Arc2Face ID encoder", "123,060,480")]:
        assert any(line.startswith(f"[check] {label}") and f"{count} parameters, matches" in line
                   for line in out.splitlines()), (label, out)
    assert "[check] LoRA 0.45 (r=4 on 128 layers" in out
    assert "[check] manifest: LoRA applied=True at scale 0.45" in out
    assert "s/it" in out and "RSS peak" in out and "[check] passed" in out
    assert list(tmp_path.iterdir()) == []  # the ~4.4 GB temporary cache is gone
