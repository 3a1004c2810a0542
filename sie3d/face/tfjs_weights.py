"""TensorFlow.js weight files (``*-weights_manifest.json`` + binary shards) read with numpy alone.

A manifest is a JSON list of groups ``{"paths": [shard files], "weights": [entries]}``. The shards of
a group, concatenated in order, hold the entries back to back in manifest order. An entry has a
``name``, a ``shape`` and a ``dtype`` (``float32`` | ``int32``); an entry with ``quantization``
``{"dtype": "uint8" | "uint16", "scale": s, "min": m}`` is stored as unsigned integers ``q`` and
stands for ``q · s + m`` (tfjs's affine dequantisation; a ``float16`` quantisation is stored as
IEEE half floats). Shapes are TensorFlow's: conv filters ``[kh, kw, in, out]``, depthwise filters
``[kh, kw, in, 1]``, dense weights ``[in, out]``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

_STORED = {"float32": np.float32, "int32": np.int32, "uint8": np.uint8, "uint16": np.uint16,
           "float16": np.float16}


def read_tfjs_weights(manifest_path: str | Path) -> dict[str, np.ndarray]:
    """Every tensor of a tfjs manifest, dequantised to float32 (int32 tensors stay int32).

    Args:
        manifest_path: the ``*-weights_manifest.json``; its shards are looked up beside it.

    Returns:
        ``{name: array of the manifest's shape}`` in manifest order.

    Raises:
        ValueError: the manifest is malformed, a shard is missing or has the wrong length.
    """
    manifest_path = Path(manifest_path)
    try:
        groups = json.loads(manifest_path.read_text())
    except (OSError, ValueError) as exc:
        raise ValueError(f"{manifest_path} is not a tfjs weights manifest ({exc})") from None
    if not isinstance(groups, list) or not all(isinstance(g, dict) and "paths" in g and "weights" in g
                                               for g in groups):
        raise ValueError(f"{manifest_path} is not a tfjs weights manifest (a list of {{paths, weights}} groups)")
    tensors: dict[str, np.ndarray] = {}
    for group in groups:
        shards = [manifest_path.parent / p for p in group["paths"]]
        missing = [s.name for s in shards if not s.is_file()]
        if missing:
            raise ValueError(f"{manifest_path.name} names shard(s) {', '.join(missing)} that are not beside it")
        buffer = b"".join(s.read_bytes() for s in shards)
        offset = 0
        for entry in group["weights"]:
            quant = entry.get("quantization")
            stored = _STORED[quant["dtype"] if quant else entry["dtype"]]
            count = int(np.prod(entry["shape"], dtype=np.int64))
            nbytes = count * np.dtype(stored).itemsize
            if offset + nbytes > len(buffer):
                raise ValueError(f"{manifest_path.name}: shard data ends inside tensor {entry['name']}")
            raw = np.frombuffer(buffer, dtype=stored, count=count, offset=offset).reshape(entry["shape"])
            offset += nbytes
            if quant and quant["dtype"] in ("uint8", "uint16"):
                value = raw.astype(np.float64) * quant["scale"] + quant["min"]
            else:
                value = raw
            tensors[entry["name"]] = value.astype(np.int32 if entry["dtype"] == "int32" else np.float32)
        if offset != len(buffer):
            raise ValueError(f"{manifest_path.name}: {len(buffer) - offset} bytes of shard data are not "
                             "described by the manifest")
    return tensors
