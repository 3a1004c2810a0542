"""``avatar.rig``: a finished avatar posable at any blendshape coefficients, outside the trainer.

A rig holds the midpoint-subdivided template mesh the Gaussians are bound to (rest vertices, per-blendshape
vertex deltas, faces) and each Gaussian's binding (face, local offset / rotation / log-scale, colour,
opacity). :meth:`Rig.pose` re-poses it exactly as ``MeshGaussians.to_world(template.deform(c))`` does,
from the file alone (the browser viewer reads the same bytes). The byte layout, version 1, is the
project's contract (README, "The rig file")::

    gzip( b"SIE3DRIG" | uint32 LE version | uint32 LE header length H | UTF-8 JSON header (H bytes),
          zero-padded to 4 bytes | blob: the buffers, each at a 4-byte-aligned offset )

The header names every buffer's dtype, shape, offset and length (``header["buffers"]``); readers honour
it. ``head_size`` is the rest mesh's width (x extent, world units): the unit of the rig's position error.
"""

from __future__ import annotations

import gzip
import json
import math
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..config import CameraConfig
from ..render.splats import Splats
from .gaussians import MeshGaussians, face_frames, quat_multiply, rotmat_to_quat
from .template import EXPRESSION_PROTOTYPES, subdivide_template

RIG_MAGIC = b"SIE3DRIG"
RIG_VERSION = 1
_PREAMBLE = struct.Struct("<8sII")
_DTYPES = ("float32", "float16", "uint32", "uint16", "uint8")
#: the step some float buffers are rounded to before they are stored (their dtype unchanged, so readers need
#: not know): fewer distinct values compress ~1.6x better. Units: world (blendshapes: 4e-6; the rest mesh is
#: stored unrounded, as frames of thin faces turn with any vertex error), face units (offsets: 1/256 of a
#: face, ~1e-4 world on the quick preset), quaternion components (rotations: ~0.1 deg, like .spz's),
#: natural log (log_scales: 0.8 % in scale; .spz: 6 %)
QUANTA = {"blendshapes": 2.0 ** -18, "offsets": 2.0 ** -8, "rotations": 2.0 ** -9, "log_scales": 2.0 ** -7}


def _align4(n: int) -> int:
    return (n + 3) // 4 * 4


def _index_dtype(count: int) -> str:
    """The narrowest unsigned integer dtype that indexes ``count`` items."""
    return "uint16" if count <= 1 << 16 else "uint32"


def _quantize(values: torch.Tensor, step: float) -> np.ndarray:
    """``values`` rounded to multiples of ``step`` (float64 numpy; exact in float16 for the ranges here)."""
    return np.rint(values.double().numpy() / step) * step


def _to_u8(values: torch.Tensor) -> np.ndarray:
    return np.clip(np.rint(values.double().numpy() * 255.0), 0, 255).astype(np.uint8)


def rig_emotions(expression_names: list[str]) -> dict[str, dict[str, float]]:
    """The emotion prototypes (:data:`~sie3d.avatar.template.EXPRESSION_PROTOTYPES`) this template can pose:
    those whose blendshapes it has (all seven on the built-in head; only ``neutral`` on FLAME)."""
    return {emotion: dict(shape) for emotion, shape in EXPRESSION_PROTOTYPES.items()
            if all(name in expression_names for name in shape)}


def encode_rig(gaussians: MeshGaussians, coefficients: torch.Tensor, camera: CameraConfig | None = None) -> bytes:
    """The ``avatar.rig`` bytes of ``gaussians`` (bound to their template) whose own expression is
    ``coefficients`` ``[K]``; ``camera``'s frontal evaluation camera (default: :class:`CameraConfig`'s) is
    recorded for viewers."""
    template = gaussians.template
    if coefficients.shape != (template.num_expressions,):
        raise ValueError(f"coefficients must be [K={template.num_expressions}], got {list(coefficients.shape)}")
    camera = camera or CameraConfig()
    sub, _ = subdivide_template(template.to("cpu"), gaussians.cfg.subdivisions)  # the mesh the faces index
    vertices, deltas = sub.vertices.detach().float(), sub.expression_basis.detach().float()
    p = {name: value.detach().cpu().float() for name, value in gaussians.params.items()}
    num_vertices, num_faces = vertices.shape[0], gaussians.faces.shape[0]
    normalized = torch.nn.functional.normalize(p["rotation"], dim=-1)
    arrays = {
        "vertices": vertices.numpy().astype("<f4"),
        "blendshapes": _quantize(deltas, QUANTA["blendshapes"]).astype("<f4"),
        "faces": gaussians.faces.cpu().numpy().astype(_index_dtype(num_vertices)),
        "face_ids": gaussians.face_ids.cpu().numpy().astype(_index_dtype(num_faces)),
        "offsets": _quantize(p["xyz"], QUANTA["offsets"]).astype("<f2"),
        "rotations": _quantize(normalized, QUANTA["rotations"]).astype("<f2"),
        "log_scales": _quantize(p["scaling"], QUANTA["log_scales"]).astype("<f2"),
        "opacities": _to_u8(torch.sigmoid(p["opacity"])),
        "colors": _to_u8(torch.sigmoid(p["color"])),
    }
    buffers, offset = {}, 0
    for name, array in arrays.items():
        array = np.ascontiguousarray(array)
        buffers[name] = {"dtype": array.dtype.name, "shape": list(array.shape), "offset": offset,
                         "length": array.nbytes}
        offset = _align4(offset + array.nbytes)
    header = {
        "format": "sie3d-rig", "version": RIG_VERSION, "up": "y",
        "num_gaussians": gaussians.num_gaussians, "num_vertices": num_vertices, "num_faces": num_faces,
        "blendshapes": list(template.expression_names),
        "coefficients": [float(c) for c in coefficients.detach().cpu()],
        "emotions": rig_emotions(template.expression_names),
        "head_size": float(vertices[:, 0].max() - vertices[:, 0].min()),
        "camera": {"radius": float(camera.eval_radius), "fovy_deg": math.degrees(camera.eval_fovy)},
        "buffers": buffers,
    }
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    blob = bytearray(offset)
    for name, array in arrays.items():
        start = buffers[name]["offset"]
        blob[start:start + array.nbytes] = np.ascontiguousarray(array).tobytes()
    raw = b"".join([_PREAMBLE.pack(RIG_MAGIC, RIG_VERSION, len(text)), text,
                    bytes(_align4(len(text)) - len(text)), bytes(blob)])
    return gzip.compress(raw, compresslevel=9, mtime=0)


def write_rig(gaussians: MeshGaussians, coefficients: torch.Tensor, path: str | Path,
              camera: CameraConfig | None = None) -> Path:
    """Write ``path`` (``avatar.rig``); see :func:`encode_rig`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(encode_rig(gaussians, coefficients, camera))
    return path


@dataclass
class Rig:
    """A decoded rig (CPU float32 / int64 tensors; shapes in the module docstring's contract).

    Attributes:
        header: the JSON header (``blendshapes``, ``coefficients``, ``emotions``, ``head_size``, ``camera``...).
        vertices: [V, 3] rest mesh (subdivided), world units, y up.
        blendshapes: [K, V, 3] vertex deltas per unit coefficient.
        faces: [F, 3] vertex indices.
        face_ids: [N] the face of each Gaussian.
        offsets: [N, 3] local mean offsets (face units); rotations: [N, 4] local wxyz quaternions;
        log_scales: [N, 3] (face units); opacities: [N] and colors: [N, 3] in [0, 1] (steps of 1/255).
    """

    header: dict
    vertices: torch.Tensor
    blendshapes: torch.Tensor
    faces: torch.Tensor
    face_ids: torch.Tensor
    offsets: torch.Tensor
    rotations: torch.Tensor
    log_scales: torch.Tensor
    opacities: torch.Tensor
    colors: torch.Tensor

    @property
    def blendshape_names(self) -> list[str]:
        return list(self.header["blendshapes"])

    @property
    def coefficients(self) -> torch.Tensor:
        """[K] the avatar's own (trained) expression."""
        return torch.tensor(self.header["coefficients"], dtype=torch.float32, device="cpu")

    def emotion_coefficients(self, emotion: str, intensity: float = 1.0) -> torch.Tensor:
        """[K] the emotion's prototype (the header's table) times ``intensity``."""
        emotions = self.header["emotions"]
        if emotion not in emotions:
            raise KeyError(f"the rig has no emotion {emotion!r}; it has {sorted(emotions)}")
        coeffs = torch.zeros(len(self.blendshape_names), device="cpu")
        for name, weight in emotions[emotion].items():
            coeffs[self.blendshape_names.index(name)] = intensity * weight
        return coeffs

    def pose(self, coefficients: torch.Tensor | None = None) -> Splats:
        """World splats at blendshape ``coefficients`` [K] (default: the avatar's own), on the CPU."""
        c = (self.coefficients if coefficients is None
             else torch.as_tensor(coefficients, dtype=torch.float32, device="cpu"))
        if c.shape != (len(self.blendshapes),):
            raise ValueError(f"coefficients must be [K={len(self.blendshapes)}] ({self.blendshape_names}), "
                             f"got {list(c.shape)}")
        vertices = self.vertices + torch.einsum("k,kvc->vc", c.cpu(), self.blendshapes)
        centroid, rotation, k = face_frames(vertices, self.faces)
        ids = self.face_ids
        centroid, rotation, k = centroid[ids], rotation[ids], k[ids]
        means = centroid + k[:, None] * (rotation @ self.offsets[..., None]).squeeze(-1)
        quats = quat_multiply(rotmat_to_quat(rotation), torch.nn.functional.normalize(self.rotations, dim=-1))
        return Splats(means=means, quats=quats, scales=k[:, None] * torch.exp(self.log_scales),
                      opacities=self.opacities.clone(), colors=self.colors.clone())


def decode_rig(data: bytes) -> Rig:
    """A :class:`Rig` from ``avatar.rig`` bytes.

    Raises:
        ValueError: not a gzip stream, a wrong magic or version, or a truncated stream or buffer.
    """
    try:
        raw = gzip.decompress(data)
    except (OSError, EOFError, zlib.error) as exc:
        raise ValueError(f"not an avatar.rig stream (gzip: {exc})") from None
    if len(raw) < _PREAMBLE.size:
        raise ValueError(f"avatar.rig stream truncated: {len(raw)} bytes, the preamble needs {_PREAMBLE.size}")
    magic, version, length = _PREAMBLE.unpack_from(raw)
    if magic != RIG_MAGIC:
        raise ValueError(f"not an avatar.rig stream (magic {magic!r}, expected {RIG_MAGIC!r})")
    if version != RIG_VERSION:
        raise ValueError(f"avatar.rig version {version} is not supported (this sie3d reads version {RIG_VERSION})")
    blob_start = _PREAMBLE.size + _align4(length)
    if len(raw) < _PREAMBLE.size + length:
        raise ValueError(f"avatar.rig stream truncated in its header ({len(raw)} bytes, header of {length})")
    header = json.loads(raw[_PREAMBLE.size:_PREAMBLE.size + length].decode("utf-8"))
    blob = memoryview(raw)[blob_start:]

    def buffer(name: str) -> torch.Tensor:
        spec = header["buffers"].get(name)
        if spec is None:
            raise ValueError(f"avatar.rig has no {name!r} buffer")
        if spec["dtype"] not in _DTYPES:
            raise ValueError(f"avatar.rig buffer {name!r} has unsupported dtype {spec['dtype']!r}")
        dtype = np.dtype(spec["dtype"]).newbyteorder("<")
        count = math.prod(spec["shape"])
        if count * dtype.itemsize != spec["length"] or spec["offset"] + spec["length"] > len(blob):
            raise ValueError(f"avatar.rig truncated or inconsistent: buffer {name!r} needs bytes "
                             f"{spec['offset']}..{spec['offset'] + spec['length']} of a {len(blob)}-byte blob")
        array = np.frombuffer(blob, dtype, count, spec["offset"]).reshape(spec["shape"])
        kind = torch.int64 if array.dtype.kind == "u" else torch.float32
        return torch.from_numpy(array.astype(np.int64 if kind == torch.int64 else np.float32))

    return Rig(header=header, vertices=buffer("vertices"), blendshapes=buffer("blendshapes"), faces=buffer("faces"),
               face_ids=buffer("face_ids"), offsets=buffer("offsets"), rotations=buffer("rotations"),
               log_scales=buffer("log_scales"), opacities=buffer("opacities").float() / 255.0,
               colors=buffer("colors").float() / 255.0)


def read_rig(path: str | Path) -> Rig:
    """The :class:`Rig` in ``path`` (``avatar.rig``); see :func:`decode_rig`."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"rig file not found: {path}")
    return decode_rig(path.read_bytes())
