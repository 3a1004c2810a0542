"""Small TFLite float graphs (MediaPipe's face landmarks, selfie segmentation) run as PyTorch modules.

The ``.tflite`` flatbuffer is parsed with the ``tflite`` package (the generated schema, pure Python):
constant tensors (fp16 weights behind ``DEQUANTIZE`` nodes are widened to float32) become buffers,
and :class:`TFLiteGraph` executes the operator list in order with torch ops, channels-first inside:

* ``CONV_2D`` filter ``[O, KH, KW, I]``, ``DEPTHWISE_CONV_2D`` filter ``[1, KH, KW, C]``, pools,
  all with TensorFlow "SAME" (odd pixel after) or "VALID" windows and strides; fused activations;
* ``PRELU`` alpha ``[1, 1, C]`` per channel, ``ADD`` / ``MUL`` with broadcasting, ``PAD`` (also on
  channels), ``RELU``, ``HARD_SWISH``, ``LOGISTIC``, ``RESIZE_BILINEAR``, and MediaPipe's custom
  ``Convolution2DTransposeBias`` (a stride-2 transposed convolution plus bias).

Inputs and outputs are channels-last, as in the file. Differentiable in the input.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .keras_h5 import pad_same

_ACTIVATIONS = {0: lambda x: x, 1: F.relu, 3: lambda x: x.clamp(0, 6), 2: lambda x: x.clamp(-1, 1)}
_PERMUTE_NHWC = (0, 3, 1, 2)  # channels-last axis i of a rank-4 tensor lives at NCHW axis _PERMUTE_NHWC.index(i)


def _tflite():
    try:
        import tflite
    except ImportError:
        raise ImportError("the 'tflite' package parses MediaPipe's .tflite models: pip install 'tflite==2.18.0'") from None
    return tflite


def _to_nchw(value: torch.Tensor) -> torch.Tensor:
    """A channels-last constant or activation in the channels-first layout used inside."""
    if value.ndim == 4:
        return value.permute(0, 3, 1, 2)
    if value.ndim in (1, 3):  # [C] or [1, 1, C]: per channel
        return value.reshape(1, -1, 1, 1)
    return value


class TFLiteGraph(nn.Module):
    """A TFLite float model as a module: ``forward(x [B, H, W, C])`` -> list of outputs (channels-last)."""

    def __init__(self, path: str | Path):
        super().__init__()
        tflite = _tflite()
        data = Path(path).read_bytes()
        model = tflite.Model.GetRootAsModel(data, 0)
        graph = model.Subgraphs(0)
        builtin = {v: k for k, v in vars(tflite.BuiltinOperator).items() if not k.startswith("_")}
        self._consts: dict[int, str] = {}
        float16 = tflite.TensorType.FLOAT16
        for index in range(graph.TensorsLength()):
            tensor = graph.Tensors(index)
            buffer = model.Buffers(tensor.Buffer())
            if buffer is None or buffer.DataLength() == 0:
                continue
            dtype = {tflite.TensorType.FLOAT32: np.float32, float16: np.float16,
                     tflite.TensorType.INT32: np.int32}[tensor.Type()]
            shape = tuple(int(s) for s in tensor.ShapeAsNumpy()) if tensor.ShapeLength() else ()
            value = np.frombuffer(buffer.DataAsNumpy().tobytes(), dtype=dtype).reshape(shape)
            name = f"c{index}"
            self.register_buffer(name, torch.from_numpy(value.astype(np.int64 if dtype == np.int32 else np.float32)))
            self._consts[index] = name
        self.ops: list[tuple[str, list[int], list[int], object]] = []
        for i in range(graph.OperatorsLength()):
            op = graph.Operators(i)
            code = model.OperatorCodes(op.OpcodeIndex())
            kind = builtin.get(max(code.BuiltinCode(), code.DeprecatedBuiltinCode()))
            if kind == "CUSTOM":
                kind = "CUSTOM:" + code.CustomCode().decode()
            self.ops.append((kind, [int(j) for j in op.InputsAsNumpy()], [int(j) for j in op.OutputsAsNumpy()],
                             self._options(tflite, kind, op)))
        for kind, ins, outs, _ in self.ops:  # fp16 weights: the widened constant stands for the node
            if kind == "DEQUANTIZE" and ins[0] in self._consts:
                self._consts[outs[0]] = self._consts[ins[0]]
        self.ops = [op for op in self.ops if not (op[0] == "DEQUANTIZE" and op[1][0] in self._consts)]
        self.inputs = [int(j) for j in graph.InputsAsNumpy()]
        self.outputs = [int(j) for j in graph.OutputsAsNumpy()]
        self.output_names = [graph.Tensors(j).Name().decode() for j in self.outputs]
        unknown = sorted({k for k, *_ in self.ops} - set(_KERNELS))
        if unknown:
            raise ValueError(f"{Path(path).name}: operators {', '.join(unknown)} are not supported")

    @staticmethod
    def _options(tflite, kind: str, op) -> dict:
        table = op.BuiltinOptions()
        if kind in ("CONV_2D", "DEPTHWISE_CONV_2D"):
            cls = tflite.Conv2DOptions if kind == "CONV_2D" else tflite.DepthwiseConv2DOptions
            o = cls()
            o.Init(table.Bytes, table.Pos)
            return {"same": o.Padding() == tflite.Padding.SAME, "stride": (o.StrideH(), o.StrideW()),
                    "act": o.FusedActivationFunction()}
        if kind in ("MAX_POOL_2D", "AVERAGE_POOL_2D"):
            o = tflite.Pool2DOptions()
            o.Init(table.Bytes, table.Pos)
            return {"same": o.Padding() == tflite.Padding.SAME, "stride": (o.StrideH(), o.StrideW()),
                    "kernel": (o.FilterHeight(), o.FilterWidth()), "act": o.FusedActivationFunction()}
        if kind in ("ADD", "MUL"):
            o = (tflite.AddOptions if kind == "ADD" else tflite.MulOptions)()
            o.Init(table.Bytes, table.Pos)
            return {"act": o.FusedActivationFunction()}
        if kind == "RESIZE_BILINEAR":
            o = tflite.ResizeBilinearOptions()
            o.Init(table.Bytes, table.Pos)
            return {"align_corners": bool(o.AlignCorners()), "half_pixel": bool(o.HalfPixelCenters())}
        if kind.startswith("CUSTOM:"):  # MediaPipe's TfLiteTransposeConvParams-like struct: padding, stride w, h
            raw = op.CustomOptionsAsNumpy()
            padding, stride_w, stride_h = np.frombuffer(raw.tobytes()[:12], dtype=np.int32)
            return {"same": int(padding) == 1, "stride": (int(stride_h), int(stride_w))}
        return {}

    def const(self, index: int) -> torch.Tensor:
        return getattr(self, self._consts[index])

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        values: dict[int, torch.Tensor] = {self.inputs[0]: x.permute(0, 3, 1, 2)}

        def get(index: int) -> torch.Tensor:
            return values[index] if index in values else _to_nchw(self.const(index))

        for kind, ins, outs, options in self.ops:
            values[outs[0]] = _KERNELS[kind](self, ins, options, get)
        return [values[j].permute(0, 2, 3, 1) if values[j].ndim == 4 else values[j] for j in self.outputs]


def _window(x: torch.Tensor, kernel: tuple[int, int], stride: tuple[int, int], same: bool, value: float = 0.0):
    if not same:
        return x
    if kernel[0] == kernel[1] and stride[0] == stride[1]:
        return pad_same(x, kernel[0], stride[0], value)
    raise ValueError("non-square SAME windows are not supported")


def _conv(graph, ins, o, get):
    weight = graph.const(ins[1])  # [O, KH, KW, I]
    x = _window(get(ins[0]), tuple(weight.shape[1:3]), o["stride"], o["same"])
    bias = graph.const(ins[2]) if len(ins) > 2 and ins[2] >= 0 else None
    return _ACTIVATIONS[o["act"]](F.conv2d(x, weight.permute(0, 3, 1, 2), bias, stride=o["stride"]))


def _depthwise(graph, ins, o, get):
    weight = graph.const(ins[1])  # [1, KH, KW, C]
    x = _window(get(ins[0]), tuple(weight.shape[1:3]), o["stride"], o["same"])
    bias = graph.const(ins[2]) if len(ins) > 2 and ins[2] >= 0 else None
    return _ACTIVATIONS[o["act"]](F.conv2d(x, weight.permute(3, 0, 1, 2), bias, stride=o["stride"],
                                           groups=x.shape[1]))


def _pool(graph, ins, o, get, average: bool):
    x = get(ins[0])
    if average:  # TFLite averages over the valid pixels only
        ones = torch.ones_like(x[:, :1])
        padded, count = _window(x, o["kernel"], o["stride"], o["same"]), _window(ones, o["kernel"], o["stride"], o["same"])
        y = F.avg_pool2d(padded, o["kernel"], o["stride"]) / F.avg_pool2d(count, o["kernel"], o["stride"])
    else:
        y = F.max_pool2d(_window(x, o["kernel"], o["stride"], o["same"], float("-inf")), o["kernel"], o["stride"])
    return _ACTIVATIONS[o["act"]](y)


def _pad(graph, ins, o, get):
    paddings = graph.const(ins[1]).tolist()  # [[before, after] per channels-last axis]
    flat = []
    for nchw_axis in (3, 2, 1, 0):  # F.pad lists the last axis first
        before, after = paddings[_PERMUTE_NHWC[nchw_axis]]
        flat += [before, after]
    return F.pad(get(ins[0]), flat)


def _resize(graph, ins, o, get):
    size = [int(v) for v in graph.const(ins[1]).tolist()]
    if o["align_corners"]:
        return F.interpolate(get(ins[0]), size=size, mode="bilinear", align_corners=True)
    if not o["half_pixel"]:
        raise ValueError("RESIZE_BILINEAR without half-pixel centres is not supported")
    return F.interpolate(get(ins[0]), size=size, mode="bilinear", align_corners=False)


def _transpose_conv_bias(graph, ins, o, get):
    weight = graph.const(ins[1])  # [O, KH, KW, I]
    kernel, stride = int(weight.shape[1]), o["stride"][0]
    y = F.conv_transpose2d(get(ins[0]), weight.permute(3, 0, 1, 2), stride=stride)
    if o["same"]:  # keep out = in * stride, cropping the overhang as TensorFlow does (extra after)
        extra = kernel - stride
        y = y[..., extra // 2: y.shape[-2] - (extra - extra // 2), extra // 2: y.shape[-1] - (extra - extra // 2)]
    return y + _to_nchw(graph.const(ins[2]))


_KERNELS = {
    "DEQUANTIZE": lambda g, ins, o, get: get(ins[0]),
    "CONV_2D": _conv,
    "DEPTHWISE_CONV_2D": _depthwise,
    "MAX_POOL_2D": lambda g, ins, o, get: _pool(g, ins, o, get, average=False),
    "AVERAGE_POOL_2D": lambda g, ins, o, get: _pool(g, ins, o, get, average=True),
    "PRELU": lambda g, ins, o, get: torch.where(get(ins[0]) >= 0, get(ins[0]), get(ins[0]) * get(ins[1])),
    "ADD": lambda g, ins, o, get: _ACTIVATIONS[o["act"]](get(ins[0]) + get(ins[1])),
    "MUL": lambda g, ins, o, get: _ACTIVATIONS[o["act"]](get(ins[0]) * get(ins[1])),
    "PAD": _pad,
    "RELU": lambda g, ins, o, get: F.relu(get(ins[0])),
    "HARD_SWISH": lambda g, ins, o, get: F.hardswish(get(ins[0])),
    "LOGISTIC": lambda g, ins, o, get: torch.sigmoid(get(ins[0])),
    "RESIZE_BILINEAR": _resize,
    "CUSTOM:Convolution2DTransposeBias": _transpose_conv_bias,
}
