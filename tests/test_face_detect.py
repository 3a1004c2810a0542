"""Face detection: dlib and Haar on the real astronaut, face ranking, SCRFD decoding and its ONNX path."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import skimage.data

from sie3d.face.detect import (
    Face,
    FaceWarning,
    NoFaceFound,
    anchor_centres,
    detect_faces,
    nms,
    scrfd_decode,
    scrfd_input,
    select_face,
)
from sie3d.images import ImageError

ASTRONAUT_FACE = np.array([175, 76, 266, 167])  # dlib's box, checked by eye


def iou(a, b):
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


@pytest.fixture(scope="module")
def astronaut():
    return skimage.data.astronaut()


def test_dlib_finds_the_face_first_and_the_weak_suit_detection_second(astronaut):
    faces = detect_faces(astronaut, "dlib")
    assert len(faces) == 2  # the HOG detector also fires weakly on the suit
    face, suit = faces
    assert face.backend == "dlib" and face.score > 1.0 > 0.5 > suit.score
    assert iou(face.box, ASTRONAUT_FACE) > 0.95
    left_eye, right_eye, nose, mouth_left, mouth_right = face.landmarks
    x0, y0, x1, y1 = face.box
    assert all(x0 < p[0] < x1 and y0 < p[1] < y1 for p in face.landmarks)
    assert left_eye[0] < nose[0] < right_eye[0] and mouth_left[0] < mouth_right[0]
    assert max(left_eye[1], right_eye[1]) < nose[1] < min(mouth_left[1], mouth_right[1])


def test_select_face_keeps_the_best_and_warns(astronaut):
    faces = detect_faces(astronaut, "dlib", landmarks=False)
    with pytest.warns(FaceWarning, match="2 faces found in astro.png"):
        best = select_face(faces[::-1], what="astro.png")  # the order given does not matter
    assert best is faces[0]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert select_face(faces[:1]) is faces[0]


def test_ranking_uses_size_and_score():
    def face(side, score):
        return Face(box=np.array([0.0, 0.0, side, side]), score=score, backend="test")

    big_weak, small_strong, big_strong = face(100, 0.1), face(60, 1.2), face(100, 1.0)
    with pytest.warns(FaceWarning):
        assert select_face([big_weak, small_strong]) is small_strong  # 3600·1.2 > 10000·0.1
    with pytest.warns(FaceWarning):
        assert select_face([big_weak, small_strong, big_strong]) is big_strong
    assert face(50, -0.3).rank() > 0  # negative dlib margins still rank by size


def test_haar_agrees_with_dlib_on_the_astronaut(astronaut):
    faces = detect_faces(astronaut, "haar")
    assert len(faces) == 1 and faces[0].landmarks is None and faces[0].backend == "haar"
    assert iou(faces[0].box, ASTRONAUT_FACE) > 0.6


def test_yunet_agrees_with_dlib_and_skips_the_suit(astronaut):
    faces = detect_faces(astronaut, "yunet")
    assert len(faces) == 1 and faces[0].backend == "yunet" and faces[0].score > 0.9  # not the suit
    assert iou(faces[0].box, ASTRONAUT_FACE) > 0.6
    left_eye, right_eye, nose, mouth_left, mouth_right = faces[0].landmarks
    assert left_eye[0] < nose[0] < right_eye[0] and mouth_left[0] < mouth_right[0]
    assert max(left_eye[1], right_eye[1]) < nose[1] < min(mouth_left[1], mouth_right[1])


@pytest.mark.parametrize("backend", ["dlib", "haar", "yunet"])
def test_no_face_gives_an_empty_list_and_a_clear_error(backend):
    blank = np.full((200, 200, 3), 128, np.uint8)
    faces = detect_faces(blank, backend)
    assert faces == []
    with pytest.raises(NoFaceFound, match="no face found in blank.png; use a photo"):
        select_face(faces, what="blank.png")


def test_bad_arguments_are_clear_errors(astronaut):
    with pytest.raises(ValueError, match="unknown face detector 'mtcnn'"):
        detect_faces(astronaut, "mtcnn")
    with pytest.raises(ImageError, match="uint8"):
        detect_faces(astronaut.astype(np.float32) / 255, "dlib")
    with pytest.raises(ImageError, match=r"\[H, W, 3\]"):
        detect_faces(astronaut[..., 0], "dlib")


def test_scrfd_without_weights_names_the_fetch_command(astronaut, sie3d_home):
    from sie3d.weights import ModelNotAvailable

    pytest.importorskip("onnxruntime")
    with pytest.raises(ModelNotAvailable, match="sie3d weights download antelopev2"):
        detect_faces(astronaut, "scrfd")


# --------------------------------------------------------------------------- SCRFD decoding


def test_anchor_centres_are_row_major_and_repeated_per_anchor():
    centres = anchor_centres(2, 3, stride=8, per_cell=2)
    expected = [[0, 0], [0, 0], [8, 0], [8, 0], [16, 0], [16, 0], [0, 8], [0, 8], [8, 8], [8, 8], [16, 8], [16, 8]]
    assert centres.tolist() == expected


def test_scrfd_input_letterboxes_top_left():
    image = np.full((100, 200, 3), 255, np.uint8)  # wide image
    blob, scale = scrfd_input(image, (256, 256))
    assert blob.shape == (1, 3, 256, 256) and scale == pytest.approx(256 / 200)
    assert np.allclose(blob[0, :, :128], (255 - 127.5) / 128)  # the image
    assert np.allclose(blob[0, :, 128:], -127.5 / 128)  # black padding below


def synthetic_scrfd_outputs(input_hw=(256, 256), batched=True):
    """Zero scores except anchor 1 of cell (row 3, col 5) at stride 16, with known distances."""
    outs = {}
    for stride in (8, 16, 32):
        n = (input_hw[0] // stride) * (input_hw[1] // stride) * 2
        outs[stride] = [np.zeros((n, 1), np.float32), np.zeros((n, 4), np.float32), np.zeros((n, 10), np.float32)]
    k = (3 * (input_hw[1] // 16) + 5) * 2 + 1
    outs[16][0][k] = 0.9
    outs[16][1][k] = [1.0, 2.0, 3.0, 4.0]  # left, top, right, bottom in strides
    outs[16][2][k] = np.arange(10) / 10.0
    ordered = [outs[s][i] for i in range(3) for s in (8, 16, 32)]  # insightface order: scores, boxes, kps
    return [o[None] for o in ordered] if batched else ordered


def test_scrfd_decode_recovers_the_planted_face():
    outputs = synthetic_scrfd_outputs()
    boxes, scores, points = scrfd_decode(outputs[::-1], (256, 256), scale=0.5)  # any output order
    centre = np.array([5 * 16, 3 * 16])
    assert scores.tolist() == pytest.approx([0.9])
    assert boxes[0] == pytest.approx(np.r_[centre - [16, 32], centre + [48, 64]] / 0.5)
    assert points[0] == pytest.approx((centre + np.arange(10).reshape(5, 2) / 10 * 16) / 0.5)
    assert len(scrfd_decode(outputs, (256, 256), 1.0, score_threshold=0.95)[0]) == 0


def test_scrfd_decode_rejects_other_models():
    outputs = synthetic_scrfd_outputs(batched=False)
    with pytest.raises(ValueError, match="check det_size"):
        scrfd_decode(outputs, (320, 320), 1.0)
    with pytest.raises(ValueError, match="not an SCRFD"):
        scrfd_decode(outputs[:8], (256, 256), 1.0)


def test_nms_keeps_the_best_of_overlapping_boxes():
    boxes = np.array([[0, 0, 10, 10], [1, 0, 11, 10], [20, 20, 30, 30], [0, 0, 10, 5]], float)
    scores = np.array([0.8, 0.9, 0.7, 0.6])
    # IoU(1, 0) = 90/110 > 0.4 -> dropped; IoU(1, 3) = 45/105 = 0.43 -> dropped; box 2 is separate
    assert nms(boxes, scores, 0.4).tolist() == [1, 2]
    assert nms(boxes, scores, 0.5).tolist() == [1, 2, 3]


def test_scrfd_runs_an_onnx_model_with_the_real_output_layout(tmp_path):
    onnx = pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    from onnx import TensorProto, helper, numpy_helper

    outputs = synthetic_scrfd_outputs()
    names = [f"out{i}" for i in range(9)]
    nodes = [helper.make_node("Constant", [], [n], value=numpy_helper.from_array(o, n + "_value"))
             for n, o in zip(names, outputs)]
    graph = helper.make_graph(
        nodes, "scrfd_stub", [helper.make_tensor_value_info("input.1", TensorProto.FLOAT, [1, 3, 256, 256])],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, list(o.shape)) for n, o in zip(names, outputs)])
    path = tmp_path / "scrfd_stub.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), str(path))
    image = np.zeros((1024, 512, 3), np.uint8)  # tall: letterboxed to 128 x 256, scale 0.25
    faces = detect_faces(image, "scrfd", model_file=path)
    assert len(faces) == 1 and faces[0].backend == "scrfd"
    assert faces[0].box == pytest.approx([64 / 0.25, 16 / 0.25, 128 / 0.25, 112 / 0.25])
    assert faces[0].landmarks.shape == (5, 2)
