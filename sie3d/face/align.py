"""Face alignment: 5-point similarity warp to the 112×112 ArcFace template, and dlib's face chip.

Landmark order everywhere in :mod:`sie3d.face` (the SCRFD / ArcFace convention), in image pixels
``(x, y)``: eye on the image's left, eye on the image's right, nose tip, mouth corner on the image's
left, mouth corner on the image's right.
"""

from __future__ import annotations

import cv2
import numpy as np

#: where the 5 landmarks land in a 112×112 ArcFace input (insightface's standard template, pixels)
ARCFACE_TEMPLATE_112 = np.array([
    [38.2946, 51.6963],
    [73.5318, 51.5014],
    [56.0252, 71.7366],
    [41.5493, 92.3655],
    [70.7299, 92.2041],
], dtype=np.float64)


def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity (rotation, uniform scale, translation) mapping ``src`` onto ``dst``.

    Umeyama's closed form (reflections excluded).

    Args:
        src, dst: ``[N, 2]`` corresponding points, N >= 2.

    Returns:
        ``[2, 3]`` matrix ``M`` with ``dst ≈ src @ M[:, :2].T + M[:, 2]``.
    """
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    if src.shape != dst.shape or src.ndim != 2 or src.shape[1] != 2 or len(src) < 2:
        raise ValueError(f"need two [N, 2] point arrays with N >= 2; got {src.shape} and {dst.shape}")
    mu_src, mu_dst = src.mean(0), dst.mean(0)
    a, b = src - mu_src, dst - mu_dst
    var_src = (a ** 2).sum() / len(src)
    if var_src == 0:
        raise ValueError("the source points coincide; a similarity transform is undefined")
    cov = b.T @ a / len(src)  # [2, 2]
    u, sigma, vt = np.linalg.svd(cov)
    d = np.ones(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        d[-1] = -1.0
    rotation = u @ np.diag(d) @ vt
    scale = (sigma * d).sum() / var_src
    matrix = np.empty((2, 3))
    matrix[:, :2] = scale * rotation
    matrix[:, 2] = mu_dst - scale * rotation @ mu_src
    return matrix


def align_arcface(image: np.ndarray, landmarks: np.ndarray, size: int = 112) -> np.ndarray:
    """Warp a face to the ArcFace template.

    Args:
        image: ``[H, W, 3]`` uint8 RGB.
        landmarks: ``[5, 2]`` pixels in the order of this module's docstring.
        size: output side; the template is scaled by ``size / 112``.

    Returns:
        ``[size, size, 3]`` uint8 RGB (bilinear, black outside the photo).
    """
    matrix = similarity_transform(landmarks, ARCFACE_TEMPLATE_112 * (size / 112.0))
    return cv2.warpAffine(image, matrix, (size, size), flags=cv2.INTER_LINEAR, borderValue=0)


def landmarks5_from_68(points: np.ndarray) -> np.ndarray:
    """iBUG 68-point landmarks ``[68, 2]`` -> the 5 ArcFace points ``[5, 2]`` (eye centres, nose
    tip 30, mouth corners 48 and 54)."""
    points = np.asarray(points, dtype=np.float64)
    if points.shape != (68, 2):
        raise ValueError(f"expected [68, 2] landmarks, got {points.shape}")
    return np.stack([points[36:42].mean(0), points[42:48].mean(0), points[30], points[48], points[54]])


def dlib_face_chip(image: np.ndarray, box: np.ndarray, size: int = 150, padding: float = 0.25) -> np.ndarray:
    """dlib's own alignment: 5-point shape predictor on ``box``, then ``dlib.get_face_chip``.

    This is the input dlib's 128-d descriptor network is trained on (150×150, padding 0.25).

    Args:
        image: ``[H, W, 3]`` uint8 RGB.
        box: ``[4]`` x0, y0, x1, y1 pixels.

    Returns:
        ``[size, size, 3]`` uint8 RGB.
    """
    import dlib

    from .dlib_models import dlib_rectangle, shape_predictor_5

    shape = shape_predictor_5()(image, dlib_rectangle(box))
    return np.asarray(dlib.get_face_chip(image, shape, size=size, padding=padding))
