"""The :class:`Evaluator`: identity, emotion and distribution metrics of one run directory, with its
models loaded once (lazily) and detections / features cached by path. Emotions are read through the
face readout (:mod:`sie3d.face.readout`), as the run's own ``summary.json`` is, cropped with the run's
``models.emotion_crop_margin``. The metric definitions are in :mod:`sie3d.evaluation.evaluate`."""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..config import Config
from ..images import PhotoWarning, load_photo
from ..face.emotion import DEFAULT_CROP_MARGIN
from ..face.readout import FaceReadout
from ..runtime import ModelCache, resolve_device
from ..weights import ModelNotAvailable, is_available
from .features import FRECHET_LABELS, KID_LABELS, make_feature_extractor, resolve_feature_space
from .metrics import expression_accuracy, frechet_distance_from_features, identity_similarity, kid
from .run_files import MIN_RENDER_SIDE, SMALL_IMAGE_SIDE, RunFiles

IDENTITY_AUTO_ORDER = ("arcface-metric", "sface", "arcface", "dlib")  # held-out judges first; first that loads wins
EMOTION_ROLES = (("loss", "emotion_loss_classifier"), ("held_out", "emotion_eval_classifier"))


def _load(path: Path, render: bool) -> np.ndarray:
    if not render:
        return load_photo(path)
    with warnings.catch_warnings():  # renders with alpha are composited on white: expected, not news
        warnings.simplefilter("ignore", PhotoWarning)
        return load_photo(path, min_side=MIN_RENDER_SIDE)


def _unavailable(reason: str) -> str:
    """A short reason for a missing model (the first line of its error), keeping the command that fixes it."""
    message = reason.splitlines()[0] if reason else "unavailable"
    if "fetch it with:" in message:
        return "not cached; fetch it with: " + message.split("fetch it with:", 1)[1].split("[", 1)[0].strip()
    return message


def mean_or_none(values: Sequence[float]) -> float | None:
    """Mean of the values that are neither None nor NaN; None when there are none."""
    values = [v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    return float(np.mean(values)) if values else None


class Evaluator:
    """Holds the models (loaded once, lazily) and evaluates runs.

    Args:
        features: ``auto`` (Inception when cached, else the dlib substitute) | ``inception`` | ``dlib``.
        detector: ``auto`` (SCRFD when antelopev2 is cached, else dlib) | ``dlib`` | ``haar`` | ``scrfd``.
        identity: ``auto`` (first of :data:`IDENTITY_AUTO_ORDER` that loads) or an encoder name.
        device: torch device for the emotion classifiers and Inception (``auto``: CUDA when present).
        kid_subsets, kid_subset_size: KID subsets (subset size is capped by the sample sizes).
    """

    def __init__(self, features: str = "auto", detector: str = "auto", identity: str = "auto",
                 device: str | torch.device = "cpu", kid_subsets: int = 100, kid_subset_size: int = 1000):
        from ..face.detect import DETECTORS

        self.space = resolve_feature_space(features)
        self.detector = ("scrfd" if is_available("antelopev2") else "dlib") if detector == "auto" else detector
        if self.detector not in DETECTORS:
            raise ValueError(f"unknown face detector '{detector}'; choose auto or one of {', '.join(DETECTORS.names())}")
        self.identity_request = identity
        self.device = resolve_device(str(device))
        self.kid_subsets = kid_subsets
        self.kid_subset_size = kid_subset_size
        self._extractor = None
        self._encoder = None
        self._identity_notes: list[str] = []
        self._conditioning: dict[str, Any] = {}  # conditioning encoder name -> encoder or why not
        self._models = ModelCache()  # the emotion classifiers, shared by the readouts of every crop margin
        self._faces: dict[Path, Any] = {}
        self._features: dict[Path, np.ndarray | None] = {}

    @classmethod
    def from_config(cls, config: Config, device: str | torch.device = "cpu") -> "Evaluator":
        """An evaluator with a preset's ``eval`` settings (feature space, ID encoder, KID subsets)."""
        return cls(features=config.eval.fid_features, identity=config.eval.identity_model, device=device,
                   kid_subsets=config.eval.kid_subsets, kid_subset_size=config.eval.kid_subset_size)

    # ----- models

    @property
    def identity_notes(self) -> list[str]:
        """Why ``auto`` skipped encoders, and caveats about the one it chose."""
        self.identity_encoder()
        return list(self._identity_notes)

    @property
    def extractor(self):
        if self._extractor is None:
            self._extractor = make_feature_extractor(self.space, self.device)
        return self._extractor

    def identity_encoder(self):
        """The identity encoder; ``auto`` skips encoders whose weights or runtime are missing."""
        if self._encoder is None:
            from ..face.identity import make_identity_encoder

            names = IDENTITY_AUTO_ORDER if self.identity_request == "auto" else (self.identity_request,)
            for name in names:
                try:
                    self._encoder = make_identity_encoder(name)
                    break
                except (ModelNotAvailable, ImportError) as exc:
                    if self.identity_request != "auto":
                        raise
                    self._identity_notes.append(f"{name} unavailable: {_unavailable(str(exc) or type(exc).__name__)}")
            if self._encoder.name == "arcface":
                self._identity_notes.append("arcface is the recognizer that conditions the prior, "
                                            "not an independent judge (fetch id-metric-arcface)")
        return self._encoder

    def readout(self, margin: float) -> FaceReadout:
        """The face readout cropping emotions with ``margin`` (a run's ``models.emotion_crop_margin``)."""
        return FaceReadout(self.device, margin, self._models)

    def emotion_classifier(self, name: str, readout: FaceReadout | None = None):
        """A loaded classifier, or the reason it is unavailable (a string); a broken file raises."""
        readout = readout or self.readout(DEFAULT_CROP_MARGIN)  # the margin does not matter for loading
        classifier = readout.classifier(name)
        return _unavailable(readout.missing[name]) if classifier is None else classifier

    # ----- per image

    def face(self, path: Path, image: np.ndarray):
        """Best face in an image (None when none is found), cached by path."""
        if path not in self._faces:
            from ..face.detect import detect_faces

            upsample = 2 if self.detector == "dlib" and max(image.shape[:2]) < SMALL_IMAGE_SIDE else None
            faces = detect_faces(image, backend=self.detector, upsample=upsample)
            self._faces[path] = faces[0] if faces else None  # ranked best first
        return self._faces[path]

    def features(self, paths: Sequence[Path], images: dict[Path, np.ndarray] | None = None) -> np.ndarray:
        """[M, D] features of the images that embed (the dlib space drops faceless ones); cached by path."""
        missing = [p for p in paths if p not in self._features]
        if missing:
            arrays = [images[p] if images and p in images else _load(p, render=False) for p in missing]
            if self.space == "dlib":  # reuse this evaluator's detections
                result = self.extractor(arrays, faces=[self.face(p, a) for p, a in zip(missing, arrays)])
            else:
                result = self.extractor(arrays)
            self._features.update(dict.fromkeys(missing))  # None: no feature (no face in the dlib space)
            for row, index in zip(result.values, result.kept):
                self._features[missing[index]] = row
        rows = [self._features[p] for p in paths if self._features[p] is not None]
        return np.stack(rows) if rows else np.zeros((0, 0))

    # ----- metrics

    def distribution(self, render_features: np.ndarray, reference_features: np.ndarray) -> dict[str, Any]:
        """Fréchet distance and KID between two feature sets, or why they cannot be computed."""
        result: dict[str, Any] = {
            "space": self.space, "frechet_label": FRECHET_LABELS[self.space], "kid_label": KID_LABELS[self.space],
            "model": self.extractor.name, "n_renders": int(len(render_features)),
            "n_reference": int(len(reference_features)), "frechet": None, "kid_mean": None, "kid_std": None,
            "note": "",
        }
        if len(render_features) < 2 or len(reference_features) < 2:
            result["note"] = (f"needs at least 2 embedded images on each side (renders {len(render_features)}, "
                              f"reference {len(reference_features)}): evaluate several identities together (the "
                              "pooled group value) or pass --reference DIR")
            return result
        result["frechet"] = frechet_distance_from_features(render_features, reference_features)
        result["kid_mean"], result["kid_std"] = kid(render_features, reference_features,
                                                    subsets=self.kid_subsets, subset_size=self.kid_subset_size)
        return result

    def identity(self, run: RunFiles, images: dict[Path, np.ndarray]) -> dict[str, Any]:
        """ID with the evaluation's (held-out) encoder."""
        return self._identity_with(self.identity_encoder(), run, images, self.identity_notes)

    def conditioning_identity(self, run: RunFiles, images: dict[Path, np.ndarray]) -> dict[str, Any]:
        """ID with the encoder that conditioned the run (``models.identity``): what the prior was
        steered toward, not an independent judge; reported beside :meth:`identity`."""
        name = run.config.models.identity
        if name not in self._conditioning:
            from ..face.identity import make_identity_encoder

            try:
                self._conditioning[name] = make_identity_encoder(name)
            except (ModelNotAvailable, ImportError) as exc:
                self._conditioning[name] = _unavailable(str(exc) or type(exc).__name__)
        encoder = self._conditioning[name]
        if isinstance(encoder, str):
            return {"model": name, "detector": self.detector, "notes": [f"unavailable: {encoder}"], "frontal": None,
                    "mean": None, "min": None, "per_render": {}, "n_renders_with_face": 0}
        return self._identity_with(encoder, run, images, ["the encoder that conditions the run: not held out"])

    def _identity_with(self, encoder, run: RunFiles, images: dict[Path, np.ndarray], notes: list[str]) -> dict[str, Any]:
        result: dict[str, Any] = {"model": encoder.name, "detector": self.detector,
                                  "notes": list(notes), "frontal": None, "mean": None,
                                  "min": None, "per_render": {}, "n_renders_with_face": 0}
        refs = [encoder.embed(images[p], f) for p in run.photos if (f := self.face(p, images[p])) is not None]
        if not refs:
            result["notes"].append("no face found in the input photo(s)")
            return result
        ref = np.mean(refs, axis=0)
        for path in run.renders:
            face = self.face(path, images[path])
            if face is not None:
                value = float(identity_similarity(ref, encoder.embed(images[path], face))[0, 0])
                result["per_render"][path.name] = value
        values = list(result["per_render"].values())
        result.update(frontal=result["per_render"].get(run.frontal.name), mean=mean_or_none(values),
                      min=min(values) if values else None, n_renders_with_face=len(values))
        if not values:
            result["notes"].append("no face found in any render")
        return result

    def emotion(self, run: RunFiles, images: dict[Path, np.ndarray]) -> dict[str, Any]:
        """NPS and target accuracy per classifier role, over the renders in which a face is found
        (read by :meth:`~sie3d.face.readout.FaceReadout.probabilities`). Faceless renders (back views) are
        left out; when no render has a face, the whole frontal render is classified and flagged."""
        from ..face.emotion import neutrality_score
        from ..face.expression_text import emotion_class
        from ..vocabulary import EMOTIONS

        readout = self.readout(run.config.models.emotion_crop_margin)
        target = emotion_class(run.config.conditioning)  # the class of the (free-text) expression
        faces = {p: self.face(p, images[p]) for p in run.renders}
        classified = [p for p in run.renders if faces[p] is not None] or [run.frontal]
        out: dict[str, Any] = {"target": target, "classified": [p.name for p in classified]}
        names = {role: getattr(run.config.models, key) for role, key in EMOTION_ROLES}
        for role, _ in EMOTION_ROLES:
            entry: dict[str, Any] = {"classifier": names[role], "available": False, "nps": None,
                                     "p_neutral_mean": None, "accuracy": None, "predicted": {}}
            notes = []
            if role == "held_out" and names[role] == names["loss"]:
                notes.append("same classifier as the loss: not held out")
            classifier = self.emotion_classifier(names[role], readout)
            if isinstance(classifier, str):
                notes.append(f"unavailable: {classifier}")
            else:
                probs = torch.stack([readout.probabilities(classifier, images[p], None if faces[p] is None
                                                           else faces[p].box) for p in classified])  # [V, 7]
                entry.update(available=True, nps=float(neutrality_score(probs)),
                             p_neutral_mean=float(probs[:, EMOTIONS.index("neutral")].mean()),
                             predicted={p.name: EMOTIONS[int(i)] for p, i in zip(classified, probs.argmax(1))})
                if target in EMOTIONS:
                    entry["accuracy"] = expression_accuracy(probs.numpy(), target, EMOTIONS)
                else:
                    notes.append(f"target '{target}' is not one of the classifier's classes: no accuracy")
                if faces[classified[0]] is None:
                    notes.append("no face found in any render: the whole frontal render was classified")
            entry["note"] = "; ".join(notes)
            out[role] = entry
        return out

    def evaluate_run(self, run: RunFiles, reference: Sequence[Path] | None = None) -> dict[str, Any]:
        """All metrics of one run (see the module docstring); ``reference`` defaults to its photos."""
        images = {p: _load(p, render=False) for p in run.photos}
        images.update({p: _load(p, render=True) for p in run.renders})
        render_features = self.features(run.renders, images)
        reference_features = self.features(list(reference) if reference else run.photos, images)
        return {
            "run": run.name, "run_dir": str(run.run_dir), "group": run.group, "preset": run.config.preset,
            "params_hash": run.config.params_hash(), "photos": [str(p) for p in run.photos],
            "n_renders": len(run.renders), "reference": "reference directory" if reference else "input photos",
            "identity": self.identity(run, images),
            "identity_conditioning": self.conditioning_identity(run, images),
            "emotion": self.emotion(run, images),
            "distribution": self.distribution(render_features, reference_features),
        }
