"""Alignment and identity encoders: Umeyama vs scikit-image, ArcFace on a tiny ONNX model, dlib's descriptor."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import skimage.data
from skimage.transform import SimilarityTransform

from sie3d.face.align import ARCFACE_TEMPLATE_112, align_arcface, landmarks5_from_68, similarity_transform
from sie3d.face.detect import Face, detect_faces
from sie3d.face.identity import (
    ArcFaceEncoder,
    average_embeddings,
    cosine_similarity,
    dlib_distance,
    embed_photos,
    make_identity_encoder,
)
from sie3d.weights import ModelNotAvailable, is_available


def skimage_similarity(src, dst) -> np.ndarray:
    """scikit-image's least-squares similarity as a [2, 3] matrix (API changed in 0.26)."""
    if hasattr(SimilarityTransform, "from_estimate"):
        return SimilarityTransform.from_estimate(src, dst).params[:2]
    transform = SimilarityTransform()
    transform.estimate(src, dst)
    return transform.params[:2]


@pytest.fixture(scope="module")
def astronaut():
    image = skimage.data.astronaut()
    return image, detect_faces(image, "dlib")[0]


def test_similarity_transform_recovers_a_known_transform():
    angle, scale, shift = 0.3, 1.7, np.array([5.0, -2.0])
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    src = np.random.default_rng(0).uniform(0, 100, (5, 2))
    matrix = similarity_transform(src, src @ (scale * rotation).T + shift)
    assert np.allclose(matrix[:, :2], scale * rotation) and np.allclose(matrix[:, 2], shift)


def test_similarity_transform_matches_scikit_image_least_squares():
    rng = np.random.default_rng(1)
    src = rng.uniform(0, 200, (5, 2))
    dst = ARCFACE_TEMPLATE_112 + rng.normal(0, 3, (5, 2))
    assert np.allclose(similarity_transform(src, dst), skimage_similarity(src, dst), atol=1e-9)
    with pytest.raises(ValueError, match="coincide"):
        similarity_transform(np.ones((5, 2)), dst)


def test_align_with_template_landmarks_is_a_plain_crop():
    image = np.random.default_rng(2).integers(0, 256, (200, 200, 3), dtype=np.uint8)
    assert np.array_equal(align_arcface(image, ARCFACE_TEMPLATE_112 + [30, 40]), image[40:152, 30:142])


def test_landmarks5_from_68_takes_eye_centres_nose_tip_and_mouth_corners():
    points = np.arange(136, dtype=float).reshape(68, 2)
    five = landmarks5_from_68(points)
    assert np.allclose(five, [points[36:42].mean(0), points[42:48].mean(0), points[30], points[48], points[54]])


def test_vector_helpers_against_hand_values():
    assert cosine_similarity([1, 0], [3, 3]) == pytest.approx(np.sqrt(0.5))
    assert dlib_distance([0, 3], [4, 0]) == pytest.approx(5.0)
    assert average_embeddings([[1, 0], [0, 5]]) == pytest.approx([np.sqrt(0.5), np.sqrt(0.5)])
    with pytest.raises(ValueError, match="zero embedding"):
        average_embeddings([[1, 0], [-1, 0]])


def write_tiny_arcface(path, seed=0):
    """An ONNX model in ArcFace's layout (the synthetic weights' stand-in): conv 8×8 stride 8 (3 -> 4
    channels), flatten, matmul: sensitive to channel order, position and scale. Returns (conv, dense)."""
    pytest.importorskip("onnx")
    from sie3d.diffusion.synthetic import write_synthetic_arcface

    return write_synthetic_arcface(path, seed)


def test_arcface_encoder_matches_a_numpy_reference(tmp_path, astronaut):
    pytest.importorskip("onnxruntime")
    image, face = astronaut
    conv, dense = write_tiny_arcface(tmp_path / "arcface.onnx")
    encoder = make_identity_encoder("arcface", model_file=tmp_path / "arcface.onnx")
    assert isinstance(encoder, ArcFaceEncoder) and encoder.dim == 512

    matrix = skimage_similarity(face.landmarks, ARCFACE_TEMPLATE_112)
    aligned = cv2.warpAffine(image, matrix, (112, 112), flags=cv2.INTER_LINEAR)
    x = (aligned.astype(np.float64) - 127.5) / 127.5  # [112, 112, 3] RGB
    patches = x.reshape(14, 8, 14, 8, 3)  # [row, dy, col, dx, channel]
    features = np.einsum("ocyx,iyjxc->oij", conv, patches).reshape(-1)  # channel-major flatten
    expected = features @ dense

    assert np.allclose(encoder.raw(image, face), expected, atol=1e-4)
    embedding = encoder.embed(image, face)
    assert embedding.shape == (512,) and np.linalg.norm(embedding) == pytest.approx(1.0, abs=1e-6)
    assert embedding == pytest.approx(expected / np.linalg.norm(expected), abs=1e-5)


def test_arcface_on_a_box_without_landmarks_uses_dlib_points(tmp_path, astronaut):
    pytest.importorskip("onnxruntime")
    image, face = astronaut
    write_tiny_arcface(tmp_path / "arcface.onnx")
    encoder = make_identity_encoder("arcface", model_file=tmp_path / "arcface.onnx")
    box_only = Face(box=face.box, score=face.score, backend="haar")
    assert cosine_similarity(encoder.embed(image, box_only), encoder.embed(image, face)) > 0.999


def test_arcface_without_weights_names_the_fetch_command(sie3d_home):
    with pytest.raises(ModelNotAvailable, match="sie3d weights download arc2face-arcface"):
        make_identity_encoder("arcface")
    with pytest.raises(ModelNotAvailable, match="sie3d weights download id-metric-arcface"):
        make_identity_encoder("arcface-metric")
    with pytest.raises(ValueError, match="choose one of arcface, arcface-metric, dlib, sface"):
        make_identity_encoder("facenet")


def test_dlib_descriptor_equals_dlibs_own_pipeline(astronaut):
    from sie3d.face.dlib_models import dlib_rectangle, face_descriptor_model, shape_predictor_5

    image, face = astronaut
    encoder = make_identity_encoder("dlib")
    raw = encoder.raw(image, face)
    direct = np.asarray(face_descriptor_model().compute_face_descriptor(
        image, shape_predictor_5()(image, dlib_rectangle(face.box))))
    assert raw.shape == (128,) and np.abs(raw - direct).max() < 1e-6
    assert np.linalg.norm(encoder.embed(image, face)) == pytest.approx(1.0, abs=1e-6)


def test_dlib_same_person_rule_and_averaging(astronaut):
    image, face = astronaut
    encoder = make_identity_encoder("dlib")
    mirrored = np.ascontiguousarray(image[:, ::-1])
    mirrored_face = detect_faces(mirrored, "dlib")[0]
    assert dlib_distance(encoder.raw(image, face), encoder.raw(mirrored, mirrored_face)) < 0.6
    suit = detect_faces(image, "dlib")[1]  # the false detection on the suit is not her
    assert dlib_distance(encoder.raw(image, face), encoder.raw(image, suit)) > 0.6
    both = embed_photos(encoder, [image, mirrored], [face, mirrored_face])
    one, two = encoder.embed(image, face), encoder.embed(mirrored, mirrored_face)
    assert both == pytest.approx((one + two) / np.linalg.norm(one + two), abs=1e-6)


needs_sface = pytest.mark.skipif(not is_available("sface"), reason="sface not cached: sie3d weights download --offline-set")


@needs_sface
def test_sface_equals_opencvs_own_recognizer_pipeline(astronaut):
    """OpenCV's FaceRecognizerSF aligns with its own similarity estimate and warp; ours must agree."""
    from sie3d.face.identity import SFACE_SAME_PERSON, face_landmarks5

    image, face = astronaut
    encoder = make_identity_encoder("sface")
    ours = encoder.embed(image, face)
    x0, y0, x1, y1 = face.box
    row = np.array([[x0, y0, x1 - x0, y1 - y0, *face_landmarks5(image, face).ravel(), 1.0]], np.float32)
    recognizer = cv2.FaceRecognizerSF.create(str(encoder.model_file), "")
    bgr = np.ascontiguousarray(image[:, :, ::-1])
    theirs = recognizer.feature(recognizer.alignCrop(bgr, row)).ravel()
    assert ours.shape == (128,) and float(ours @ theirs / np.linalg.norm(theirs)) > 0.999
    mirrored = np.ascontiguousarray(image[:, ::-1])
    assert cosine_similarity(ours, encoder.embed(mirrored, detect_faces(mirrored, "dlib")[0])) > SFACE_SAME_PERSON
    suit = detect_faces(image, "dlib")[1]  # the false detection on the suit is not her
    assert cosine_similarity(ours, encoder.embed(image, suit)) < SFACE_SAME_PERSON


def write_arcface_with_input_normalisation(path, seed=0):
    """The tiny ArcFace-layout model with converted-MXNet head nodes: ``_minusscalar0`` (x − 127.5) and
    ``_mulscalar0`` (× 0.0078125) before the conv, as in insightface's glintr100."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    conv = rng.normal(0, 0.1, (4, 3, 8, 8)).astype(np.float32)
    dense = rng.normal(0, 0.1, (4 * 14 * 14, 512)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("Sub", ["input.1", "mean"], ["centred"], name="_minusscalar0"),
         helper.make_node("Mul", ["centred", "scale"], ["scaled"], name="_mulscalar0"),
         helper.make_node("Conv", ["scaled", "w"], ["c"], strides=[8, 8], kernel_shape=[8, 8]),
         helper.make_node("Flatten", ["c"], ["f"], axis=1),
         helper.make_node("MatMul", ["f", "d"], ["683"])],
        "arcface_stub_normalising",
        [helper.make_tensor_value_info("input.1", TensorProto.FLOAT, ["N", 3, 112, 112])],
        [helper.make_tensor_value_info("683", TensorProto.FLOAT, ["N", 512])],
        initializer=[numpy_helper.from_array(np.float32(127.5), "mean"),
                     numpy_helper.from_array(np.float32(0.0078125), "scale"),
                     numpy_helper.from_array(conv, "w"), numpy_helper.from_array(dense, "d")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), str(path))
    return conv, dense


def test_arcface_input_normalisation_is_read_from_the_graph(tmp_path, astronaut):
    """A graph that normalises itself gets raw pixels (insightface's rule): the same features as the
    plain graph fed (x − 127.5)/127.5, up to 127.5 vs 128 in the scale."""
    pytest.importorskip("onnxruntime")
    from sie3d.face.identity import input_normalisation

    image, face = astronaut
    write_tiny_arcface(tmp_path / "plain.onnx", seed=4)
    conv, dense = write_arcface_with_input_normalisation(tmp_path / "normalising.onnx", seed=4)
    assert input_normalisation(tmp_path / "plain.onnx") == (127.5, 127.5)
    assert input_normalisation(tmp_path / "normalising.onnx") == (0.0, 1.0)

    matrix = skimage_similarity(face.landmarks, ARCFACE_TEMPLATE_112)
    aligned = cv2.warpAffine(image, matrix, (112, 112), flags=cv2.INTER_LINEAR)
    x = (aligned.astype(np.float64) - 127.5) * 0.0078125  # what the graph's own head computes
    features = np.einsum("ocyx,iyjxc->oij", conv, x.reshape(14, 8, 14, 8, 3)).reshape(-1)
    encoder = make_identity_encoder("arcface", model_file=tmp_path / "normalising.onnx")
    assert np.allclose(encoder.raw(image, face), features @ dense, atol=1e-4)
    plain = make_identity_encoder("arcface", model_file=tmp_path / "plain.onnx")
    assert cosine_similarity(encoder.embed(image, face), plain.embed(image, face)) > 0.9999


def test_arc2face_identity_never_falls_back_to_glintr100_silently(sie3d_home, tmp_path):
    pytest.importorskip("onnxruntime")
    from sie3d.face.identity import arcface_model_file

    antelope = sie3d_home / "models" / "antelopev2"
    antelope.mkdir(parents=True)
    write_tiny_arcface(antelope / "glintr100.onnx")
    (antelope / "scrfd_10g_bnkps.onnx").write_bytes(b"stub")
    with pytest.raises(ModelNotAvailable, match="arc2face-arcface.*models.allow_glintr100_identity=true"):
        make_identity_encoder("arcface")
    assert arcface_model_file("arcface", allow_glintr100=True) == antelope / "glintr100.onnx"
    assert make_identity_encoder("arcface", allow_glintr100=True).dim == 512
