"""face-api's expression network: the tfjs weight reader, and the torch port against Keras (its own
"SAME" padding, separable convolutions and pooling) on the real weights and real face crops."""

from __future__ import annotations

import json
import os

import cv2
import numpy as np
import pytest
import skimage.data
import torch

from sie3d.face.emotion import classify_face, load_emotion_classifier
from sie3d.face.faceapi_expression import FACEAPI_CLASSES, MANIFEST, MEAN_RGB, FaceApiExpressionNet
from sie3d.face.tfjs_weights import read_tfjs_weights
from sie3d.vocabulary import EMOTIONS
from sie3d.weights import is_available, model_path

needs_faceapi = pytest.mark.skipif(not is_available("faceapi-expression"),
                                   reason="faceapi-expression not cached: sie3d weights download --offline-set")


def test_tfjs_reader_dequantises_and_splits_shards(tmp_path):
    quantised = np.array([0, 1, 255, 7, 128, 2], dtype=np.uint8)
    plain = np.array([1.5, -2.25], dtype=np.float32)
    counts = np.array([3, -4, 5], dtype=np.int32)
    blob = quantised.tobytes() + plain.tobytes() + counts.tobytes()
    (tmp_path / "w.bin1").write_bytes(blob[:5])
    (tmp_path / "w.bin2").write_bytes(blob[5:])
    manifest = [{"paths": ["w.bin1", "w.bin2"], "weights": [
        {"name": "a/filters", "shape": [2, 3], "dtype": "float32",
         "quantization": {"dtype": "uint8", "scale": 0.5, "min": -1.0}},
        {"name": "a/bias", "shape": [2], "dtype": "float32"},
        {"name": "n", "shape": [3], "dtype": "int32"}]}]
    (tmp_path / "m.json").write_text(json.dumps(manifest))
    tensors = read_tfjs_weights(tmp_path / "m.json")
    assert list(tensors) == ["a/filters", "a/bias", "n"]
    assert np.array_equal(tensors["a/filters"], np.array([[-1.0, -0.5, 126.5], [2.5, 63.0, 0.0]], np.float32))
    assert np.array_equal(tensors["a/bias"], plain) and np.array_equal(tensors["n"], counts)
    (tmp_path / "w.bin2").write_bytes(blob[5:-1])
    with pytest.raises(ValueError, match="ends inside tensor n"):
        read_tfjs_weights(tmp_path / "m.json")
    (tmp_path / "w.bin2").unlink()
    with pytest.raises(ValueError, match="w.bin2"):
        read_tfjs_weights(tmp_path / "m.json")


def test_network_shape_and_class_order():
    net = FaceApiExpressionNet().eval()
    x = torch.rand(2, 3, 112, 112)
    with torch.no_grad():
        ours, native = net(x), net.faceapi_logits(x)
    assert ours.shape == (2, 7)
    for i, name in enumerate(EMOTIONS):  # each sie3d class reads the face-api class of that meaning
        native_name = {"disgust": "disgusted", "fear": "fearful", "surprise": "surprised"}.get(name, name)
        assert torch.equal(ours[:, i], native[:, FACEAPI_CLASSES.index(native_name)])


def _keras_reference(tensors: dict[str, np.ndarray]):
    """The architecture written with Keras layers (TF semantics, run on Keras's torch backend)."""
    os.environ.setdefault("KERAS_BACKEND", "torch")
    keras = pytest.importorskip("keras")
    if keras.backend.backend() != "torch":
        pytest.skip("keras is set to a backend other than torch")
    layers = keras.layers
    inputs = keras.Input((112, 112, 3))
    x = inputs
    for k in range(4):
        p = f"dense{k}/conv"
        if k == 0:
            conv0 = layers.Conv2D(32, 3, strides=2, padding="same")
            out1 = layers.ReLU()(conv0(x))
            conv0.set_weights([tensors[p + "0/filters"], tensors[p + "0/bias"]])
        else:
            conv0 = layers.SeparableConv2D(tensors[p + "0/bias"].shape[0], 3, strides=2, padding="same")
            out1 = layers.ReLU()(conv0(x))
            conv0.set_weights([tensors[p + "0/depthwise_filter"], tensors[p + "0/pointwise_filter"],
                               tensors[p + "0/bias"]])
        outs = [out1]
        for j in (1, 2, 3):
            conv = layers.SeparableConv2D(out1.shape[-1], 3, padding="same")
            inp = out1 if j == 1 else layers.ReLU()(layers.Add()(outs))
            outs.append(conv(inp))
            conv.set_weights([tensors[f"{p}{j}/depthwise_filter"], tensors[f"{p}{j}/pointwise_filter"],
                              tensors[f"{p}{j}/bias"]])
        x = layers.ReLU()(layers.Add()(outs))
    x = layers.Flatten()(layers.AveragePooling2D(7, strides=2, padding="valid")(x))
    fc = layers.Dense(7, activation="softmax")
    outputs = fc(x)
    fc.set_weights([tensors["fc/weights"], tensors["fc/bias"]])
    return keras.Model(inputs, outputs)


def _astronaut_crops() -> np.ndarray:
    """Real face crops (tight, loose, mirrored, grey, noisy) and two non-faces, ``[N, 112, 112, 3]`` uint8."""
    image = skimage.data.astronaut()
    x0, y0, x1, y1 = 175, 76, 266, 167  # dlib's box on this photo
    crops = [cv2.resize(image[y0 - m:y1 + m, x0 - m:x1 + m], (112, 112), interpolation=cv2.INTER_AREA)
             for m in (0, 12, 30)]
    crops.append(crops[1][:, ::-1])
    crops.append(np.repeat(cv2.cvtColor(crops[1], cv2.COLOR_RGB2GRAY)[..., None], 3, axis=2))
    noise = np.random.default_rng(0).normal(0, 25, crops[1].shape)
    crops.append(np.clip(crops[1] + noise, 0, 255).astype(np.uint8))
    crops.append(cv2.resize(skimage.data.chelsea()[50:250, 100:300], (112, 112)))
    crops.append(cv2.resize(skimage.data.coffee()[100:300, 200:400], (112, 112)))
    return np.ascontiguousarray(np.stack(crops))


@needs_faceapi
@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # inside keras's torch backend
def test_port_matches_keras_on_the_real_weights_and_real_faces():
    root = model_path("faceapi-expression")
    reference = _keras_reference(read_tfjs_weights(root / MANIFEST))
    crops = _astronaut_crops()
    x = ((crops.astype(np.float32) - np.array(MEAN_RGB, np.float32)) / 255.0)
    expected = np.asarray(reference.predict(x, verbose=0))  # [N, 7] face-api order
    classifier = load_emotion_classifier("faceapi")
    with torch.no_grad():
        rgb = torch.from_numpy(crops).permute(0, 3, 1, 2).float() / 255.0
        ours = torch.softmax(classifier.network.faceapi_logits(classifier.network.normalize(rgb)), -1).numpy()
    assert np.abs(np.log(ours + 1e-12) - np.log(expected + 1e-12)).max() < 1e-3
    assert np.abs(ours - expected).max() < 1e-5
    assert expected.max(axis=1).min() < 0.99  # the non-faces are not saturated: an informative comparison
    assert FACEAPI_CLASSES[int(expected[0].argmax())] == "happy"  # the smiling astronaut


@needs_faceapi
def test_classifier_reads_the_smiling_photo_as_happy_whatever_the_margin():
    classifier = load_emotion_classifier("faceapi")
    image = skimage.data.astronaut()
    for margin in (0.0, 0.15, 0.3):
        probs = classify_face(classifier, image, [175, 76, 266, 167], margin)
        assert max(probs, key=probs.get) == "happy"


def test_wrong_file_is_refused(tmp_path):
    (tmp_path / "w.bin").write_bytes(np.zeros(4, np.float32).tobytes())
    (tmp_path / "m.json").write_text(json.dumps([{"paths": ["w.bin"], "weights": [
        {"name": "conv/filters", "shape": [4], "dtype": "float32"}]}]))
    with pytest.raises(ValueError, match="no tensor dense0/conv0/filters"):
        load_emotion_classifier("faceapi", weights_file=tmp_path / "m.json")
