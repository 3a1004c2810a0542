"""68 face landmarks (dlib's predictor, or MediaPipe's mesh read at 68 points) and geometric expression
measures that no emotion classifier sees.

The measures check an expression independently of the perceptual loss: a loss that may move colours
can fool its classifier while the mouth keeps smiling; the landmarks say whether the geometry moved.

Indices follow the iBUG 300-W 68-point scheme: brows 17-21 (image left) and 22-26, eyes 36-41 and
42-47, outer lips 48-59 (corners 48 and 54), inner lips 60-67 (upper 61-63, lower 65-67).

Two sources (``models.landmarks``): ``dlib`` runs the iBUG predictor (a 100 MB file); ``mediapipe``
reads the same 68 points off MediaPipe's 468-point face mesh (a 1.2 MB file) through
:data:`MEDIAPIPE_TO_68`. That table is ours, measured: for each iBUG point, the mesh vertex nearest to
dlib's point on average over the three offline portraits and their mirror images, in inter-ocular units
(lips chosen among the mesh's lip contours, so the inner-lip gap is the mesh's). Mean distance to dlib's
points 0.05 inter-ocular distances (jaw 0.05-0.11: the jaw line is ambiguous along the contour), the
expression measures within 0.06 (tests/test_landmarks.py checks a photo not used to choose it).
"""

from __future__ import annotations

import warnings
from functools import lru_cache

import numpy as np

from ..images import check_rgb_uint8
from ..registry import Registry
from ..weights import is_available
from .detect import Face, detect_faces, select_face

MEASURES = ("mouth_open", "mouth_width", "mouth_corner_lift", "brow_raise")

#: MediaPipe face-mesh vertex standing for each iBUG point 0..67 (module docstring)
MEDIAPIPE_TO_68 = (
    127, 234, 177, 215, 172, 136, 149, 148, 152, 377, 378, 365, 397, 435, 376, 454, 356,  # jaw 0-16
    70, 63, 105, 66, 107, 336, 296, 334, 293, 276,  # brows 17-26
    168, 197, 5, 4, 240, 97, 2, 326, 305,  # nose 27-35
    33, 160, 158, 155, 153, 144, 382, 385, 386, 249, 373, 380,  # eyes 36-47
    61, 39, 37, 0, 267, 269, 291, 321, 314, 17, 84, 91,  # outer lips 48-59
    78, 82, 13, 312, 308, 317, 14, 87,  # inner lips 60-67
)


@lru_cache(maxsize=1)
def default_source() -> str:
    """``dlib`` where its 68-point predictor is installed, else ``mediapipe`` (warned once)."""
    if is_available("dlib-shape-68"):
        return "dlib"
    warnings.warn("dlib's 68-point predictor (100 MB) is not installed here: landmarks come from MediaPipe's "
                  "face mesh (sie3d.face.landmarks.MEDIAPIPE_TO_68); set models.landmarks to choose", stacklevel=3)
    return "mediapipe"


#: ``models.landmarks`` name -> ``(image, face) -> [68, 2]`` pixels
LANDMARK_SOURCES: Registry = Registry("landmark source")


@LANDMARK_SOURCES.register("dlib")
def _dlib_68(image: np.ndarray, face: Face) -> np.ndarray:
    from .dlib_models import dlib_rectangle, shape_points, shape_predictor_68

    return shape_points(shape_predictor_68()(image, dlib_rectangle(face.box)))


@LANDMARK_SOURCES.register("mediapipe")
def _mediapipe_68(image: np.ndarray, face: Face) -> np.ndarray:
    from .mediapipe_models import face_mesh

    return face_mesh(image, face).points[list(MEDIAPIPE_TO_68), :2].copy()


def landmarks_68(image: np.ndarray, face: Face | None = None, source: str | None = None) -> np.ndarray:
    """68 landmarks of one face.

    Args:
        image: ``[H, W, 3]`` uint8 RGB.
        face: the face to use; None detects with dlib and keeps the best face.
        source: a :data:`LANDMARK_SOURCES` name (``models.landmarks``); None: dlib where its predictor
            is installed, else MediaPipe's mesh (with a warning, once).

    Returns:
        ``[68, 2]`` float64 pixels (x, y).
    """
    read = LANDMARK_SOURCES.get(source or default_source())
    image = check_rgb_uint8(image)
    if face is None:
        face = select_face(detect_faces(image, "dlib", landmarks=False))
    return read(image, face)


def face_frame(points: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """Face-aligned frame from the eye centres.

    Returns:
        origin ``[2]`` (midpoint of the eye centres), rotation ``[2, 2]`` whose rows are the face's
        x axis (image-left eye → image-right eye) and y axis (down the face), and the inter-ocular
        distance (between eye centres, pixels).
    """
    left_eye, right_eye = points[36:42].mean(0), points[42:48].mean(0)
    axis = right_eye - left_eye
    iod = float(np.linalg.norm(axis))
    if iod == 0:
        raise ValueError("degenerate landmarks: the eye centres coincide")
    x_axis = axis / iod
    y_axis = np.array([-x_axis[1], x_axis[0]])  # x rotated by +90° in image coordinates (y down)
    return (left_eye + right_eye) / 2, np.stack([x_axis, y_axis]), iod


def expression_measures(points: np.ndarray) -> dict[str, float]:
    """Scale-, rotation- and translation-invariant mouth and brow measures (units: inter-ocular distance).

    * ``mouth_open``: mean vertical gap between the inner lips (61-67, 62-66, 63-65).
    * ``mouth_width``: distance between the mouth corners 48 and 54.
    * ``mouth_corner_lift``: height of the corners above the lip centre (midpoint of inner-lip
      points 62 and 66); positive = corners up (smile), negative = down.
    * ``brow_raise``: mean height of the brows (17-26) above their eye centres.

    Args:
        points: ``[68, 2]`` pixels.
    """
    points = np.asarray(points, dtype=np.float64)
    if points.shape != (68, 2):
        raise ValueError(f"expected [68, 2] landmarks, got {points.shape}")
    origin, rotation, iod = face_frame(points)
    local = (points - origin) @ rotation.T / iod  # [68, 2]: x right, y down, 1 = inter-ocular distance
    y = local[:, 1]
    gap = np.mean([y[67] - y[61], y[66] - y[62], y[65] - y[63]])
    lip_centre = (y[62] + y[66]) / 2
    corners = (y[48] + y[54]) / 2
    brow = (np.mean(y[36:42]) - np.mean(y[17:22]) + np.mean(y[42:48]) - np.mean(y[22:27])) / 2
    return {
        "mouth_open": float(gap),
        "mouth_width": float(np.linalg.norm(local[54] - local[48])),
        "mouth_corner_lift": float(lip_centre - corners),
        "brow_raise": float(brow),
    }
