import json

import pytest
import torch

from sie3d.bench._timing import time_iterations
from sie3d.bench.generate import COLUMNS, iteration_breakdown, random_sd15_prior
from sie3d.cli import main
from sie3d.config import load_config

TINY = ["--set", "render.resolution=32", "--set", "render.frontal_resolution=64",
        "--set", "guidance.latent_resolution=4", "--set", "guidance.xs_inv_steps=2"]


def test_breakdown_averages_parts_and_puts_the_rest_in_other():
    records = [
        {"time_render": 0.2, "time_encode": 0.01, "time_unet": 0.1, "time_emotion": 0.3, "time_reference": 0.05,
         "time_backward": 1.0, "time_step": 0.04, "time_guidance": 0.15, "time_iteration": 2.0},
        # no emotion in this iteration (train.emotion_every > 1): it counts 0
        {"time_render": 0.4, "time_encode": 0.03, "time_unet": 0.3, "time_reference": 0.15,
         "time_backward": 2.0, "time_step": 0.06, "time_guidance": 0.45, "time_iteration": 3.0},
    ]
    row = iteration_breakdown(records)
    assert list(row) == list(COLUMNS)
    expected = {"render": 0.3, "vae_encode": 0.02, "unet": 0.2, "emotion": 0.15, "reference": 0.1,
                "backward": 1.5, "optimiser": 0.05, "total": 2.5}
    for name, value in expected.items():
        assert row[name] == pytest.approx(value)
    assert row["other"] == pytest.approx(2.5 - (0.3 + 0.02 + 0.2 + 0.15 + 0.1 + 1.5 + 0.05))
    with pytest.raises(ValueError, match="at least one timed iteration"):
        iteration_breakdown([])


def test_cli_prints_every_column_and_parts_add_up(capsys, repo_root, tmp_path, monkeypatch):
    monkeypatch.chdir(repo_root)
    monkeypatch.setenv("CUDA_LAUNCH_BLOCKING", "0")  # --paper-breakdown sets it when absent; keep the environment
    out_json = tmp_path / "rows.json"
    paper = [] if torch.cuda.is_available() else ["--paper"]  # without CUDA: says so, exits 0
    threads = torch.get_num_threads()
    try:
        code = main(["bench", "generate", "--iterations", "2", "--warmup", "0", "--threads", "1", *TINY,
                     "--json", str(out_json), *paper])
    finally:
        torch.set_num_threads(threads)
    out = capsys.readouterr().out
    assert code == 0
    header = next(line for line in out.splitlines() if line.startswith("setting"))
    assert header.split()[3:] == list(COLUMNS)
    numbers = next(line.split() for line in out.splitlines() if line.split()[:2] == ["quick", "cpu"])[3:]
    assert len(numbers) == len(COLUMNS)
    if paper:
        assert "no CUDA device here" in out
    (row,) = json.loads(out_json.read_text())["parts"]
    assert row["setting"] == "quick" and row["device"] == "cpu" and row["iterations"] == 2
    parts = [row[c] for c in COLUMNS if c != "total"]
    assert sum(parts) == pytest.approx(row["total"])
    for name in ("render", "vae_encode", "unet", "emotion", "reference", "backward", "optimiser"):
        assert row[name] > 0, name  # every part of the quick preset runs each iteration
    assert row["other"] >= 0


def test_paper_path_runs_with_a_narrow_sd15_shaped_prior_on_cpu(repo_root):
    """The --paper code path (substitutes, injected random prior, 512-d identity) at toy widths on CPU."""
    narrow = dict(unet=dict(block_out_channels=(32, 32, 64, 64), cross_attention_dim=64, norm_num_groups=8,
                            layers_per_block=1),
                  vae=dict(block_out_channels=(8, 8, 16, 16), norm_num_groups=8, layers_per_block=1),
                  text=dict(hidden_size=64, intermediate_size=128, num_hidden_layers=1, num_attention_heads=2))
    prior = random_sd15_prior("cpu", half_precision=True, **narrow)
    from sie3d.bench.generate import PAPER_OFFLINE_SUBSTITUTES

    config = load_config(repo_root / "params/paper.yaml", overrides=[
        *PAPER_OFFLINE_SUBSTITUTES, "models.emotion_loss_classifier=fer", "run.device=cpu", "render.backend=torch",
        "render.resolution=32", "guidance.latent_resolution=4", "guidance.xs_inv_steps=2", "train.batch_size=1",
        "gaussians.subdivisions=0"])
    timing = time_iterations(config, torch.device("cpu"), iterations=1, warmup=0, prior=prior,
                             identity_dim=prior.identity_dim)
    (record,) = timing.records
    assert timing.wall_per_iteration >= record["time_iteration"] * 0.5
    assert prior.n_unet_evals == record["n_unet_evals"] > 0  # the injected prior did the guidance
    assert prior.unet.dtype == torch.float32  # fp16 only on CUDA
    assert {"time_render", "time_unet", "time_emotion", "time_backward", "time_step"} <= set(record)
    assert "loss_ref" not in record  # the paper has no reference-view loss


NARROW = dict(unet=dict(block_out_channels=(32, 32, 64, 64), cross_attention_dim=64, norm_num_groups=8,
                        layers_per_block=1),
              vae=dict(block_out_channels=(8, 8, 16, 16), norm_num_groups=8, layers_per_block=1),
              text=dict(hidden_size=64, intermediate_size=128, num_hidden_layers=1, num_attention_heads=2))


def test_ism_agreement_is_exact_for_the_same_setting_and_sees_a_changed_vae(repo_root):
    """The agreement check on CPU (where every speed setting is the plain path): the same step twice has
    zero error; a VAE encoder with other weights gives a gradient error far above the tolerance, so
    the check can fail; apply_speed restores the float32 encoder weights between settings."""
    from sie3d.bench._paper_speed import (FP16_TOLERANCE, SPEED_SETTINGS, apply_speed, encoder_weights, format_rows,
                                         ism_steps, relative_errors)

    prior = random_sd15_prior("cpu", half_precision=True, **NARROW)
    config = load_config(repo_root / "params/paper.yaml", overrides=[
        "run.device=cpu", "guidance.latent_resolution=4", "guidance.xs_inv_steps=2", "train.batch_size=2",
        "conditioning.cache_embeddings=false"])
    reference = ism_steps(prior, config, steps=2)
    assert reference[0].grad.shape == (2, 3, 32, 32) and reference[0].grad.abs().sum() > 0
    assert relative_errors(ism_steps(prior, config, steps=2), reference) == (0.0, 0.0)
    original = encoder_weights(prior)
    with torch.no_grad():
        prior.vae.encoder.conv_in.weight.mul_(1.5)
    changed = relative_errors(ism_steps(prior, config, steps=2), reference)
    assert changed[1] > 10 * FP16_TOLERANCE
    apply_speed(prior, original, SPEED_SETTINGS["fast-bf16"])  # on CPU: the plain path, weights restored
    assert prior.graphed_unet is None and prior.vae_dtype == torch.float32
    assert relative_errors(ism_steps(prior, config, steps=2), reference) == (0.0, 0.0)
    row = {"setting": "fast-bf16", **SPEED_SETTINGS["fast-bf16"], "ms_per_iteration": 100.0, "peak_gib": 9.5,
           "unet_calls": 4.9, "minutes_5000": 8.3, "minutes_7000": 11.7, "loss_rel_error": 1e-3,
           "grad_rel_error": 2e-3, "agrees": True}
    assert "fast-bf16" in format_rows([row]) and "yes" in format_rows([row])
