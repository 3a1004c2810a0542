"""``sie3d bench generate``: where one optimisation iteration of ``sie3d generate`` spends its time.

The trainer is built exactly as :func:`sie3d.generate.generate` builds it (the astronaut photo through
:func:`sie3d.subject.make_subject` and :func:`sie3d.subject.prepare_subject`, then
:class:`sie3d.train.trainer.AvatarTrainer` with the prior passed in, in a temporary run directory), run for ``--warmup`` untimed iterations, then ``--iterations`` timed ones. The parts are
read from the trainer's own step records and averaged per iteration (a part that did not run in an
iteration, e.g. the emotion loss with ``train.emotion_every`` > 1, counts 0 there):

========== ============================================================================
render     the batch of training views (``time_render``)
vae_encode VAE encoder of the guidance (``time_encode``)
unet       every UNet pass of the guidance: DDIM inversion hops, target, guided pass (``time_unet``)
emotion    frontal render + emotion classifier (``time_emotion``)
reference  frontal render at the photo's expression + reference-view loss (``time_reference``)
backward   the backward pass through everything (``time_backward``)
optimiser  Adam step, NaN checks, densify/prune (``time_step``)
other      the rest of ``time_iteration``: geometry (blendshapes, local-to-world), ISM bookkeeping
           (noise, DDIM arithmetic), regularisers, the pre-step snapshot, learning-rate updates
========== ============================================================================

Default: the quick preset on the CPU. ``--paper`` adds the paper's settings (``params/paper.yaml``:
512², batch 4, gsplat, fp16 UNet) on CUDA with a full-size SD-1.5-shaped UNet, VAE and CLIP ViT-L text
encoders built from their configurations with random weights: the cost of a network pass does not
depend on its weight values. The models the paper preset names but that need a download are replaced
by offline ones of negligible cost (dlib face detection, the built-in template, a seeded random 512-d
identity, the ``fer`` classifier when DeepFace's is not cached); the table says which. Densification
starts at iteration 100 in the paper preset, so these iterations time the steady state before it.
On CUDA the trainer's timers do not synchronise, so the paper measurement runs with
``CUDA_LAUNCH_BLOCKING=1`` (every kernel finishes before the next launch, so time lands in the part
that spent it; the total is a little above an asynchronous run's).
"""

from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path
from typing import Any

from ._timing import time_iterations

#: columns of the table: (name, step-record key); "other" is derived, see the module docstring
PARTS = (("render", "time_render"), ("vae_encode", "time_encode"), ("unet", "time_unet"),
         ("emotion", "time_emotion"), ("reference", "time_reference"), ("backward", "time_backward"),
         ("optimiser", "time_step"))
COLUMNS = (*(name for name, _ in PARTS), "other", "total")

#: SD-1.5's UNet, VAE and CLIP ViT-L/14 text-encoder shapes (their published config.json values)
SD15_UNET = dict(sample_size=64, in_channels=4, out_channels=4, layers_per_block=2,
                 block_out_channels=(320, 640, 1280, 1280),
                 down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
                 up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
                 cross_attention_dim=768, attention_head_dim=8, norm_num_groups=32)
SD15_VAE = dict(in_channels=3, out_channels=3, latent_channels=4, layers_per_block=2,
                block_out_channels=(128, 256, 512, 512), down_block_types=("DownEncoderBlock2D",) * 4,
                up_block_types=("UpDecoderBlock2D",) * 4, norm_num_groups=32, sample_size=512,
                scaling_factor=0.18215)
CLIP_L_TEXT = dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                   hidden_act="quick_gelu")

#: what the paper preset names but needs a download, replaced for timing (see the module docstring)
PAPER_OFFLINE_SUBSTITUTES = ["models.face_detector=dlib", "models.identity=dlib", "models.template=builtin",
                             "models.landmarks=mediapipe", "conditioning.cache_embeddings=false"]

DESCRIPTION = ("per-iteration time of `sie3d generate` by part (render, VAE encode, UNet, emotion, "
               "reference, backward, optimiser, other): quick preset on CPU; --paper: paper settings on CUDA")


def add_arguments(parser) -> None:
    from ..config_args import add_config_arguments

    add_config_arguments(parser, default_params="params/quick.yaml")
    parser.add_argument("--iterations", type=int, default=10, help="timed iterations (default 10)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed iterations first (default 2)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (default: torch's choice, e.g. from OMP_NUM_THREADS)")
    parser.add_argument("--photo", default=None, help="portrait to build the trainer from (default: the astronaut)")
    parser.add_argument("--paper", action="store_true",
                        help="also params/paper.yaml on CUDA with a random full-size SD-1.5-shaped prior: wall-clock "
                             "ms/it, peak memory and ISM agreement of the plain and fast settings (sie3d.bench._paper_speed)")
    parser.add_argument("--paper-only", action="store_true", help="skip the quick preset's CPU row")
    parser.add_argument("--paper-breakdown", action="store_true",
                        help="params/paper.yaml on CUDA by part, with CUDA_LAUNCH_BLOCKING=1 (slower than wall clock)")
    parser.add_argument("--paper-set", dest="paper_overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="dotted override for the --paper settings (repeatable)")
    parser.add_argument("--json", metavar="PATH", help="also write the rows as JSON")


# --------------------------------------------------------------------------- measurement


def iteration_breakdown(records: list[dict[str, float]]) -> dict[str, float]:
    """Mean seconds per iteration of each part of :data:`COLUMNS` over trainer step records.

    ``other`` = mean ``time_iteration`` − the sum of the named parts, so the parts add up to ``total``.
    """
    if not records:
        raise ValueError("no step records to average; run at least one timed iteration")
    n = len(records)
    row = {name: sum(r.get(key, 0.0) for r in records) / n for name, key in PARTS}
    row["total"] = sum(r["time_iteration"] for r in records) / n
    row["other"] = row["total"] - sum(row[name] for name, _ in PARTS)
    return {name: row[name] for name in COLUMNS}


def random_sd15_prior(device, half_precision: bool = True, unet: dict | None = None, vae: dict | None = None,
                      text: dict | None = None, seed: int = 0):
    """A :class:`sie3d.diffusion.prior.DiffusionPrior` with SD-1.5-shaped networks and random weights (timing only).

    ``unet`` / ``vae`` / ``text`` override :data:`SD15_UNET` / :data:`SD15_VAE` / :data:`CLIP_L_TEXT`
    entries (tests build a narrow copy on the CPU). The UNet runs in fp16 on CUDA with
    ``half_precision``; the ID encoder takes a 512-d (ArcFace-sized) identity like Arc2Face's.
    """
    import torch
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from ..diffusion.prior import ARCFACE_DIM, SD15_SCHEDULE, DiffusionPrior
    from ..diffusion.tiny_networks import with_seed
    from ..diffusion.tokenizer import BOS_ID, EOS_ID, MAX_LENGTH, VOCAB_SIZE, load_clip_tokenizer
    from ..runtime import diffusion_dtype

    text_cfg = CLIPTextConfig(vocab_size=VOCAB_SIZE, max_position_embeddings=MAX_LENGTH, bos_token_id=BOS_ID,
                              eos_token_id=EOS_ID, pad_token_id=EOS_ID, **{**CLIP_L_TEXT, **(text or {})})
    device = torch.device(device)
    with with_seed(seed), device:  # built where it runs: initialising 1.2 B parameters on a CPU takes a while
        parts = dict(unet=UNet2DConditionModel(**{**SD15_UNET, **(unet or {})}).eval(),
                     vae=AutoencoderKL(**{**SD15_VAE, **(vae or {})}).eval(),
                     text_encoder=CLIPTextModel(text_cfg).eval(), id_encoder=CLIPTextModel(text_cfg).eval())
    prior = DiffusionPrior(scheduler=DDIMScheduler(**SD15_SCHEDULE), tokenizer=load_clip_tokenizer(),
                           profile="sd15-random", device=device,
                           unet_dtype=diffusion_dtype(device, half_precision), identity_dim=ARCFACE_DIM,
                           identity_seed=seed, **parts)
    return prior.to(device)


# --------------------------------------------------------------------------- table


def format_table(rows: list[dict[str, Any]]) -> str:
    """Rows (``setting``, ``device``, ``iterations`` and :data:`COLUMNS` in seconds) as a text table in ms."""
    head = f"{'setting':<12s} {'device':<7s} {'its':>4s} " + " ".join(f"{c:>10s}" for c in COLUMNS)
    lines = [head, "-" * len(head)]
    for row in rows:
        lines.append(f"{row['setting']:<12s} {row['device']:<7s} {row['iterations']:>4d} "
                     + " ".join(f"{row[c] * 1e3:>10.1f}" for c in COLUMNS))
        lines.append(f"{'':<12s} {'':<7s} {'%':>4s} "
                     + " ".join(f"{100 * row[c] / row['total']:>10.1f}" for c in COLUMNS))
    return "\n".join(lines) + "\n(ms per iteration, mean over the timed iterations; % of the total)"


def _describe(config, records) -> str:
    r, t, g = config.render, config.train, config.guidance
    unet_calls = sum(rec.get("n_unet_evals", 0) for rec in records) / len(records)
    return (f"{config.preset}: render {r.resolution}² x batch {t.batch_size} ({r.backend}), frontal "
            f"{r.frontal_resolution or r.resolution}², prior {config.models.prior}, latents "
            f"{g.latent_resolution}², xs_inv_steps {g.xs_inv_steps}, {unet_calls:.1f} UNet calls/it, "
            f"emotion clf {config.models.emotion_loss_classifier} every {t.emotion_every}, "
            f"lambda_ref {config.loss.lambda_ref}, {int(records[-1]['n_gaussians'])} Gaussians")


def _row(setting: str, device, records) -> dict[str, Any]:
    return {"setting": setting, "device": device.type, "iterations": len(records), **iteration_breakdown(records)}


def _paper_config(args):
    from ..config import load_config
    from ..evaluation.ablations import PARAMS_DIR
    from ..weights import is_available

    classifier = "deepface" if is_available("deepface-emotion") else "fer"
    return load_config(PARAMS_DIR / "paper.yaml", overrides=[
        *PAPER_OFFLINE_SUBSTITUTES, f"models.emotion_loss_classifier={classifier}", *args.paper_overrides])


def run(args) -> int:
    import torch

    from ..config_args import config_from_args

    if args.paper_breakdown:  # before any CUDA context exists: the trainer's timers need synchronous launches
        os.environ.setdefault("CUDA_LAUNCH_BLOCKING", "1")
    if args.threads:
        torch.set_num_threads(args.threads)
    config = config_from_args(args)
    config = replace(config, run=replace(config.run, device="cpu"),
                     render=replace(config.render, backend="torch" if config.render.backend == "gsplat"
                                    else config.render.backend))
    cpu = torch.device("cpu")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads; {args.warmup} warm-up + "
          f"{args.iterations} timed iterations per setting")
    rows: list[dict[str, Any]] = []
    if not args.paper_only:
        records = time_iterations(config, cpu, args.iterations, args.warmup, args.photo).records
        rows.append(_row(config.preset, cpu, records))
        print(_describe(config, records))
    result: dict[str, Any] = {"parts": rows}

    if (args.paper or args.paper_breakdown) and not torch.cuda.is_available():
        print("--paper: no CUDA device here, so the paper settings (512², batch 4, gsplat, full-size UNet) "
              "were not timed; run this on a GPU machine")
    elif args.paper or args.paper_breakdown:
        cuda = torch.device("cuda")
        paper = _paper_config(args)
        prior = random_sd15_prior(cuda, paper.models.half_precision, seed=paper.run.seed)
        print(f"paper prior: {prior.describe()} on {torch.cuda.get_device_name(cuda)}")
        print("offline substitutes: " + ", ".join([*PAPER_OFFLINE_SUBSTITUTES,
                                                   f"models.emotion_loss_classifier="
                                                   f"{paper.models.emotion_loss_classifier}",
                                                   "identity = seeded random 512-d unit vector"]))
        if args.paper:
            from ._paper_speed import format_rows, measure_paper

            speed = measure_paper(paper, prior, args.iterations, args.warmup, args.photo)
            print(format_rows(speed))
            result["paper_speed"] = speed
        if args.paper_breakdown:
            prior.set_speed(paper.models.vae_precision, paper.models.cuda_graphs, paper.models.channels_last)
            torch.cuda.reset_peak_memory_stats(cuda)
            timing = time_iterations(paper, cuda, args.iterations, args.warmup, args.photo, prior=prior,
                                     identity_dim=prior.identity_dim)
            print(_describe(paper, timing.records) + f"; CUDA_LAUNCH_BLOCKING=1; peak GPU memory "
                  f"{torch.cuda.max_memory_allocated(cuda) / 2**30:.2f} GiB")
            rows.append(_row(paper.preset, cuda, timing.records))

    print(format_table(rows))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2, default=str))
    return 0
