"""``sie3d check``: a preset's full-size prior through the real loaders, a few iterations, sizes and speed.

``sie3d check --params params/paper.yaml --synthetic-weights [--device cpu] [--set ...]`` writes random
weights in the exact on-disk layouts of the Arc2Face / SD-1.5 prior and Arc2Face's LoRA at full size
(:mod:`sie3d.diffusion.synthetic`) into a temporary model cache, loads them with the loaders real runs
use, runs ``train.iterations`` iterations of the preset on the device and prints each network's
parameter count against SD-1.5's published one, the LoRA scale applied, peak memory and seconds per
iteration. Without ``--synthetic-weights`` it checks the weights already in ``$SIE3D_HOME``.

What the dry run substitutes (each printed): the photo is scikit-image's astronaut; models that are not
part of the prior and are not cached (SCRFD, DeepFace, FLAME) give way to their offline counterparts
(dlib detection, fer, the built-in head; :func:`sie3d.commands._synthetic.dry_run_config`); ArcFace is
a small random network in its ONNX layout with ``--synthetic-weights``, else, when not cached, a random
unit 512-d identity; on CPU the torch rasterizer replaces gsplat; renders are never upsampled for the VAE
(``guidance.latent_resolution`` at most ``render.resolution / 8``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import resource
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from ..config import Config
from ..config_args import add_config_arguments, config_from_args
from ..run_dir import RunDir
from ..runtime import resolve_device
from ._common import UserError
from ._synthetic import dry_run_config, model_home, writing_weights

#: (label, attribute of the prior, key of its published SD-1.5 count)
NETWORKS = (("UNet", "unet", "unet"), ("VAE", "vae", "vae"),
            ("CLIP text encoder (E_SD)", "text_encoder", "text_encoder"),
            ("Arc2Face ID encoder", "id_encoder", "text_encoder"))


def add_parser(sub, name: str, help_text: str):
    parser = sub.add_parser(name, help=help_text, description=__doc__.split("\n\n")[1])
    add_config_arguments(parser, default_params="params/paper.yaml")
    parser.add_argument("--synthetic-weights", action="store_true",
                        help="random full-size weights in the real layouts, in a temporary cache (no download)")
    parser.add_argument("--device", default=None, help="override run.device (e.g. cpu, cuda)")
    parser.add_argument("--workdir", default=None,
                        help="folder for the temporary cache and run (default: the system temp dir; ~5 GB)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    return parser


def _print(line: str) -> None:
    print(line, flush=True)


def _subject(config: Config, device: torch.device, identity_dim: int | None, seed: int):
    """The astronaut photo prepared for the run; the identity is a random unit vector when the prior
    needs ArcFace's 512-d one and no ArcFace file is cached."""
    import skimage.data

    from ..subject import make_subject, prepare_subject
    from ..weights import is_available

    arcface = config.models.identity == "arcface" and is_available("arc2face-arcface")
    models = dataclasses.replace(config.models, identity="arcface" if arcface else "dlib")
    subject = make_subject([skimage.data.astronaut()], models, sources=["skimage astronaut"])
    if identity_dim is not None and subject.identity.shape[0] != identity_dim:
        rng = np.random.default_rng(seed)
        vector = rng.standard_normal(identity_dim)
        subject = dataclasses.replace(subject, identity=(vector / np.linalg.norm(vector)).astype(np.float32),
                                      identity_encoder=f"random unit {identity_dim}-d (stands for ArcFace)")
    return prepare_subject(subject, config, device)


def _rss_parts() -> str:
    """Current anonymous and file-backed resident memory (the loaded safetensors stay memory-mapped)."""
    try:
        fields = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines()
                      if line.startswith(("RssAnon", "RssFile")))
    except OSError:
        return ""
    gb = {k: int(v.split()[0]) / 2**20 for k, v in fields.items()}
    return (f"; now {gb.get('RssAnon', 0):.2f} GB anonymous + {gb.get('RssFile', 0):.2f} GB file-backed, "
            "mostly the memory-mapped weights")


def _peak_memory(device: torch.device) -> str:
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # Linux: kB -> GB
    writer = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20
    cpu = f"RSS peak {rss:.2f} GB (load + iterations{_rss_parts()}), weight writer {writer:.2f} GB"
    if device.type == "cuda":
        return f"{torch.cuda.max_memory_allocated(device) / 2**30:.2f} GB allocated on {device}; {cpu}"
    return cpu


def run(args) -> int:
    from ..diffusion.synthetic import PUBLISHED_PARAMETERS, count_parameters

    config = config_from_args(args)
    if config.models.prior != "arc2face":
        raise UserError(f"sie3d check is for the real-weights prior; this preset has models.prior={config.models.prior}")
    device = resolve_device(args.device or config.run.device)
    config, notes = dry_run_config(config, device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    workdir = Path(tempfile.mkdtemp(prefix="sie3d-check-", dir=args.workdir))
    failures = []
    try:
        with model_home(workdir, args.synthetic_weights) as home:
            _print(f"[check] preset {config.preset}, device {device}, model cache {home}")
            for note in notes:
                _print(f"[check] dry run: {note}")
            tick = time.perf_counter()
            with writing_weights(home, config.run.seed) if args.synthetic_weights else contextlib.nullcontext():
                from ..diffusion.prior import DiffusionPrior  # the imports overlap the child writing the weights
                from ..subject import initial_avatar
                from ..train.trainer import AvatarTrainer
            if args.synthetic_weights:
                size = sum(p.stat().st_size for p in (home / "models").rglob("*") if p.is_file() and not p.is_symlink())
                _print(f"[check] synthetic weights: {size / 2**30:.2f} GB written in {time.perf_counter() - tick:.0f} s")
            tick = time.perf_counter()
            prior = DiffusionPrior.from_config(config, device)
            random_note = " [random values: --synthetic-weights]" if args.synthetic_weights else ""
            _print(f"[check] prior loaded through the real loaders in {time.perf_counter() - tick:.0f} s: "
                   f"{prior.describe()}{random_note}")
            for label, attribute, published_key in NETWORKS:
                count, published = count_parameters(getattr(prior, attribute)), PUBLISHED_PARAMETERS[published_key]
                verdict = "matches" if count == published else "DIFFERS from"
                _print(f"[check] {label:26s} {count:>13,} parameters, {verdict} SD-1.5's published {published:,}")
                if count != published:
                    failures.append(f"{label} has {count:,} parameters, not {published:,}")
            lora = prior.lora
            _print(f"[check] LoRA {lora.scale:g} (r={lora.rank} on {lora.unet_layers} layers, on every UNet call)"
                   if lora is not None else "[check] LoRA none (models.lora is empty)")

            prepared = _subject(config, device, prior.identity_dim, config.run.seed)
            _print(f"[check] identity: {prepared.subject.identity_encoder}")
            run_dir = RunDir.create(workdir / "run", config, device, extra={"prior": prior.manifest_entry()})
            trainer = AvatarTrainer(config, prepared, initial_avatar(prepared, config, device), run_dir.path, device,
                                    prior=prior, log=_print)
            tick = time.perf_counter()
            records = trainer.fit()
            wall = time.perf_counter() - tick
            run_dir.finish(status="finished")
            per_iteration = [r["time_iteration"] for r in records if "time_iteration" in r]
            unet_calls = [r["n_unet_evals"] for r in records if "n_unet_evals" in r]
            _print(f"[check] {len(records)} iterations in {wall:.1f} s: "
                   f"{np.mean(per_iteration) if per_iteration else wall / max(len(records), 1):.2f} s/it, "
                   f"{np.mean(unet_calls) if unet_calls else 0:.1f} UNet calls/it, "
                   f"renders {config.render.resolution} px, latents {config.guidance.latent_resolution}, "
                   f"batch {config.train.batch_size}")
            _print(f"[check] peak memory {_peak_memory(device)}")
            recorded = run_dir.manifest["prior"]["lora"]
            _print(f"[check] manifest: LoRA applied={recorded['applied']}"
                   + (f" at scale {recorded['scale']:g}" if recorded["applied"] else ""))
    finally:
        if args.keep:
            _print(f"[check] kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    if failures:
        raise UserError("; ".join(failures))
    _print("[check] passed")
    return 0
