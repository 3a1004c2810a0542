"""Feature spaces for the Fréchet distance and KID.

``inception``
    The standard Inception-v3 TorchScript (``inception-2015-12-05.pt``, registry name
    ``inception-fid``) that StyleGAN and clean-fid use, loaded with ``torch.jit.load``. Images go
    through clean-fid's "clean" preprocessing: each channel of the uint8 image is resized to
    299x299 with PIL's bicubic filter in float mode (no re-quantisation), clipped to [0, 255], and
    passed as a float [N, 3, 299, 299] batch in the 0..255 range; ``model(x, return_features=True)``
    returns the 2048-d pool features. (On a 299x299 input the model's own resize is the identity, so
    this equals clean-fid's ``layers((x - 128) / 128)`` call.) Distances here are FID and KID.

``dlib``
    The offline substitute: dlib's 128-d face descriptors (the identity encoder of
    :mod:`sie3d.face.identity`) of the most prominent face in each image. It is a face-identity
    space, not Inception's: its numbers are labelled :data:`FRECHET_LABELS` ``["dlib"]`` wherever
    they are reported and are never comparable with published FID/KID values.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..images import check_rgb_uint8
from ..weights import is_available, model_path

INCEPTION_MODEL = "inception-fid"  # registry name of inception-2015-12-05.pt
INCEPTION_SIZE = 299

FEATURE_SPACES = ("inception", "dlib")
#: how a Fréchet distance / KID in each space is named in every table, JSON file and plot
FRECHET_LABELS = {
    "inception": "FID (Inception-v3 pool features, clean-fid 'clean' resize)",
    "dlib": "Fréchet distance in dlib-descriptor space (not FID)",
}
KID_LABELS = {
    "inception": "KID (Inception-v3 pool features, clean-fid 'clean' resize)",
    "dlib": "KID-style MMD² in dlib-descriptor space (not KID)",
}


@dataclass
class FeatureSet:
    """Features of the images that could be embedded.

    Attributes:
        values: [M, D] feature vectors (float64).
        kept: indices (into the input list) of the M embedded images; the dlib space drops
            images in which no face is found, Inception keeps all.
        space: ``inception`` or ``dlib``.
        model: name of the network that produced them.
    """

    values: np.ndarray
    kept: list[int] = field(default_factory=list)
    space: str = ""
    model: str = ""


def clean_resize(image: np.ndarray, size: int = INCEPTION_SIZE) -> np.ndarray:
    """clean-fid's "clean" resize: per-channel PIL bicubic in float mode, clipped, not quantised.

    Args:
        image: uint8 [H, W, 3].

    Returns:
        float32 [size, size, 3] in [0, 255].
    """
    image = check_rgb_uint8(image)
    channels = [
        np.asarray(Image.fromarray(image[:, :, c].astype(np.float32))  # float32 -> PIL mode "F"
                   .resize((size, size), resample=Image.BICUBIC))
        for c in range(3)
    ]
    return np.clip(np.stack(channels, axis=2), 0.0, 255.0).astype(np.float32)


class InceptionFeatures:
    """2048-d Inception pool features of uint8 images (the FID/KID feature space).

    Args:
        path: a TorchScript file with ``forward(img [N, 3, 299, 299] float 0..255,
            return_features: bool)``; default: the registry's ``inception-fid`` (raises
            ``ModelNotAvailable`` with the download command when it is not cached).
        device: torch device for the network.
        batch_size: images per forward pass.
    """

    space = "inception"

    def __init__(self, path: str | Path | None = None, device: str | torch.device = "cpu", batch_size: int = 16):
        self.path = Path(path) if path is not None else model_path(INCEPTION_MODEL)
        self.device = torch.device(device)
        self.batch_size = batch_size
        with warnings.catch_warnings():  # torch >= 2.10 deprecates TorchScript; the FID network only ships as one
            warnings.simplefilter("ignore", DeprecationWarning)
            self.model = torch.jit.load(str(self.path), map_location=self.device).eval()
        self.name = self.path.stem  # inception-2015-12-05

    @torch.no_grad()
    def __call__(self, images: Sequence[np.ndarray]) -> FeatureSet:
        """images: uint8 [H, W, 3] each (any size) -> FeatureSet with values [N, D] (D = 2048)."""
        images = [check_rgb_uint8(image, f"image {i}") for i, image in enumerate(images)]
        chunks = []
        for start in range(0, len(images), self.batch_size):
            batch = np.stack([clean_resize(image) for image in images[start:start + self.batch_size]])
            x = torch.from_numpy(batch).permute(0, 3, 1, 2).contiguous().to(self.device)  # [B, 3, 299, 299]
            chunks.append(self.model(x, return_features=True).reshape(x.shape[0], -1).double().cpu().numpy())
        values = np.concatenate(chunks) if chunks else np.zeros((0, 0))
        return FeatureSet(values=values, kept=list(range(len(images))), space=self.space, model=self.name)


class DlibDescriptorFeatures:
    """The offline substitute space: dlib 128-d descriptors of the most prominent face per image.

    Args:
        detector: backend of :func:`sie3d.face.detect.detect_faces` (``dlib`` | ``haar`` | ``scrfd``).
    """

    space = "dlib"

    def __init__(self, detector: str = "dlib"):
        from ..face.identity import make_identity_encoder

        self.detector = detector
        self.encoder = make_identity_encoder("dlib")
        self.name = self.encoder.name

    def __call__(self, images: Sequence[np.ndarray], faces: Sequence | None = None) -> FeatureSet:
        """images: uint8 [H, W, 3] each -> FeatureSet with values [M, 128] for the M images with a face.

        Args:
            faces: optional precomputed best face per image (``sie3d.face.detect.Face`` or None for
                "no face"), e.g. from a detection cache; default: detect here.
        """
        from ..face.detect import detect_faces

        if faces is not None and len(faces) != len(images):
            raise ValueError(f"got {len(faces)} faces for {len(images)} images")
        values, kept = [], []
        for index, image in enumerate(images):
            image = check_rgb_uint8(image, f"image {index}")
            if faces is not None:
                face = faces[index]
            else:
                found = detect_faces(image, backend=self.detector)
                face = found[0] if found else None  # ranked best first
            if face is None:
                continue
            values.append(np.asarray(self.encoder.embed(image, face), np.float64))
            kept.append(index)
        dim = values[0].shape[0] if values else 128
        return FeatureSet(values=np.stack(values) if values else np.zeros((0, dim)), kept=kept,
                          space=self.space, model=self.name)


def resolve_feature_space(requested: str = "auto") -> str:
    """``auto`` -> ``inception`` when its weights are cached, else the labelled ``dlib`` substitute."""
    if requested == "auto":
        return "inception" if is_available(INCEPTION_MODEL) else "dlib"
    if requested not in FEATURE_SPACES:
        raise ValueError(f"unknown feature space {requested!r}; use auto, inception or dlib")
    return requested


def make_feature_extractor(space: str = "auto", device: str | torch.device = "cpu"):
    """The extractor of a feature space (``auto`` | ``inception`` | ``dlib``); see the module docstring."""
    space = resolve_feature_space(space)
    if space == "inception":
        return InceptionFeatures(device=device)
    return DlibDescriptorFeatures()
