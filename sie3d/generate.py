"""Photo(s) + expression text -> a run directory holding an optimised 3D Gaussian avatar.

Three steps: prepare the subject (:func:`sie3d.subject.prepare_subject`) and paint the initial avatar
(:func:`sie3d.subject.initial_avatar`), fit it (:class:`sie3d.train.trainer.AvatarTrainer`), export it
(:func:`export`) and write what the run measured of itself (:func:`summarise`, through the face readout
:mod:`sie3d.face.readout`). The run directory's layout is :mod:`sie3d.run_dir`'s: ``avatar.ply`` (INRIA
layout, COLMAP y-down convention, at the target expression) + ``avatar.spz`` (the same, compressed, for
web viewers), ``avatar.rig`` (posable at any expression, :mod:`sie3d.avatar.rig`), ``frontal.png``, ``views/view_NNN.png`` + ``views.png`` (grid), ``turntable.mp4`` +
``turntable.gif``, ``summary.json`` (:class:`sie3d.run_dir.Summary`).
"""

from __future__ import annotations

import json
import resource
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from .avatar.ply import save_ply
from .avatar.rig import write_rig
from .avatar.spz import save_spz
from .config import Config
from .diffusion.prior import DiffusionPrior
from .face.expression_text import emotion_class
from .face.readout import FaceReadout, back_of_head_colour, dlib_descriptor, view_faces
from .render.media import (mp4_writer_missing, render_turntable, render_views, save_image, save_turntable,
                           view_grid)
from .run_dir import (AVATAR_PLY, AVATAR_RIG, AVATAR_SPZ, FRONTAL_PHOTO_EXPRESSION, FRONTAL_RENDER,
                      SUMMARY_FILE, TURNTABLE_GIF, TURNTABLE_MP4, VIEW_GRID, RunDir, RunLock, Summary,
                      has_checkpoints, input_photo_path, view_path, write_summary)
from .runtime import ModelCache, resolve_device
from .subject import PreparedSubject, initial_avatar, make_subject, prepare_subject
from .train.metrics_log import read_metrics
from .train.trainer import AvatarTrainer

EVAL_RESOLUTION = 256  # frontal / view renders for identity and landmark checks (dlib needs ~80 px faces)


def _peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: kB


@dataclass
class Exported:
    """The renders :func:`export` wrote that the summary reads: ``frontal`` and ``frontal_photo`` (the
    avatar at the photo's expression) ``[H, W, 3]`` uint8, ``views`` ``[T, H, W, 3]`` at ``azimuths``
    (degrees), ``back`` the view from behind."""

    frontal: np.ndarray
    frontal_photo: np.ndarray
    views: np.ndarray
    azimuths: np.ndarray
    back: np.ndarray


def export(trainer: AvatarTrainer, out: Path) -> Exported:
    """Write the avatar (``avatar.ply``, ``avatar.spz``, ``avatar.rig``) and its renders (frontal, views, turntable)."""
    config = trainer.config
    cams = config.cameras
    with torch.no_grad():
        final_vertices = trainer.template.deform(trainer.expression.detach())
        final = trainer.gaussians.to_world(final_vertices).detach()
        at_photo = trainer.gaussians.to_world(trainer.template.deform(trainer.photo_expression)).detach()
    save_ply(final.to("cpu"), out / AVATAR_PLY)
    save_spz(final.to("cpu"), out / AVATAR_SPZ)
    write_rig(trainer.gaussians, trainer.expression.detach(), out / AVATAR_RIG, cams)

    backend = config.render.backend
    frontal, frontal_photo = (render_views(s, [0.0], EVAL_RESOLUTION, cams, backend=backend)[0]
                              for s in (final, at_photo))
    save_image(frontal, out / FRONTAL_RENDER)
    save_image(frontal_photo, out / FRONTAL_PHOTO_EXPRESSION)
    azimuths = np.linspace(-180.0, 180.0, config.eval.n_views, endpoint=False) + 180.0 / config.eval.n_views
    views = render_views(final, azimuths, EVAL_RESOLUTION, cams, backend=backend)
    for i, image in enumerate(views):
        save_image(image, view_path(out, i))
    back = render_views(final, [180.0], EVAL_RESOLUTION, cams, backend=backend)[0]
    save_image(view_grid(final, resolution=EVAL_RESOLUTION // 2, camera_cfg=cams, backend=backend), out / VIEW_GRID)
    frames = render_turntable(final, config.eval.turntable_frames, EVAL_RESOLUTION // 2, cams, backend=backend)
    missing = mp4_writer_missing()  # a GPU machine may lack ffmpeg: the GIF still carries the turntable
    if missing is None:
        save_turntable(frames, out / TURNTABLE_MP4)
    else:
        trainer.log(f"[generate] {TURNTABLE_MP4} skipped: {missing}")
    save_turntable(frames, out / TURNTABLE_GIF)
    return Exported(frontal, frontal_photo, views, azimuths, back)


def summarise(trainer: AvatarTrainer, prepared: PreparedSubject, renders: Exported, photo_paths: list[str],
              wall_seconds: float, models: ModelCache | None = None) -> Summary:
    """What the run measured of itself: the face readout (:mod:`sie3d.face.readout`) of the photo and of
    the frontal renders, the views' faces, the back of the head, the losses and the cost."""
    config, device = trainer.config, trainer.device
    subject = prepared.subject
    readout = FaceReadout(device, config.models.emotion_crop_margin, models, config.models.landmarks)
    names = [config.models.emotion_loss_classifier, config.models.emotion_eval_classifier]
    photo_descriptor = dlib_descriptor(subject.photo, subject.face)
    records = read_metrics(trainer.run_dir)
    last = records[-1] if records else {}
    iteration_times = [r["time_iteration"] for r in records if "time_iteration" in r]
    expression_names = trainer.template.expression_names
    return Summary(
        photos=photo_paths,
        expression=config.conditioning.expression,
        expression_class=emotion_class(config.conditioning),
        intensity=config.conditioning.eta_expr,
        accessory=config.conditioning.accessory,
        preset=config.preset,
        identity_encoder=subject.identity_encoder,
        iterations=trainer.iteration,
        n_gaussians=len(trainer.gaussians),
        expression_coefficients=dict(zip(expression_names, (float(c) for c in trainer.expression.detach().cpu()))),
        final_losses={k: v for k, v in last.items() if k.startswith("loss_")},
        photo=readout.read(subject.photo, names, face=subject.face),
        frontal=readout.read(renders.frontal, names, photo_descriptor=photo_descriptor),
        photo_expression_coefficients=dict(zip(expression_names, (float(c) for c in trainer.photo_expression.cpu()))),
        frontal_photo_expression=readout.read(renders.frontal_photo, names, photo_descriptor=photo_descriptor),
        views=view_faces(renders.views, renders.azimuths),
        back_of_head=back_of_head_colour(renders.back, prepared.person.get("colours", {})),
        classifiers_missing=dict(readout.missing),
        seconds_per_iteration=float(np.mean(iteration_times)) if iteration_times else None,
        wall_seconds=wall_seconds,
        peak_memory_mb=_peak_memory_mb(device),
        nan_recoveries=trainer.recoveries,
    )


def generate(photos: Sequence[str | Path | np.ndarray], config: Config, out_dir: str | Path,
             resume: bool = False, progress: bool = False, sources: Sequence[str] | None = None,
             extra_manifest: dict[str, Any] | None = None, log: Callable[[str], None] = print,
             prior: DiffusionPrior | None = None, models: ModelCache | None = None) -> Summary:
    """Build one avatar into ``out_dir``; returns its summary (also written to ``summary.json``).

    The run directory is locked for the whole call (:class:`sie3d.run_dir.RunLock`): a second writer
    gets :class:`sie3d.run_dir.RunDirLocked` naming this process.

    Args:
        photos: paths or uint8 RGB arrays of one person (several: identity embeddings averaged).
        config: resolved config (apply the request with :meth:`sie3d.request.Request.apply`).
        resume: continue from the newest checkpoint in ``out_dir`` (same params required).
        sources: names for array photos (recorded in the summary).
        prior: an already loaded diffusion prior to guide with (``None``: built from ``config.models``).
        models: models kept across runs (a batch worker's): the prior and the emotion classifiers are
            taken from it, built into it when missing (``None``: built for this run only).
    """
    out = Path(out_dir)
    with RunLock(out, warn=log):
        return _generate(photos, config, out, resume, progress, sources, extra_manifest, log, prior,
                         models or ModelCache())


def prior_key(config: Config, device: torch.device) -> tuple[str, ...]:
    """What the prior :meth:`DiffusionPrior.from_config` builds depends on (a :class:`ModelCache` key)."""
    return ("prior", json.dumps(config.to_dict()["models"], sort_keys=True),
            str(config.conditioning.cache_embeddings), str(device))


def _generate(photos, config: Config, out: Path, resume: bool, progress: bool, sources, extra_manifest,
              log: Callable[[str], None], prior: DiffusionPrior | None, models: ModelCache) -> Summary:
    if not resume and has_checkpoints(out):
        raise FileExistsError(f"{out} already holds a run; pass --resume to continue it or choose another --out")
    device = resolve_device(config.run.device)
    subject = make_subject(photos, config.models, sources)
    inputs = []
    for i, image in enumerate(subject.photos):
        inputs.append(str(save_image(image, input_photo_path(out, i)).resolve()))
    run = RunDir.create(out, config, device, extra={"photo_sources": subject.sources, **(extra_manifest or {})})
    start = time.perf_counter()
    prepared = prepare_subject(subject, config, device)
    if prior is None and config.loss.lambda_ism > 0:
        prior = models.get(prior_key(config, device), lambda: DiffusionPrior.from_config(config, device))
    gaussians = initial_avatar(prepared, config, device)
    trainer = AvatarTrainer(config, prepared, gaussians, out, device, prior=prior, progress=progress, log=log)
    if trainer.guidance is not None:  # profile, LoRA and its scale, weights' sources and sha256
        run.manifest["prior"] = trainer.guidance.prior.manifest_entry()
        run.write_manifest()
    if resume:
        trainer.resume()
    try:
        trainer.fit()
    except BaseException as exc:
        run.finish(status="interrupted" if isinstance(exc, KeyboardInterrupt) else "failed",
                   error=f"{type(exc).__name__}: {exc}")
        raise
    wall_seconds = time.perf_counter() - start
    summary = summarise(trainer, prepared, export(trainer, out), inputs, wall_seconds, models)
    summary.expression_match = run.manifest.get("expression_match")  # how the request's text was matched
    write_summary(out, summary)
    run.finish(status="finished", summary=SUMMARY_FILE)
    distance = summary.frontal.dlib_distance
    log(f"[generate] {out}: frontal dlib distance {float('nan') if distance is None else distance:.3f}, "
        f"{summary.seconds_per_iteration or 0:.2f} s/it")
    return summary
