"""Evaluate generated avatars: identity similarity, NPS and target-expression accuracy with two
emotion classifiers, and a distribution distance (FID/KID or the labelled dlib substitute).

Run directory layout read here (the trainer writes it; the names are the constants below)::

    <run>/config.yaml         resolved config (sie3d.config.save_config)
    <run>/manifest.json       sie3d.runtime.RunDir manifest; optional "ablation" key groups runs
    <run>/summary.json        {"photos": [input photo paths, absolute or relative to <run>], ...}
    <run>/frontal.png         the frontal evaluation render
    <run>/views/*.png         further renders (or <run>/renders/*.png)

Outputs: ``<run>/metrics.json`` and ``<run>/metrics.csv`` per run; in ``--out``: ``runs.csv`` (one
row per run), ``groups.csv`` (runs pooled per group: ablation name, else the run's parent
directory), ``metrics.md`` (both tables with the models that produced them) and ``evaluation.json``.

Metrics per run:

* **ID**: cosine similarity between the identity embedding of the input photo(s) and of every
  render in which a face is found (frontal, and mean / min over all renders); the encoder is named.
* **NPS** (mean ``-ln p_neutral`` over the renders in which a face is found) and **target-expression
  accuracy** (fraction of them whose top class is ``conditioning.expression``), with the classifier
  of the expression loss (``models.emotion_loss_classifier``) and the held-out one
  (``models.emotion_eval_classifier``) side by side. A classifier whose weights are missing is
  reported as unavailable, with the reason.
* **Distribution distance** between all renders and the reference images (``--reference DIR``,
  else the input photos): FID/KID with Inception, or the Fréchet distance / MMD² in dlib-descriptor
  space, labelled as such. Both need at least 2 embedded images per side; with one input photo per
  run only the pooled group value (or ``--reference``) can be computed, and the reason is recorded.
"""

from __future__ import annotations

import csv
import json
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .ablations import ABLATIONS
from ..config import Config, ConfigError, config_from_dict, read_params_file
from .features import FRECHET_LABELS, KID_LABELS, make_feature_extractor, resolve_feature_space
from ..images import PhotoWarning, load_photo
from .metrics import expression_accuracy, frechet_distance_from_features, identity_similarity, kid
from .paper_tables import OurRow, Provenance, markdown_table
from ..runtime import resolve_device, write_json_atomic
from ..weights import ModelNotAvailable, is_available

# --------------------------------------------------------------------------- run directory layout

CONFIG_FILE = "config.yaml"
MANIFEST_FILE = "manifest.json"
SUMMARY_FILE = "summary.json"
SUMMARY_PHOTOS_KEY = "photos"  # list of input photo paths (a single string is accepted)
GROUP_KEY = "ablation"  # in manifest.json or summary.json; default: the run's parent directory name
FRONTAL_RENDER = "frontal.png"
VIEW_DIRS = ("views", "renders")  # the first that exists holds the other renders
RENDER_GLOB = "*.png"
MIN_RENDER_SIDE = 16
SMALL_IMAGE_SIDE = 128  # below this, dlib's HOG detector runs on a 4x upsampled image (faces ~25 px wide)

METRICS_JSON = "metrics.json"
METRICS_CSV = "metrics.csv"
RUNS_CSV = "runs.csv"
GROUPS_CSV = "groups.csv"
TABLE_MD = "metrics.md"
EVALUATION_JSON = "evaluation.json"
REFERENCE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")

IDENTITY_AUTO_ORDER = ("arcface-metric", "arcface", "dlib")  # first that loads wins
EMOTION_ROLES = (("loss", "emotion_loss_classifier"), ("held_out", "emotion_eval_classifier"))


class RunLayoutError(FileNotFoundError):
    """A run directory lacks a file evaluation needs (names the file and who writes it)."""


@dataclass
class RunFiles:
    """The files of one run directory, validated."""

    run_dir: Path
    name: str
    group: str
    config: Config
    photos: list[Path]
    frontal: Path
    views: list[Path]
    summary: dict[str, Any] = field(default_factory=dict)
    manifest: dict[str, Any] = field(default_factory=dict)

    @property
    def renders(self) -> list[Path]:
        """Frontal render first, then the other views (sorted by name)."""
        return [self.frontal, *self.views]


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except ValueError as exc:
        raise RunLayoutError(f"{path} is not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise RunLayoutError(f"{path} must hold a JSON object")
    return data


def _resolve_photo(entry: str, run_dir: Path) -> Path:
    path = Path(entry).expanduser()
    candidates = [path] if path.is_absolute() else [run_dir / path, Path.cwd() / path]
    for candidate in candidates:
        if candidate.is_file():
            return candidate.resolve()
    raise RunLayoutError(f"input photo {entry!r} listed in {run_dir / SUMMARY_FILE} was not found "
                         f"(looked at {', '.join(str(c) for c in candidates)}); fix the path or move the photo back")


def read_run(run_dir: str | Path) -> RunFiles:
    """Validate a run directory and list its files (see the module docstring for the layout).

    Raises:
        RunLayoutError: a required file is missing or malformed.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise RunLayoutError(f"run directory not found: {run_dir}")
    for required, writer in ((CONFIG_FILE, "the trainer (save_config)"), (SUMMARY_FILE, "the trainer"),
                             (FRONTAL_RENDER, "the trainer's final renders")):
        if not (run_dir / required).is_file():
            raise RunLayoutError(f"{run_dir} has no {required} (written by {writer}); is it a finished "
                                 f"`sie3d generate` run directory?")
    try:
        config = config_from_dict(read_params_file(run_dir / CONFIG_FILE))
    except ConfigError as exc:
        raise RunLayoutError(f"{run_dir / CONFIG_FILE}: {exc}") from None
    summary = _read_json(run_dir / SUMMARY_FILE)
    manifest = _read_json(run_dir / MANIFEST_FILE) if (run_dir / MANIFEST_FILE).is_file() else {}
    entries = summary.get(SUMMARY_PHOTOS_KEY)
    if isinstance(entries, str):
        entries = [entries]
    if not entries or not all(isinstance(e, str) for e in entries):
        raise RunLayoutError(f"{run_dir / SUMMARY_FILE} must list the input photo paths under "
                             f"\"{SUMMARY_PHOTOS_KEY}\"")
    photos = [_resolve_photo(entry, run_dir) for entry in entries]
    view_dir = next((run_dir / d for d in VIEW_DIRS if (run_dir / d).is_dir()), None)
    views = sorted(view_dir.glob(RENDER_GLOB)) if view_dir is not None else []
    group = str(manifest.get(GROUP_KEY) or summary.get(GROUP_KEY) or run_dir.resolve().parent.name)
    return RunFiles(run_dir=run_dir, name=run_dir.name, group=group, config=config, photos=photos,
                    frontal=run_dir / FRONTAL_RENDER, views=views, summary=summary, manifest=manifest)


def reference_images(directory: str | Path) -> list[Path]:
    """Image files (``REFERENCE_SUFFIXES``) directly inside ``directory``, sorted."""
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"reference directory not found: {directory}")
    files = sorted(p for p in directory.iterdir() if p.suffix.lower() in REFERENCE_SUFFIXES and p.is_file())
    if not files:
        raise FileNotFoundError(f"{directory} holds no images ({', '.join(REFERENCE_SUFFIXES)})")
    return files


def _load(path: Path, render: bool) -> np.ndarray:
    if not render:
        return load_photo(path)
    with warnings.catch_warnings():  # renders with alpha are composited on white: expected, not news
        warnings.simplefilter("ignore", PhotoWarning)
        return load_photo(path, min_side=MIN_RENDER_SIDE)


def _unavailable(exc: Exception) -> str:
    """A short reason for a missing model, keeping the command that fixes it."""
    message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    if "fetch it with:" in message:
        return "not cached; fetch it with: " + message.split("fetch it with:", 1)[1].split("[", 1)[0].strip()
    return message


def _mean(values: Sequence[float]) -> float | None:
    values = [v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    return float(np.mean(values)) if values else None


# --------------------------------------------------------------------------- evaluator


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
        from ..face.detect import BACKENDS

        self.space = resolve_feature_space(features)
        self.detector = ("scrfd" if is_available("antelopev2") else "dlib") if detector == "auto" else detector
        if self.detector not in BACKENDS:
            raise ValueError(f"unknown face detector '{detector}'; choose auto or one of {', '.join(BACKENDS)}")
        self.identity_request = identity
        self.device = resolve_device(str(device))
        self.kid_subsets = kid_subsets
        self.kid_subset_size = kid_subset_size
        self._extractor = None
        self._encoder = None
        self._identity_notes: list[str] = []
        self._classifiers: dict[str, Any] = {}
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
                    self._identity_notes.append(f"{name} unavailable: {_unavailable(exc)}")
            if self._encoder.name == "arcface":
                self._identity_notes.append("arcface is the recognizer that conditions the prior, "
                                            "not an independent judge (fetch id-metric-arcface)")
        return self._encoder

    def emotion_classifier(self, name: str):
        """A loaded classifier, or the reason it is unavailable (a string)."""
        if name not in self._classifiers:
            from ..face.emotion import load_emotion_classifier

            try:
                self._classifiers[name] = load_emotion_classifier(name, device=self.device)
            except ModelNotAvailable as exc:  # absent weights are reported; a broken file raises
                self._classifiers[name] = _unavailable(exc)
        return self._classifiers[name]

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
        encoder = self.identity_encoder()
        result: dict[str, Any] = {"model": encoder.name, "detector": self.detector,
                                  "notes": self.identity_notes, "frontal": None, "mean": None,
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
        result.update(frontal=result["per_render"].get(run.frontal.name), mean=_mean(values),
                      min=min(values) if values else None, n_renders_with_face=len(values))
        if not values:
            result["notes"].append("no face found in any render")
        return result

    def emotion(self, run: RunFiles, images: dict[Path, np.ndarray]) -> dict[str, Any]:
        """NPS and target accuracy per classifier role, over the renders in which a face is found
        (cropped with :func:`~sie3d.face.emotion.emotion_box`). Faceless renders (back views) are
        left out; when no render has a face, the whole frontal render is classified and flagged."""
        from ..face.emotion import EMOTIONS, emotion_box, image_to_tensor, neutrality_score

        target = run.config.conditioning.expression.strip().lower()
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
            classifier = self.emotion_classifier(names[role])
            if isinstance(classifier, str):
                notes.append(f"unavailable: {classifier}")
            else:
                probs = []
                with torch.no_grad():
                    for path in classified:
                        image, face = images[path], faces[path]
                        box = None if face is None else torch.as_tensor(
                            emotion_box(face.box, image.shape[1], image.shape[0]), dtype=torch.float32,
                            device=self.device)[None]
                        probs.append(classifier(image_to_tensor(image, self.device), box)[0].cpu())
                probs = torch.stack(probs)  # [V, 7]
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
            "emotion": self.emotion(run, images),
            "distribution": self.distribution(render_features, reference_features),
        }


# --------------------------------------------------------------------------- flattening and tables


def flat_row(metrics: dict[str, Any]) -> dict[str, Any]:
    """One CSV row of a run's metrics (scalars only; per-render details stay in the JSON)."""
    ident, emo, dist = metrics["identity"], metrics["emotion"], metrics["distribution"]
    row = {
        "run": metrics["run"], "group": metrics["group"], "preset": metrics["preset"],
        "n_renders": metrics["n_renders"],
        "id_model": ident["model"], "id_frontal": ident["frontal"], "id_mean": ident["mean"], "id_min": ident["min"],
        "id_renders_with_face": ident["n_renders_with_face"], "target_expression": emo["target"],
    }
    for role, _ in EMOTION_ROLES:
        entry = emo[role]
        row.update({f"{role}_classifier": entry["classifier"], f"{role}_available": entry["available"],
                    f"{role}_nps": entry["nps"], f"{role}_p_neutral": entry["p_neutral_mean"],
                    f"{role}_accuracy": entry["accuracy"]})
    row.update({"distance_space": dist["space"], "frechet_label": dist["frechet_label"], "frechet": dist["frechet"],
                "kid_label": dist["kid_label"], "kid_mean": dist["kid_mean"], "kid_std": dist["kid_std"],
                "distance_note": dist["note"]})
    return row


def write_csv(path: Path, rows: Sequence[dict[str, Any]]) -> None:
    fields = list(dict.fromkeys(k for row in rows for k in row))
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields)
        writer.writeheader()
        writer.writerows({k: "" if v is None else v for k, v in row.items()} for row in rows)


def _fmt(value: Any, digits: int = 4) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _group_summary(name: str, results: list[dict[str, Any]], distribution: dict[str, Any]) -> dict[str, Any]:
    summary = {"group": name, "runs": len(results), "renders": sum(r["n_renders"] for r in results),
               "id_frontal": _mean([r["identity"]["frontal"] for r in results]),
               "id_mean": _mean([r["identity"]["mean"] for r in results])}
    for role, _ in EMOTION_ROLES:
        entries = [r["emotion"][role] for r in results]
        summary[f"{role}_classifier"] = "/".join(sorted({e["classifier"] for e in entries}))
        summary[f"{role}_nps"] = _mean([e["nps"] for e in entries])
        summary[f"{role}_accuracy"] = _mean([e["accuracy"] for e in entries])
    summary.update({"frechet": distribution["frechet"], "kid_mean": distribution["kid_mean"],
                    "kid_std": distribution["kid_std"], "n_reference": distribution["n_reference"],
                    "n_renders_embedded": distribution["n_renders"], "distance_note": distribution["note"]})
    return summary


def _markdown(evaluation: dict[str, Any]) -> str:
    info = evaluation["models"]
    frechet, kid_label = FRECHET_LABELS[info["space"]], KID_LABELS[info["space"]]
    lines = [
        f"# Evaluation of {len(evaluation['runs'])} run(s)",
        "",
        f"- distribution distance: **{frechet}**; {kid_label} (mean ± std over subsets); features: "
        f"{info['feature_model']}; reference: {evaluation['reference']}",
        f"- identity: {info['identity']} cosine similarity (detector {info['detector']})"
        + (f"; {'; '.join(info['identity_notes'])}" if info["identity_notes"] else ""),
        f"- emotion: NPS = mean -ln p_neutral; accuracy = top class equals the target expression; "
        f"classifiers unavailable: {', '.join(info['unavailable_classifiers']) or 'none'}",
        "",
        "## Pooled per group",
        "",
    ]
    headers = ["group", "runs", "renders", f"{frechet} ↓", f"KID ↓ ({info['space']})", "ID frontal ↑", "ID mean ↑",
               "NPS ↓ loss clf", "NPS ↓ held-out clf", "acc ↑ loss clf", "acc ↑ held-out clf", "loss / held-out clf"]
    rows = [[g["group"], g["runs"], g["renders"], _fmt(g["frechet"]),
             "n/a" if g["kid_mean"] is None else f"{g['kid_mean']:.4f} ± {g['kid_std']:.4f}",
             _fmt(g["id_frontal"]), _fmt(g["id_mean"]), _fmt(g["loss_nps"]), _fmt(g["held_out_nps"]),
             _fmt(g["loss_accuracy"], 2), _fmt(g["held_out_accuracy"], 2),
             f"{g['loss_classifier']} / {g['held_out_classifier']}"] for g in evaluation["groups"]]
    lines += [markdown_table(headers, rows), "", "## Per run", ""]
    headers = ["run", "group", "target", "ID frontal ↑", "ID mean ↑ (faces/renders)", "NPS ↓ loss clf",
               "NPS ↓ held-out clf", "acc ↑ loss clf", "acc ↑ held-out clf", f"{frechet} ↓"]
    rows = []
    for r in evaluation["runs"]:
        ident, emo = r["identity"], r["emotion"]
        rows.append([r["run"], r["group"], emo["target"], _fmt(ident["frontal"]),
                     f"{_fmt(ident['mean'])} ({ident['n_renders_with_face']}/{r['n_renders']})",
                     _fmt(emo["loss"]["nps"]), _fmt(emo["held_out"]["nps"]), _fmt(emo["loss"]["accuracy"], 2),
                     _fmt(emo["held_out"]["accuracy"], 2), _fmt(r["distribution"]["frechet"])])
    lines += [markdown_table(headers, rows), ""]
    notes = sorted({f"{role} classifier {r['emotion'][role]['classifier']}: {r['emotion'][role]['note']}"
                    for r in evaluation["runs"] for role, _ in EMOTION_ROLES if r["emotion"][role]["note"]})
    notes += sorted({f"group {g['group']}: {g['distance_note']}" for g in evaluation["groups"] if g["distance_note"]})
    if notes:
        lines += ["Notes:", "", *(f"- {n}" for n in notes), ""]
    return "\n".join(lines)


# --------------------------------------------------------------------------- entry points


def write_run_metrics(run: RunFiles, metrics: dict[str, Any]) -> None:
    """``metrics.json`` and the one-row ``metrics.csv`` into the run directory."""
    write_json_atomic(run.run_dir / METRICS_JSON, metrics)
    write_csv(run.run_dir / METRICS_CSV, [flat_row(metrics)])


def evaluate_run_dir(run_dir: str | Path, evaluator: Evaluator,
                     reference: Sequence[Path] | None = None) -> dict[str, Any]:
    """Evaluate one run directory and write its ``metrics.json`` / ``metrics.csv`` (no combined tables).

    The evaluator caches detections and features by path, so a later :func:`evaluate_runs` over the
    same runs with the same evaluator only re-runs the cheap per-run steps.
    """
    run = read_run(run_dir)
    metrics = evaluator.evaluate_run(run, reference)
    write_run_metrics(run, metrics)
    return metrics


def evaluate_runs(run_dirs: Sequence[str | Path], out_dir: str | Path, reference_dir: str | Path | None = None,
                  evaluator: Evaluator | None = None, **evaluator_options: Any) -> dict[str, Any]:
    """Evaluate runs, write per-run files into each run and the combined tables into ``out_dir``.

    Args:
        run_dirs: run directories (layout in the module docstring); all are validated first.
        out_dir: where ``runs.csv``, ``groups.csv``, ``metrics.md``, ``evaluation.json`` go.
        reference_dir: reference images for the distribution distance; default the input photos.
        evaluator: a configured :class:`Evaluator` (else one is built from ``evaluator_options``).

    Returns:
        the combined evaluation (also in ``evaluation.json``): ``runs``, ``groups``, ``models``.
    """
    if not run_dirs:
        raise ValueError("give at least one run directory")
    runs = [read_run(d) for d in run_dirs]
    names = [r.name for r in runs]
    reference = reference_images(reference_dir) if reference_dir else None
    evaluator = evaluator or Evaluator(**evaluator_options)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    results = []
    for run in runs:
        metrics = evaluator.evaluate_run(run, reference)
        if names.count(run.name) > 1:  # same leaf name in two groups: keep rows distinguishable
            metrics["run"] = f"{run.group}/{run.name}"
        write_run_metrics(run, metrics)
        results.append(metrics)

    groups = []
    for group in dict.fromkeys(r.group for r in runs):
        members = [(run, res) for run, res in zip(runs, results) if run.group == group]
        group_reference = reference or list(dict.fromkeys(p for run, _ in members for p in run.photos))
        distribution = evaluator.distribution(
            evaluator.features([p for run, _ in members for p in run.renders]), evaluator.features(group_reference))
        groups.append(_group_summary(group, [res for _, res in members], distribution))

    classifier_names = {r["emotion"][role]["classifier"] for r in results for role, _ in EMOTION_ROLES}
    evaluation = {
        "reference": f"{reference_dir} ({len(reference)} images)" if reference else "the runs' input photos",
        "models": {
            "space": evaluator.space, "feature_model": evaluator.extractor.name,
            "frechet_label": FRECHET_LABELS[evaluator.space], "kid_label": KID_LABELS[evaluator.space],
            "identity": evaluator.identity_encoder().name, "identity_notes": evaluator.identity_notes,
            "detector": evaluator.detector, "kid_subsets": evaluator.kid_subsets,
            "kid_subset_size": evaluator.kid_subset_size,
            "unavailable_classifiers": sorted(n for n in classifier_names
                                              if isinstance(evaluator.emotion_classifier(n), str)),
        },
        "groups": groups,
        "runs": results,
    }
    write_csv(out_dir / RUNS_CSV, [flat_row(r) for r in results])
    write_csv(out_dir / GROUPS_CSV, groups)
    (out_dir / TABLE_MD).write_text(_markdown(evaluation))
    write_json_atomic(out_dir / EVALUATION_JSON, evaluation)
    return evaluation


def paper_rows(evaluation: dict[str, Any]) -> tuple[list[OurRow], Provenance]:
    """Our group results as rows for :mod:`sie3d.evaluation.paper_tables` (groups named by ablation get the
    paper's labels) and the provenance line that must accompany them."""
    labels = {name: label for name, _, label in ABLATIONS}
    rows = [OurRow(method=labels.get(g["group"], g["group"]), fid=g["frechet"], id=g["id_mean"],
                   nps_loss=g["loss_nps"], nps_held_out=g["held_out_nps"], n_runs=g["runs"])
            for g in evaluation["groups"]]
    presets = sorted({r["preset"] for r in evaluation["runs"]})
    groups = evaluation["groups"]
    provenance = Provenance(
        preset=", ".join(presets), frechet_label=evaluation["models"]["frechet_label"],
        identity_model=evaluation["models"]["identity"],
        loss_classifier="/".join(sorted({g["loss_classifier"] for g in groups})),
        held_out_classifier="/".join(
            name + (" (unavailable)" if name in evaluation["models"]["unavailable_classifiers"] else "")
            for name in sorted({g["held_out_classifier"] for g in groups})))
    return rows, provenance
