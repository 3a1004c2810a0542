"""Feature extractors: clean-fid preprocessing, the TorchScript Inception call path, the dlib substitute."""

import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from sie3d.evaluation.features import (
    FRECHET_LABELS,
    KID_LABELS,
    DlibDescriptorFeatures,
    InceptionFeatures,
    clean_resize,
    make_feature_extractor,
    resolve_feature_space,
)
from sie3d.weights import ModelNotAvailable


class TinyInception(torch.nn.Module):
    """Same call signature as inception-2015-12-05.pt: forward(img 0..255, return_features)."""

    def __init__(self):
        super().__init__()
        self.layers = torch.nn.Sequential(
            torch.nn.Conv2d(3, 6, kernel_size=7, stride=5), torch.nn.ReLU(),
            torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
        self.output = torch.nn.Linear(6, 4)

    def forward(self, img: torch.Tensor, return_features: bool = False) -> torch.Tensor:
        x = img.to(torch.float32)
        if x.shape[2] != 299 or x.shape[3] != 299:
            x = F.interpolate(x, size=[299, 299], mode="bilinear", align_corners=False)
        features = self.layers((x - 128) / 128)
        if return_features:
            return features
        return torch.softmax(self.output(features), dim=1)


@pytest.fixture
def tiny_inception_file(tmp_path):
    torch.manual_seed(0)
    path = tmp_path / "tiny-inception.pt"
    with warnings.catch_warnings():  # torch.jit.script/save are deprecated since torch 2.10
        warnings.simplefilter("ignore", DeprecationWarning)
        module = torch.jit.script(TinyInception().eval())
        torch.jit.save(module, str(path))
    return path, module


def _images(seed=0, count=5):
    rng = np.random.default_rng(seed)
    sizes = [(64, 64), (120, 90), (299, 299), (31, 47), (200, 200)]
    return [rng.integers(0, 256, size=(*sizes[i % len(sizes)], 3), dtype=np.uint8) for i in range(count)]


def test_clean_resize_is_unquantised_pil_bicubic():
    rng = np.random.default_rng(1)
    # a smooth image: PIL's uint8 bicubic differs from the float one only by rounding (and clipping)
    yy, xx = np.mgrid[0:80, 0:60]
    image = np.stack([xx * 4, yy * 3, (xx + yy)], axis=2).astype(np.uint8)
    resized = clean_resize(image)
    assert resized.dtype == np.float32 and resized.shape == (299, 299, 3)
    reference = np.asarray(Image.fromarray(image).resize((299, 299), resample=Image.BICUBIC)).astype(np.float32)
    assert np.abs(resized - reference).max() <= 1.0
    assert np.abs(resized - np.round(resized)).max() > 0.01  # float output, not re-quantised
    noisy = clean_resize(rng.integers(0, 256, size=(40, 40, 3), dtype=np.uint8))
    assert noisy.min() >= 0.0 and noisy.max() <= 255.0  # bicubic overshoot is clipped
    constant = clean_resize(np.full((17, 23, 3), 77, np.uint8))
    np.testing.assert_allclose(constant, 77.0, atol=1e-3)


def test_clean_resize_rejects_non_uint8_rgb():
    with pytest.raises(ValueError, match="uint8|RGB array"):
        clean_resize(np.zeros((8, 8, 3), np.float32))
    with pytest.raises(ValueError, match="uint8|RGB array"):
        clean_resize(np.zeros((8, 8), np.uint8))


def test_inception_features_call_the_torchscript_model_like_clean_fid(tiny_inception_file):
    path, module = tiny_inception_file
    images = _images()
    features = InceptionFeatures(path=path, batch_size=2)(images)
    assert features.values.shape == (5, 6) and features.kept == [0, 1, 2, 3, 4]
    assert features.space == "inception" and features.model == "tiny-inception"
    # clean-fid's own call: resized float 0..255 in CHW, then layers((x - 128) / 128)
    for image, row in zip(images, features.values):
        chw = torch.from_numpy(np.transpose(clean_resize(image), (2, 0, 1)).copy())[None]
        expected = module.layers((chw - 128) / 128)[0].detach().double().numpy()
        np.testing.assert_allclose(row, expected, rtol=1e-5, atol=1e-6)
    # batching does not change anything
    np.testing.assert_allclose(InceptionFeatures(path=path, batch_size=16)(images).values, features.values,
                               rtol=1e-5, atol=1e-6)


def test_inception_features_use_the_registry_file(tiny_inception_file, sie3d_home):
    path, _ = tiny_inception_file
    assert resolve_feature_space("auto") == "dlib"  # nothing cached: the labelled substitute
    with pytest.raises(ModelNotAvailable, match="sie3d weights download inception-fid"):
        InceptionFeatures()
    with pytest.raises(ModelNotAvailable):
        make_feature_extractor("inception")
    target = sie3d_home / "models" / "inception-fid" / "inception-2015-12-05.pt"
    target.parent.mkdir(parents=True)
    target.write_bytes(path.read_bytes())
    assert resolve_feature_space("auto") == "inception"
    extractor = make_feature_extractor("auto")
    assert isinstance(extractor, InceptionFeatures) and extractor.name == "inception-2015-12-05"
    assert extractor(_images(count=2)).values.shape == (2, 6)


def test_feature_space_names_and_labels():
    with pytest.raises(ValueError, match="unknown feature space"):
        resolve_feature_space("clip")
    assert "not FID" in FRECHET_LABELS["dlib"] and "not KID" in KID_LABELS["dlib"]
    assert FRECHET_LABELS["inception"].startswith("FID") and KID_LABELS["inception"].startswith("KID")


def test_dlib_substitute_embeds_faces_and_drops_images_without_one():
    from skimage.data import astronaut

    photo = astronaut()
    blank = np.full((200, 200, 3), 255, np.uint8)
    features = DlibDescriptorFeatures()([photo, blank, photo[:, ::-1].copy()])
    assert features.space == "dlib" and features.kept == [0, 2]
    assert features.values.shape == (2, 128)
    np.testing.assert_allclose(np.linalg.norm(features.values, axis=1), 1.0, atol=1e-5)
    # a mirrored photo is the same person for dlib (descriptor distance well under its 0.6 threshold)
    assert np.linalg.norm(features.values[0] - features.values[1]) < 0.6
