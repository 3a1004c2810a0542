"""The face readout: what the package measures of a face in an image, one way for every reader.

:class:`FaceReadout` loads the emotion classifiers once (:func:`sie3d.face.emotion.load_emotion_classifier`,
kept in a :class:`~sie3d.runtime.ModelCache`), crops every face with one rule
(:func:`sie3d.face.emotion.emotion_box` with ``models.emotion_crop_margin``) and reads an image's
68 landmarks, dlib identity and emotion probabilities (a :class:`~sie3d.run_dir.FaceReading`). The run's
``summary.json`` (:mod:`sie3d.generate`) and the :class:`~sie3d.evaluation.evaluator.Evaluator` both
read faces through it. Beside it, the run's other checks of its renders: whether each view shows a face
(:func:`view_faces`) and the colour of the back of the head (:func:`back_of_head_colour`).
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch

from ..run_dir import FaceReading
from ..runtime import ModelCache
from ..weights import ModelNotAvailable
from .detect import Face, detect_faces
from ..vocabulary import EMOTIONS
from .emotion import EmotionClassifier, emotion_box, image_to_tensor, load_emotion_classifier
from .identity import cosine_similarity, dlib_distance, make_identity_encoder
from .landmarks import expression_measures, landmarks_68


class FaceReadout:
    """Emotion classifiers loaded once, and the readings of faces in uint8 ``[H, W, 3]`` images.

    Args:
        device: where the classifiers run.
        margin: the emotion crop's margin (``models.emotion_crop_margin``), per side / box side.
        models: a cache to take the classifiers from (a batch worker's); ``None``: a private one.
        landmark_source: who places the 68 landmarks of every reading (``models.landmarks``; a
            :data:`sie3d.face.landmarks.LANDMARK_SOURCES` name), the photo's and the renders' alike.
    """

    def __init__(self, device: torch.device, margin: float, models: ModelCache | None = None,
                 landmark_source: str = "dlib"):
        self.device = torch.device(device)
        self.margin = margin
        self.landmark_source = landmark_source
        self.models = models if models is not None else ModelCache()
        self.missing: dict[str, str] = {}  # classifier name -> why it did not load (ModelNotAvailable)

    def classifier(self, name: str) -> EmotionClassifier | None:
        """The loaded classifier, or None when its weights are not cached (the reason in :attr:`missing`).

        Raises:
            ValueError: unknown name, or a broken weights file.
        """
        try:
            return self.models.get(("emotion", name, str(self.device)),
                                   lambda: load_emotion_classifier(name, self.device))
        except ModelNotAvailable as exc:
            self.missing[name] = str(exc)
            return None

    @torch.no_grad()
    def probabilities(self, classifier: EmotionClassifier, image: np.ndarray,
                      face_box: Sequence[float] | None) -> torch.Tensor:
        """``[7]`` probabilities (order of :data:`~sie3d.face.emotion.EMOTIONS`, on the CPU) of the face at
        ``face_box`` (x0, y0, x1, y1 pixels) cropped by :func:`~sie3d.face.emotion.emotion_box`; the
        whole image when ``face_box`` is None."""
        box = None if face_box is None else torch.as_tensor(
            emotion_box(face_box, image.shape[1], image.shape[0], self.margin), dtype=torch.float32,
            device=self.device)[None]
        return classifier(image_to_tensor(image, self.device), box)[0].cpu()

    def emotions(self, image: np.ndarray, face_box: Sequence[float] | None,
                 names: Sequence[str]) -> dict[str, dict[str, float]]:
        """``{classifier: {class: probability}}`` of the face at ``face_box``, for each of ``names`` that loads."""
        out = {}
        for name in dict.fromkeys(names):
            classifier = self.classifier(name)
            if classifier is not None:
                out[name] = dict(zip(EMOTIONS, map(float, self.probabilities(classifier, image, face_box))))
        return out

    def read(self, image: np.ndarray, names: Sequence[str], face: Face | None = None,
             photo_descriptor: np.ndarray | None = None) -> FaceReading:
        """The reading of one image.

        Args:
            names: the emotion classifiers to read with.
            face: the face to read (the photo's, detected once); ``None``: the best dlib face, and
                ``face_found`` says whether there was one.
            photo_descriptor: ``[128]`` dlib descriptor to measure the identity distance to (None: not measured).
        """
        reading = FaceReading()
        if face is None:
            faces = detect_faces(image, "dlib")
            reading.face_found = bool(faces)
            if not faces:
                return reading
            face = faces[0]
        if photo_descriptor is not None:
            descriptor = dlib_descriptor(image, face)
            reading.dlib_distance = dlib_distance(photo_descriptor, descriptor)
            reading.dlib_cosine = cosine_similarity(photo_descriptor, descriptor)
        reading.landmarks = expression_measures(landmarks_68(image, face, self.landmark_source))
        reading.emotions = self.emotions(image, face.box, names)
        return reading


def dlib_descriptor(image: np.ndarray, face: Face) -> np.ndarray:
    """``[128]`` dlib face descriptor of ``face`` in a uint8 image (the readout's identity)."""
    return make_identity_encoder("dlib").raw(image, face)


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
