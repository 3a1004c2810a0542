"""What ``sie3d check`` and ``sie3d generate --synthetic-weights`` share: a temporary model cache holding
random full-size weights in the real layouts (:mod:`sie3d.diffusion.synthetic`), and the preset with
the substitutions a dry run needs for the models that are neither the prior nor cached.
"""

from __future__ import annotations

import contextlib
import dataclasses
import multiprocessing
import os
from pathlib import Path

import torch

from ..config import Config
from ._common import UserError


@contextlib.contextmanager
def model_home(workdir: Path, synthetic: bool):
    """``$SIE3D_HOME`` pointed at ``workdir/home`` (offline models linked from the real cache) while inside;
    the real cache when not ``synthetic``."""
    from ..weights import OFFLINE_MODELS, REGISTRY, PackageSource, model_dir, sie3d_home

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


@contextlib.contextmanager
def writing_weights(home: Path, seed: int):
    """Write the synthetic weights in a child process, so its ~5 GB peak is returned before loading, while
    the body runs (work that does not read the weights, e.g. importing the loaders); leaving waits for it."""
    from ..diffusion.synthetic import write_synthetic_weights

    child = multiprocessing.get_context("spawn").Process(target=write_synthetic_weights, args=(str(home), seed))
    child.start()
    try:
        yield
    except BaseException:
        child.terminate()
        child.join()
        raise
    child.join()
    if child.exitcode != 0:
        raise UserError(f"writing the synthetic weights into {home} failed (exit code {child.exitcode}); "
                        "is there ~5 GB free there? (--workdir chooses the folder)")


def dry_run_config(config: Config, device: torch.device) -> tuple[Config, list[str]]:
    """The preset with a dry run's substitutions; returns it and one note per change.

    Models that are neither part of the prior nor cached give way to offline ones (SCRFD -> dlib
    detection, FLAME -> the built-in head, DeepFace -> fer), gsplat to the torch rasterizer off CUDA,
    and the latents are never larger than the renders allow (``render.resolution / 8``).
    """
    from ..face.emotion import EMOTION_CLASSIFIERS
    from ..weights import is_available

    notes = []
    models, render, guidance = config.models, config.render, config.guidance
    changes: dict[str, dict] = {"models": {}, "render": {}, "guidance": {}, "run": {}, "conditioning": {}}
    if models.face_detector == "scrfd" and not is_available("antelopev2"):
        changes["models"]["face_detector"] = "dlib"
    if models.template == "flame" and not models.flame_model_path:
        changes["models"]["template"] = "builtin"
    classifier = EMOTION_CLASSIFIERS.get(models.emotion_loss_classifier)
    if config.loss.lambda_emotion > 0 and not is_available(classifier.weights_model):
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
