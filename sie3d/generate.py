"""Photo(s) + expression text -> a run directory holding an optimised 3D Gaussian avatar.

Run directory layout (what :mod:`sie3d.evaluation.evaluate` reads):

``config.yaml`` ``manifest.json`` (seed, versions, git revision, status) · ``inputs/photo_K.png`` ·
``metrics.jsonl`` (every logged iteration) · ``checkpoints/`` · ``avatar.ply`` (INRIA layout, COLMAP
y-down convention, at the target expression) + ``avatar.spz`` (the same, compressed, for web viewers) ·
``frontal.png`` · ``views/view_NNN.png`` + ``views.png`` (grid) ·
``turntable.mp4`` + ``turntable.gif`` · ``summary.json``.
"""

from __future__ import annotations

import json
import resource
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from .avatar.ply import save_ply
from .avatar.spz import save_spz
from .config import Config
from .diffusion.prior import DiffusionPrior
from .face.detect import detect_faces
from .face.emotion import emotion_box, load_emotion_classifier
from .face.expression_text import emotion_class
from .face.identity import cosine_similarity, dlib_distance, make_identity_encoder
from .face.landmarks import expression_measures, landmarks_68
from .render.media import render_turntable, render_views, save_image, save_turntable, view_grid
from .run_dir import SUMMARY_FILE, RunDir, RunLock
from .runtime import ModelCache, resolve_device, write_json_atomic
from .subject import PreparedSubject, make_subject, prepare_subject
from .train.trainer import AvatarTrainer, read_metrics
from .vocabulary import EMOTIONS
from .weights import ModelNotAvailable

EVAL_RESOLUTION = 256  # frontal / view renders for identity and landmark checks (dlib needs ~80 px faces)


def _peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: kB


def _face_report(image: np.ndarray, photo_descriptor: np.ndarray, classifiers: dict[str, Any],
                 device: torch.device, margin: float) -> dict[str, Any]:
    """Identity distance, emotion probabilities and landmark measures of one uint8 render."""
    faces = detect_faces(image, "dlib")
    if not faces:
        return {"face_found": False}
    face = faces[0]
    encoder = make_identity_encoder("dlib")
    descriptor = encoder.raw(image, face)
    report: dict[str, Any] = {
        "face_found": True,
        "dlib_distance": dlib_distance(photo_descriptor, descriptor),
        "dlib_cosine": cosine_similarity(photo_descriptor, descriptor),
        "landmarks": expression_measures(landmarks_68(image, face)),
    }
    report.update(_emotion_readings(image, face.box, classifiers, device, margin))
    return report


def view_faces(images: np.ndarray, azimuths: Sequence[float]) -> list[dict[str, Any]]:
    """Whether each ``[T, H, W, 3]`` uint8 view shows a face: dlib's HOG (the detector the photo went
    through) and YuNet (held out; it still finds faces turned ~70° away). Per view: ``azimuth``
    (degrees), ``dlib`` (bool), ``yunet`` (the best score, or None)."""
    report = []
    for image, azimuth in zip(images, azimuths):
        yunet = detect_faces(image, "yunet")
        report.append({"azimuth": float(azimuth), "dlib": bool(detect_faces(image, "dlib", landmarks=False)),
                       "yunet": max(f.score for f in yunet) if yunet else None})
    return report


def back_of_head_colour(image: np.ndarray, colours: dict[str, Any]) -> dict[str, Any]:
    """The back view's head colour against the photo's hair and skin colours.

    ``image``: ``[H, W, 3]`` uint8 render from behind on white; the head is the upper 40 % of the
    non-white silhouette (the neck below is skin on every head). ``colours``: the person fit's
    ``{"skin": [3], "hair": [3] or None}`` in [0, 1] (empty without ``models.person_colours``).

    Returns:
        ``{"colour": [3] median in [0, 1], "to_hair": RGB distance (0-255 units) or None, "to_skin": ...}``.
    """
    silhouette = (image.astype(np.int32).sum(-1) < 3 * 245)
    rows = np.nonzero(silhouette.any(1))[0]
    if not len(rows):
        return {"colour": None, "to_hair": None, "to_skin": None}
    top = rows[0] + int(0.4 * (rows[-1] - rows[0] + 1))
    colour = np.median(image[:top][silhouette[:top]], axis=0) / 255.0

    def distance(reference) -> float | None:
        return None if reference is None else float(255 * np.linalg.norm(colour - np.asarray(reference)))

    return {"colour": colour.tolist(), "to_hair": distance(colours.get("hair")), "to_skin": distance(colours.get("skin"))}


@torch.no_grad()
def _emotion_readings(image: np.ndarray, face_box, classifiers: dict[str, Any], device: torch.device,
                      margin: float) -> dict[str, dict[str, float]]:
    """``{"emotion_<classifier>": {class: probability}}`` of the face at ``face_box`` (x0, y0, x1, y1
    pixels) in a uint8 ``[H, W, 3]`` image, cropped as on photos (:func:`sie3d.face.emotion.emotion_box`)."""
    box = torch.as_tensor(emotion_box(face_box, image.shape[1], image.shape[0], margin), dtype=torch.float32,
                          device=device)
    tensor = torch.from_numpy(image).permute(2, 0, 1)[None].float().to(device) / 255.0
    return {f"emotion_{name}": dict(zip(EMOTIONS, map(float, classifier(tensor, box)[0].cpu())))
            for name, classifier in classifiers.items()}


def _classifiers(config: Config, device: torch.device,
                 models: ModelCache) -> tuple[dict[str, Any], dict[str, str]]:
    loaded, missing = {}, {}
    for name in dict.fromkeys([config.models.emotion_loss_classifier, config.models.emotion_eval_classifier]):
        try:
            loaded[name] = models.get(("emotion", name, str(device)), lambda: load_emotion_classifier(name, device))
        except ModelNotAvailable as exc:
            missing[name] = str(exc)
    return loaded, missing


def write_outputs(trainer: AvatarTrainer, run: RunDir, prepared: PreparedSubject, photo_paths: list[str],
                  wall_seconds: float, log: Callable[[str], None] = print,
                  models: ModelCache | None = None) -> dict[str, Any]:
    """Export the avatar and its renders, measure identity / expression, write ``summary.json``.

    The photo's side of every comparison (dlib descriptor, 68 landmarks, face box) comes from
    ``prepared``; only the renders are detected and measured here.
    """
    config, device, out = trainer.config, trainer.device, run.path
    cams = config.cameras
    with torch.no_grad():
        final_vertices = trainer.template.deform(trainer.expression.detach())
        final = trainer.gaussians.to_world(final_vertices).detach()
        at_photo = trainer.gaussians.to_world(trainer.template.deform(trainer.photo_expression)).detach()
    save_ply(final.to("cpu"), out / "avatar.ply")
    save_spz(final.to("cpu"), out / "avatar.spz")

    backend = config.render.backend
    frontal, frontal_photo = (render_views(s, [0.0], EVAL_RESOLUTION, cams, backend=backend)[0] for s in (final, at_photo))
    save_image(frontal, out / "frontal.png")
    save_image(frontal_photo, out / "frontal_photo_expression.png")
    azimuths = np.linspace(-180.0, 180.0, config.eval.n_views, endpoint=False) + 180.0 / config.eval.n_views
    views = render_views(final, azimuths, EVAL_RESOLUTION, cams, backend=backend)
    for i, image in enumerate(views):
        save_image(image, out / "views" / f"view_{i:03d}.png")
    back = render_views(final, [180.0], EVAL_RESOLUTION, cams, backend=backend)[0]
    save_image(view_grid(final, resolution=EVAL_RESOLUTION // 2, camera_cfg=cams, backend=backend), out / "views.png")
    frames = render_turntable(final, config.eval.turntable_frames, EVAL_RESOLUTION // 2, cams, backend=backend)
    save_turntable(frames, out / "turntable.mp4")
    save_turntable(frames, out / "turntable.gif")

    subject = prepared.subject
    photo_descriptor = prepared.descriptor
    classifiers, missing = _classifiers(config, device, models or ModelCache())
    margin = config.models.emotion_crop_margin
    photo_report: dict[str, Any] = {"landmarks": expression_measures(prepared.landmarks),
                                    **_emotion_readings(subject.photo, subject.face.box, classifiers, device, margin)}

    records = read_metrics(out)
    last = records[-1] if records else {}
    iteration_times = [r["time_iteration"] for r in records if "time_iteration" in r]
    summary = {
        "photos": photo_paths,
        "expression": config.conditioning.expression,
        "expression_class": emotion_class(config.conditioning),
        "intensity": config.conditioning.eta_expr,
        "accessory": config.conditioning.accessory,
        "preset": config.preset,
        "identity_encoder": subject.identity_encoder,
        "iterations": trainer.iteration,
        "n_gaussians": len(trainer.gaussians),
        "expression_coefficients": dict(zip(trainer.template.expression_names,
                                            (float(c) for c in trainer.expression.detach().cpu()))),
        "final_losses": {k: v for k, v in last.items() if k.startswith("loss_")},
        "photo": photo_report,
        "frontal": _face_report(frontal, photo_descriptor, classifiers, device, margin),
        "photo_expression_coefficients": dict(zip(trainer.template.expression_names,
                                                  (float(c) for c in trainer.photo_expression.cpu()))),
        "frontal_photo_expression": _face_report(frontal_photo, photo_descriptor, classifiers, device, margin),
        "views": view_faces(views, azimuths),
        "back_of_head": back_of_head_colour(back, prepared.person.get("colours", {})),
        "classifiers_missing": missing,
        "seconds_per_iteration": float(np.mean(iteration_times)) if iteration_times else None,
        "wall_seconds": wall_seconds,
        "peak_memory_mb": _peak_memory_mb(device),
        "nan_recoveries": trainer.recoveries,
    }
    write_json_atomic(out / SUMMARY_FILE, summary)
    return summary


def generate(photos: Sequence[str | Path | np.ndarray], config: Config, out_dir: str | Path,
             resume: bool = False, progress: bool = False, sources: Sequence[str] | None = None,
             extra_manifest: dict[str, Any] | None = None, log: Callable[[str], None] = print,
             prior: DiffusionPrior | None = None, models: ModelCache | None = None) -> dict[str, Any]:
    """Build one avatar into ``out_dir``; returns the summary.

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
              log: Callable[[str], None], prior: DiffusionPrior | None, models: ModelCache) -> dict[str, Any]:
    if not resume and (out / "checkpoints").is_dir() and any((out / "checkpoints").iterdir()):
        raise FileExistsError(f"{out} already holds a run; pass --resume to continue it or choose another --out")
    device = resolve_device(config.run.device)
    subject = make_subject(photos, config.models, sources)
    inputs = []
    for i, image in enumerate(subject.photos):
        inputs.append(str(save_image(image, out / "inputs" / f"photo_{i}.png").resolve()))
    run = RunDir.create(out, config, device, extra={"photo_sources": subject.sources, **(extra_manifest or {})})
    start = time.perf_counter()
    prepared = prepare_subject(subject, config, device)
    if prior is None and config.loss.lambda_ism > 0:
        prior = models.get(prior_key(config, device), lambda: DiffusionPrior.from_config(config, device))
    trainer = AvatarTrainer(config, prepared, out, device, prior=prior, progress=progress, log=log)
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
    summary = write_outputs(trainer, run, prepared, inputs, time.perf_counter() - start, log, models)
    run.finish(status="finished", summary=SUMMARY_FILE)
    log(f"[generate] {out}: frontal dlib distance "
        f"{summary['frontal'].get('dlib_distance', float('nan')):.3f}, {summary['seconds_per_iteration'] or 0:.2f} s/it")
    return summary


def load_summary(run_dir: str | Path) -> dict[str, Any]:
    return json.loads((Path(run_dir) / SUMMARY_FILE).read_text())
