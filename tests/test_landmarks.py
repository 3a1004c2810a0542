"""68-point landmarks and the expression measures (hand-built faces, invariances, the real astronaut)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import skimage.data

from sie3d.face.detect import detect_faces
from sie3d.face.landmarks import MEASURES, expression_measures, landmarks_68


def schematic_face(mouth_gap=0.2, corner_lift=0.1, brow_height=0.3, mouth_width=1.0) -> np.ndarray:
    """68 points of an upright face with eye centres at (±0.5, 0), y down, in inter-ocular units."""
    p = np.zeros((68, 2))
    p[36:42] = [-0.5, 0.0]
    p[42:48] = [0.5, 0.0]
    p[17:22] = [-0.5, -brow_height]
    p[22:27] = [0.5, -brow_height]
    p[27:36] = [0.0, 0.5]  # nose
    p[0:17] = np.c_[np.linspace(-1, 1, 17), np.full(17, 0.6)]  # jaw: unused by the measures
    centre = 1.2
    p[48:60] = [0.0, centre]
    p[48] = [-mouth_width / 2, centre - corner_lift]
    p[54] = [mouth_width / 2, centre - corner_lift]
    p[60:68] = [0.0, centre]
    p[61:64, 1] = centre - mouth_gap / 2  # upper inner lip
    p[65:68, 1] = centre + mouth_gap / 2  # lower inner lip
    return p


def test_measures_on_a_schematic_face_equal_the_construction():
    measures = expression_measures(schematic_face(mouth_gap=0.2, corner_lift=0.1, brow_height=0.3, mouth_width=0.9))
    assert list(measures) == list(MEASURES)
    assert measures["mouth_open"] == pytest.approx(0.2)
    assert measures["mouth_corner_lift"] == pytest.approx(0.1)
    assert measures["brow_raise"] == pytest.approx(0.3)
    assert measures["mouth_width"] == pytest.approx(0.9)
    frown = expression_measures(schematic_face(corner_lift=-0.05))
    assert frown["mouth_corner_lift"] == pytest.approx(-0.05)


def test_measures_ignore_position_scale_and_roll():
    points = schematic_face()
    angle = np.deg2rad(25)
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    moved = points @ rotation.T * 83.0 + [240.0, 130.0]
    a, b = expression_measures(points), expression_measures(moved)
    assert all(a[k] == pytest.approx(b[k], abs=1e-12) for k in MEASURES)


def test_bad_landmarks_are_rejected():
    with pytest.raises(ValueError, match=r"\[68, 2\]"):
        expression_measures(np.zeros((5, 2)))
    with pytest.raises(ValueError, match="eye centres coincide"):
        expression_measures(np.zeros((68, 2)))


def test_astronaut_landmarks_show_her_smile():
    image = skimage.data.astronaut()
    face = detect_faces(image, "dlib", landmarks=False)[0]
    points = landmarks_68(image, face)
    assert points.shape == (68, 2)
    x0, y0, x1, y1 = face.box
    inner = points[17:]  # brows, nose, eyes, mouth (the jaw line may leave dlib's box at the chin)
    assert ((inner >= [x0, y0]) & (inner <= [x1, y1])).all()
    measures = expression_measures(points)
    assert measures["mouth_corner_lift"] > 0.05  # corners above the lip centre: a smile
    assert 0.8 < measures["mouth_width"] < 1.3 and 0.1 < measures["brow_raise"] < 0.5
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # dlib's weak second detection on the suit
        assert np.allclose(landmarks_68(image), points)  # face=None detects the same face


def test_mediapipe_source_reads_dlibs_68_points_off_the_mesh():
    """A photo not used to choose MEDIAPIPE_TO_68 (the astronaut turned 12° and scaled by 0.8): the
    mesh's 68 points lie near dlib's and give the same expression measures (inter-ocular units)."""
    import cv2

    from sie3d.face.landmarks import MEDIAPIPE_TO_68, face_frame

    photo = skimage.data.astronaut()
    h, w = photo.shape[:2]
    turned = cv2.warpAffine(photo, cv2.getRotationMatrix2D((w / 2, h / 3), 12, 0.8), (w, h),
                            borderMode=cv2.BORDER_REFLECT)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        face = max(detect_faces(turned, "dlib"), key=lambda f: f.score)
    dlib_points = landmarks_68(turned, face, source="dlib")
    mesh_points = landmarks_68(turned, face, source="mediapipe")
    assert mesh_points.shape == (68, 2) and len(set(MEDIAPIPE_TO_68)) == 68
    iod = face_frame(dlib_points)[2]
    error = np.linalg.norm(mesh_points - dlib_points, axis=1) / iod
    assert error.mean() < 0.08 and error[17:].max() < 0.15  # jaw aside: brows, eyes, nose, lips
    ours, theirs = expression_measures(mesh_points), expression_measures(dlib_points)
    for name in MEASURES:
        assert abs(ours[name] - theirs[name]) < 0.08, (name, ours[name], theirs[name])
    with pytest.raises(ValueError, match="mediapipe"):
        landmarks_68(turned, face, source="openpose")  # names the valid ones
