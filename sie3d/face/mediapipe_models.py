"""MediaPipe's 468-point 3D face landmarks and selfie (person) segmentation, run in PyTorch.

Both networks are the ``.tflite`` files inside the ``mediapipe`` 0.10.21 wheel (registry
``mediapipe-face-landmark`` / ``mediapipe-selfie-segmentation``, Apache-2.0), executed by
:class:`sie3d.face.tflite_graph.TFLiteGraph`; MediaPipe itself is not a dependency.

* :func:`face_mesh` -- a square crop around a detected face (``FACE_MESH_SCALE`` × the box's longer
  side, rotated so the eyes are level) resized to 192², values in [0, 1] -> 468 × (x, y, z) in photo
  pixels (z: depth relative to the face's centre, same scale as x, smaller = nearer the camera) and
  the network's face-presence probability.
* :func:`person_mask` -- the photo resized to 256², values in [0, 1] -> person probability per
  photo pixel.
* :func:`hair_mask` -- the person minus the face (the convex hull of the 468 landmarks, grown a
  little) and minus everything below the jaw (halfway from the face's widest row to the chin, which
  keeps the neck out): the hair, as the photo shows it.
* :func:`head_mask` -- the person above the jaw plus the face's hull: the head as the photo shows it
  (face, fringe, hair), where the avatar may be painted from the photo.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import cv2
import numpy as np
import torch

from ..images import check_rgb_uint8
from ..weights import model_path
from .detect import Face
from .tflite_graph import TFLiteGraph

#: the inner lip contour of the 468-point mesh (the mouth opening), in order around the mouth
INNER_LIPS = (78, 191, 80, 81, 82, 13, 312, 311, 310, 415, 308, 324, 318, 402, 317, 14, 87, 178, 88, 95)
#: the outer lip contour, in order around the mouth
OUTER_LIPS = (61, 185, 40, 39, 37, 0, 267, 269, 270, 409, 291, 375, 321, 405, 314, 17, 84, 181, 91, 146)
#: face oval, eye contours and nose (bridge, tip, wings) of the 468-point mesh, photo-left = subject's right
FACE_OVAL = (10, 338, 297, 332, 284, 251, 389, 356, 454, 323, 361, 288, 397, 365, 379, 378, 400, 377, 152, 148,
             176, 149, 150, 136, 172, 58, 132, 93, 234, 127, 162, 21, 54, 103, 67, 109)
LEFT_EYE = (263, 249, 390, 373, 374, 380, 381, 382, 362, 398, 384, 385, 386, 387, 388, 466)
RIGHT_EYE = (33, 7, 163, 144, 145, 153, 154, 155, 133, 173, 157, 158, 159, 160, 161, 246)
NOSE = (168, 6, 197, 195, 5, 4, 1, 2, 98, 327, 64, 294, 48, 278, 129, 358, 219, 439)
MESH_INPUT = 192
SEGMENTATION_INPUT = 256
FACE_MESH_SCALE = 1.5  # crop side / detected box side (MediaPipe enlarges its detections likewise)
NUM_MESH_POINTS = 468


@lru_cache(maxsize=None)
def _graph(name: str) -> TFLiteGraph:
    return TFLiteGraph(model_path(name)).eval()


@dataclass
class FaceMesh:
    """468 landmarks of one face.

    Attributes:
        points: ``[468, 3]`` float64: x, y photo pixels, z relative depth in the same pixel units.
        presence: the network's probability that the crop holds a face.
        crop_matrix: ``[2, 3]`` photo pixels -> 192² crop pixels.
    """

    points: np.ndarray
    presence: float
    crop_matrix: np.ndarray


def mesh_crop_matrix(face: Face, scale: float = FACE_MESH_SCALE) -> np.ndarray:
    """``[2, 3]`` similarity: photo pixels -> the network's 192² crop (eyes level when known)."""
    x0, y0, x1, y1 = face.box
    centre = np.array([(x0 + x1) / 2, (y0 + y1) / 2])
    side = scale * max(x1 - x0, y1 - y0)
    angle = 0.0
    if face.landmarks is not None:
        dx, dy = face.landmarks[1] - face.landmarks[0]
        angle = float(np.degrees(np.arctan2(dy, dx)))
    matrix = cv2.getRotationMatrix2D(tuple(centre), angle, MESH_INPUT / side)
    matrix[:, 2] += MESH_INPUT / 2 - centre
    return matrix


@torch.no_grad()
def face_mesh(image: np.ndarray, face: Face) -> FaceMesh:
    """MediaPipe's 3D face landmarks of one detected face (see the module docstring)."""
    image = check_rgb_uint8(image)
    matrix = mesh_crop_matrix(face)
    crop = cv2.warpAffine(image, matrix, (MESH_INPUT, MESH_INPUT), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    x = torch.from_numpy(crop.astype(np.float32) / 255.0)[None]  # [1, 192, 192, 3]
    coords, presence = _graph("mediapipe-face-landmark")(x)
    local = coords.reshape(NUM_MESH_POINTS, 3).double().numpy()
    inverse = cv2.invertAffineTransform(matrix)
    xy = local[:, :2] @ inverse[:, :2].T + inverse[:, 2]
    scale = float(np.sqrt(abs(np.linalg.det(inverse[:, :2]))))
    points = np.concatenate([xy, local[:, 2:3] * scale], axis=1)
    return FaceMesh(points, float(torch.sigmoid(presence.flatten()[0])), matrix)


@torch.no_grad()
def person_mask(image: np.ndarray) -> np.ndarray:
    """``[H, W]`` float32 person probability (MediaPipe's general selfie segmentation)."""
    image = check_rgb_uint8(image)
    small = cv2.resize(image, (SEGMENTATION_INPUT, SEGMENTATION_INPUT), interpolation=cv2.INTER_AREA)
    x = torch.from_numpy(small.astype(np.float32) / 255.0)[None]
    probability = _graph("mediapipe-selfie-segmentation")(x)[0][0, ..., 0].numpy()
    return cv2.resize(probability, (image.shape[1], image.shape[0]), interpolation=cv2.INTER_LINEAR)


def _face_hull(shape: tuple[int, int], mesh: FaceMesh, grow: float) -> np.ndarray:
    """``[H, W]`` bool: the convex hull of the 468 landmarks, dilated by ``grow`` × its width."""
    hull = cv2.convexHull(mesh.points[:, :2].astype(np.float32)).astype(np.int32)
    face = np.zeros(shape, np.uint8)
    cv2.fillConvexPoly(face, hull, 1)
    radius = int(round(grow * float(np.ptp(mesh.points[:, 0]))))
    if radius > 0:
        face = cv2.dilate(face, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1)))
    return face.astype(bool)


def _above_jaw(shape: tuple[int, int], mesh: FaceMesh) -> np.ndarray:
    """``[H, W]`` bool: the rows above halfway from the face's widest row to the chin."""
    widest = float(mesh.points[[mesh.points[:, 0].argmin(), mesh.points[:, 0].argmax()], 1].mean())
    jaw = (widest + float(mesh.points[:, 1].max())) / 2
    return np.broadcast_to(np.arange(shape[0])[:, None] <= jaw, shape)


def hair_mask(image: np.ndarray, mesh: FaceMesh, threshold: float = 0.5, grow: float = 0.04) -> np.ndarray:
    """``[H, W]`` bool: person pixels outside the face hull and above the chin.

    Args:
        grow: the face hull is dilated by this fraction of its width (keeps skin at its rim out).
    """
    person = person_mask(image) > threshold
    return person & ~_face_hull(person.shape, mesh, grow) & _above_jaw(person.shape, mesh)


def head_mask(image: np.ndarray, mesh: FaceMesh, threshold: float = 0.5) -> np.ndarray:
    """``[H, W]`` bool: person pixels above the jaw, and the face's hull (see the module docstring)."""
    person = person_mask(image) > threshold
    return person & (_above_jaw(person.shape, mesh) | _face_hull(person.shape, mesh, 0.0))


def landmark_mask(shape: tuple[int, int], points: np.ndarray, indices: tuple[int, ...],
                  convex: bool = False) -> np.ndarray:
    """``[H, W]`` bool: inside the polygon through the mesh points ``indices`` (``points`` ``[468, 3]``,
    photo pixels), or inside their convex hull. ``INNER_LIPS``: the mouth opening (teeth, tongue, the
    dark of an open mouth); ``OUTER_LIPS``: the whole mouth; ``FACE_OVAL``: the face."""
    mask = np.zeros(shape, np.uint8)
    polygon = np.round(np.asarray(points)[list(indices), :2]).astype(np.int32)
    if convex:
        cv2.fillConvexPoly(mask, cv2.convexHull(polygon), 1)
    else:
        cv2.fillPoly(mask, [polygon], 1)
    return mask.astype(bool)
