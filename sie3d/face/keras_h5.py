"""Keras 2 HDF5 weight files read with h5py alone (no TensorFlow), and the Keras layer semantics
PyTorch lacks (TensorFlow "SAME" padding, separable convolutions).

A Keras ``.h5`` holds, in the root group (``model.save_weights``) or under ``model_weights``
(``model.save``), an attribute ``layer_names`` listing layers in model order; each layer group has
``weight_names`` naming datasets such as ``conv2d_1/kernel:0``. Keras's ``load_weights`` assigns
them by that order, and so does :func:`assign_keras_weights`.

Layout conversions (Keras channels-last -> PyTorch):

* Conv2D kernel ``[kh, kw, in, out]`` -> ``[out, in, kh, kw]``
* DepthwiseConv kernel ``[kh, kw, in, 1]`` -> ``[in, 1, kh, kw]``
* Dense kernel ``[in, out]`` -> ``[out, in]``
* BatchNormalization gamma, beta, moving_mean, moving_variance -> weight, bias, running_mean, running_var
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import h5py
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def read_keras_h5(path: str | Path) -> list[tuple[str, dict[str, np.ndarray]]]:
    """The layers that carry weights, in model order.

    Returns:
        ``[(layer_name, {"kernel": array, "bias": array, ...}), ...]``; keys are the weight names
        without scope and ``:0`` suffix.

    Raises:
        ValueError: the file is not a Keras HDF5 weight file.
    """
    path = Path(path)
    try:
        handle = h5py.File(path, "r")
    except OSError as exc:
        raise ValueError(f"{path} is not an HDF5 file ({exc}); expected a Keras .h5 weight file") from None
    with handle:
        group = handle["model_weights"] if "model_weights" in handle else handle
        if "layer_names" not in group.attrs:
            raise ValueError(f"{path} has no 'layer_names' attribute: not a Keras 2 HDF5 weight file")
        layers = []
        for raw_name in group.attrs["layer_names"]:
            name = _text(raw_name)
            weight_names = [_text(w) for w in group[name].attrs.get("weight_names", [])]
            if not weight_names:
                continue
            weights = {w.split("/")[-1].split(":")[0]: np.asarray(group[name][w]) for w in weight_names}
            layers.append((name, weights))
    return layers


def _copy(target: torch.Tensor, value: np.ndarray, where: str) -> None:
    if tuple(target.shape) != tuple(value.shape):
        raise ValueError(f"{where}: shape {tuple(value.shape)} in the file, {tuple(target.shape)} expected")
    with torch.no_grad():
        target.copy_(torch.from_numpy(np.ascontiguousarray(value, dtype=np.float32)))


def _assign(module: nn.Module, weights: dict[str, np.ndarray], where: str) -> None:
    if isinstance(module, nn.BatchNorm2d):
        for key, attr in (("gamma", "weight"), ("beta", "bias"), ("moving_mean", "running_mean"),
                          ("moving_variance", "running_var")):
            _copy(getattr(module, attr), weights[key], f"{where}/{key}")
    elif isinstance(module, SeparableConv2d):
        _copy(module.depthwise.weight, weights["depthwise_kernel"].transpose(2, 3, 0, 1), f"{where}/depthwise")
        _copy(module.pointwise.weight, weights["pointwise_kernel"].transpose(3, 2, 0, 1), f"{where}/pointwise")
    elif isinstance(module, nn.Conv2d):
        _copy(module.weight, weights["kernel"].transpose(3, 2, 0, 1), f"{where}/kernel")
    elif isinstance(module, nn.Linear):
        _copy(module.weight, weights["kernel"].T, f"{where}/kernel")
    else:  # pragma: no cover - programming error in a network definition
        raise TypeError(f"no Keras weight mapping for {type(module).__name__}")
    expected_bias = getattr(module, "bias", None) is not None and not isinstance(module, nn.BatchNorm2d)
    if expected_bias:
        if "bias" not in weights:
            raise ValueError(f"{where}: the file has no bias where the network expects one")
        _copy(module.bias, weights["bias"], f"{where}/bias")
    elif "bias" in weights and not isinstance(module, nn.BatchNorm2d):
        raise ValueError(f"{where}: the file has a bias the network does not expect")


def assign_keras_weights(modules: Sequence[nn.Module], path: str | Path, network: str) -> None:
    """Copy a Keras file's weights into ``modules`` (the network's weighted layers in Keras order).

    Raises:
        ValueError: naming the first layer whose count, kind or shape does not match ``network``.
    """
    layers = read_keras_h5(path)
    if len(layers) != len(modules):
        raise ValueError(f"{path} has {len(layers)} weighted layers, the {network} network has "
                         f"{len(modules)}: this is not the {network} weight file")
    for module, (name, weights) in zip(modules, layers):
        try:
            _assign(module, weights, f"{Path(path).name}:{name}")
        except KeyError as exc:
            raise ValueError(f"{path}:{name} lacks weight {exc.args[0]!r} expected by the {network} "
                             f"network ({type(module).__name__})") from None


def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow "SAME": output ``ceil(size / stride)``; the odd pixel of padding goes after.

    Returns:
        (before, after) padding along one axis.
    """
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def pad_same(x: torch.Tensor, kernel: int, stride: int, value: float = 0.0) -> torch.Tensor:
    """Pad ``[B, C, H, W]`` for a "SAME" window (``value=-inf`` for max pooling)."""
    top, bottom = same_padding(x.shape[-2], kernel, stride)
    left, right = same_padding(x.shape[-1], kernel, stride)
    if top == bottom == left == right == 0:
        return x
    return F.pad(x, (left, right, top, bottom), value=value)


class SeparableConv2d(nn.Module):
    """Keras ``SeparableConv2D`` (depth multiplier 1, no bias, "SAME"): depthwise k×k then pointwise 1×1."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3):
        super().__init__()
        self.kernel_size = kernel_size
        self.depthwise = nn.Conv2d(in_channels, in_channels, kernel_size, groups=in_channels, bias=False)
        self.pointwise = nn.Conv2d(in_channels, out_channels, 1, bias=False)
        self.bias = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pointwise(self.depthwise(pad_same(x, self.kernel_size, 1)))
