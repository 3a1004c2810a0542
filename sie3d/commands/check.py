"""``sie3d check``: a preset's full-size prior through the real loaders, a few iterations, sizes and speed.

``sie3d check --params params/paper.yaml --synthetic-weights [--device cpu] [--set ...]`` writes random
weights in the exact on-disk layouts of the Arc2Face / SD-1.5 prior and Arc2Face's LoRA at full size
(:mod:`sie3d.diffusion.synthetic`) into a temporary model cache, loads them with the loaders real runs
use, runs ``train.iterations`` iterations of the preset on the device and prints each network's
parameter count against SD-1.5's published one, the LoRA scale applied, peak memory and seconds per
iteration. Without ``--synthetic-weights`` it checks the weights already in ``$SIE3D_HOME``.

What the dry run substitutes (each printed): the photo is scikit-image's astronaut; models that are not
part of the prior and are not cached (SCRFD, ArcFace, DeepFace, FLAME) give way to their offline
counterparts (dlib detection, a random unit 512-d identity in place of ArcFace's, fer, the built-in
head); on CPU the torch rasterizer replaces gsplat; renders are never upsampled for the VAE
(``guidance.latent_resolution`` at most ``render.resolution / 8``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import multiprocessing
import os
import resource
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from ..config import Config
from ..run_dir import RunDir
from ..runtime import resolve_device
from ._common import UserError, add_config_arguments, config_from_args

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


@contextlib.contextmanager
def _model_home(workdir: Path, synthetic: bool):
    """``$SIE3D_HOME`` pointed at ``workdir/home`` (offline models linked from the real cache) while inside."""
    from ..weights import OFFLINE_MODELS, PackageSource, REGISTRY, model_dir, sie3d_home

    if not synthetic:
        yield sie3d_home()
        return
    home = workdir / "home"
    for name in OFFLINE_MODELS:
        if not isinstance(REGISTRY[name].source, PackageSource) and model_dir(name).is_dir():
            (home / "models").mkdir(parents=True, exist_ok=True)
            (home / "models" / name).symlink_to(model_dir(name).resolve(), target_is_directory=True)
    previous = os.environ.get("SIE3D_HOME")
    os.environ["SIE3D_HOME"] = str(home)
    try:
        yield home
    finally:
        if previous is None:
            os.environ.pop("SIE3D_HOME", None)
        else:
            os.environ["SIE3D_HOME"] = previous


def dry_run_config(config: Config, device: torch.device) -> tuple[Config, list[str]]:
    """The preset with the dry run's substitutions (module docstring); returns it and one note per change."""
    from ..face.emotion import CLASSIFIER_MODELS
    from ..weights import is_available

    notes = []
    models, render, guidance = config.models, config.render, config.guidance
    changes: dict[str, dict] = {"models": {}, "render": {}, "guidance": {}, "run": {}, "conditioning": {}}
    if models.face_detector == "scrfd" and not is_available("antelopev2"):
        changes["models"]["face_detector"] = "dlib"
    if models.template == "flame" and not models.flame_model_path:
        changes["models"]["template"] = "builtin"
    loss_classifier = models.emotion_loss_classifier
    if config.loss.lambda_emotion > 0 and not is_available(CLASSIFIER_MODELS.get(loss_classifier, loss_classifier)):
        changes["models"]["emotion_loss_classifier"] = "fer"
    if device.type != "cuda" and render.backend == "gsplat":
        changes["render"]["backend"] = "torch"
    latent_cap = max(1, render.resolution // 8)
    if guidance.latent_resolution > latent_cap:
        changes["guidance"]["latent_resolution"] = latent_cap
    changes["run"].update(device=str(device), offline=True)
    changes["conditioning"]["cache_embeddings"] = False
    sections = {}
    for section, values in changes.items():
        current = getattr(config, section)
        for key, value in values.items():
            if getattr(current, key) != value and section in ("models", "render", "guidance"):
                notes.append(f"{section}.{key}: {getattr(current, key)} -> {value}")
        sections[section] = dataclasses.replace(current, **values)
    return dataclasses.replace(config, **sections), notes


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


def _write_weights(home: Path, seed: int) -> None:
    """Write the synthetic weights in a child process, so its ~5 GB peak is returned before loading."""
    from ..diffusion.synthetic import write_synthetic_weights

    child = multiprocessing.get_context("spawn").Process(target=write_synthetic_weights, args=(str(home), seed))
    child.start()
    child.join()
    if child.exitcode != 0:
        raise UserError(f"writing the synthetic weights into {home} failed (exit code {child.exitcode}); "
                        "is there ~5 GB free there? (--workdir chooses the folder)")


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
    from ..diffusion.prior import DiffusionPrior
    from ..diffusion.synthetic import PUBLISHED_PARAMETERS, count_parameters
    from ..subject import initial_avatar
    from ..train.trainer import AvatarTrainer

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
        with _model_home(workdir, args.synthetic_weights) as home:
            _print(f"[check] preset {config.preset}, device {device}, model cache {home}")
            for note in notes:
                _print(f"[check] dry run: {note}")
            if args.synthetic_weights:
                tick = time.perf_counter()
                _write_weights(home, config.run.seed)
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
