"""``.spz``: Niantic's compressed Gaussian-splat format (version 3), written and read by our own code.

Written from the public format description: a gzip stream holding a 16-byte little-endian header
(``magic 0x5053474e "NGSP"``, ``version``, ``num_points`` as uint32; ``sh_degree``,
``fractional_bits``, ``flags``, ``reserved`` as uint8) and then one array per attribute, in order:

* positions: 3 x 24-bit signed fixed point per splat, ``value = int / 2**fractional_bits``;
* alphas: uint8, ``opacity * 255``;
* colors: 3 x uint8, the SH DC coefficient ``f_dc`` stored as ``f_dc * 0.15 * 255 + 127.5``;
* scales: 3 x uint8, ``log(scale)`` stored as ``(log_scale + 10) * 16``;
* rotations (version 3): one little-endian uint32 per splat, "smallest three": the top 2 bits index
  the largest-magnitude component of the xyzw unit quaternion (made positive, then not stored),
  followed by the other three components in xyzw order, each 10 bits (a sign bit, then 9 bits of
  ``|c| / sqrt(1/2) * 511``), the first component in the highest bits;
* spherical harmonics beyond degree 0: none here (``sh_degree`` 0).

Axes: SPZ stores RUB (x right, y up, z back toward the viewer), which is sie3d's world, so splats are
written as they are. One file of ~18k splats is ~10x smaller than the ``.ply``. Precision: positions
``2**-fractional_bits``, colours ~1/135, opacity 1/255, scales 6 % (1/16 in log), rotations ~0.1 deg.
"""

from __future__ import annotations

import gzip
import math
import struct
from pathlib import Path

import numpy as np
import torch

from ..render.splats import SH_C0, Splats

SPZ_MAGIC = 0x5053474E
SPZ_VERSION = 3
COLOR_SCALE = 0.15
#: default fixed-point precision of positions: 1/4096 world units, range +-2048
FRACTIONAL_BITS = 12
_HEADER = struct.Struct("<IIIBBBB")
_SQRT1_2 = math.sqrt(0.5)
_MASK9 = (1 << 9) - 1


def _to_u8(values: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(values), 0, 255).astype(np.uint8)


def _pack_rotations(quats_xyzw: np.ndarray) -> np.ndarray:
    """[N, 4] xyzw quaternions -> [N] uint32 "smallest three" codes."""
    q = quats_xyzw / np.linalg.norm(quats_xyzw, axis=1, keepdims=True)
    largest = np.argmax(np.abs(q), axis=1)
    q = q * np.where(q[np.arange(len(q)), largest] < 0, -1.0, 1.0)[:, None]
    codes = largest.astype(np.uint32)
    for i in range(4):
        keep = largest != i
        value = q[:, i]
        magnitude = np.minimum(np.rint(np.abs(value) / _SQRT1_2 * _MASK9), _MASK9).astype(np.uint32)
        field = ((value < 0).astype(np.uint32) << 9) | magnitude
        codes = np.where(keep, (codes << 10) | field, codes)
    return codes


def _unpack_rotations(codes: np.ndarray) -> np.ndarray:
    """[N] uint32 codes -> [N, 4] xyzw unit quaternions."""
    codes = codes.astype(np.uint32)
    largest = (codes >> 30).astype(np.int64)
    q = np.zeros((len(codes), 4))
    rest = codes.copy()
    for i in (3, 2, 1, 0):
        keep = largest != i
        magnitude = (rest & _MASK9).astype(np.float64) / _MASK9 * _SQRT1_2
        value = np.where((rest >> 9) & 1, -magnitude, magnitude)
        q[:, i] = np.where(keep, value, 0.0)
        rest = np.where(keep, rest >> 10, rest)
    q[np.arange(len(q)), largest] = np.sqrt(np.clip(1.0 - (q ** 2).sum(1), 0.0, None))
    return q


def encode_spz(splats: Splats, fractional_bits: int = FRACTIONAL_BITS) -> bytes:
    """The ``.spz`` bytes (gzip-compressed) of world-space splats (sie3d's y-up world = SPZ's RUB)."""
    s = splats.detach().to("cpu", torch.float64)
    n = len(s)
    means = s.means.numpy()
    limit = (1 << 23) - 1
    fixed = np.rint(means * (1 << fractional_bits)).astype(np.int64)
    if np.abs(fixed).max(initial=0) > limit:
        raise ValueError(f"positions up to {np.abs(means).max():.1f} do not fit 24-bit fixed point with "
                         f"{fractional_bits} fractional bits; use fewer")
    positions = (fixed & 0xFFFFFF).astype("<u4").view(np.uint8).reshape(n, 3, 4)[:, :, :3]
    alphas = _to_u8(s.opacities.numpy() * 255.0)
    f_dc = (s.colors.numpy() - 0.5) / SH_C0
    colors = _to_u8(f_dc * (COLOR_SCALE * 255.0) + 127.5)
    scales = _to_u8((np.log(s.scales.numpy()) + 10.0) * 16.0)
    wxyz = s.quats.numpy()
    rotations = _pack_rotations(wxyz[:, [1, 2, 3, 0]]).astype("<u4")
    header = _HEADER.pack(SPZ_MAGIC, SPZ_VERSION, n, 0, fractional_bits, 0, 0)
    payload = b"".join([header, positions.tobytes(), alphas.tobytes(), colors.tobytes(), scales.tobytes(),
                        rotations.tobytes()])
    return gzip.compress(payload, compresslevel=9, mtime=0)


def decode_spz(data: bytes) -> Splats:
    """Splats from ``.spz`` bytes (versions 2 and 3; SH beyond degree 0 is skipped)."""
    raw = gzip.decompress(data)
    magic, version, n, sh_degree, fractional_bits, _flags, _ = _HEADER.unpack_from(raw)
    if magic != SPZ_MAGIC:
        raise ValueError(f"not an .spz stream (magic {magic:#x}, expected {SPZ_MAGIC:#x})")
    if version not in (2, 3):
        raise ValueError(f"unsupported .spz version {version} (2 and 3 are read)")
    offset = _HEADER.size

    def take(count: int, dtype: str = "u1") -> np.ndarray:
        nonlocal offset
        size = count * np.dtype(dtype).itemsize
        if offset + size > len(raw):
            raise ValueError(f".spz stream truncated: {len(raw)} bytes, {n} splats need more")
        out = np.frombuffer(raw, dtype, count, offset)
        offset += size
        return out

    b = take(n * 9).reshape(n, 3, 3).astype(np.int64)
    fixed = b[..., 0] | (b[..., 1] << 8) | (b[..., 2] << 16)
    fixed = np.where(fixed & 0x800000, fixed - (1 << 24), fixed)
    means = fixed / float(1 << fractional_bits)
    opacities = take(n) / 255.0
    f_dc = (take(n * 3).reshape(n, 3) - 127.5) / (COLOR_SCALE * 255.0)
    log_scales = take(n * 3).reshape(n, 3) / 16.0 - 10.0
    if version == 3:
        xyzw = _unpack_rotations(take(n, "<u4"))
    else:  # version 2: x, y, z as uint8 of a w >= 0 unit quaternion
        xyz = take(n * 3).reshape(n, 3) / 127.5 - 1.0
        xyzw = np.concatenate([xyz, np.sqrt(np.clip(1.0 - (xyz ** 2).sum(1, keepdims=True), 0.0, None))], 1)

    def tensor(a):
        return torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))

    return Splats(means=tensor(means), quats=tensor(xyzw[:, [3, 0, 1, 2]]), scales=tensor(np.exp(log_scales)),
                  opacities=tensor(opacities), colors=tensor(np.clip(0.5 + SH_C0 * f_dc, 0.0, 1.0)))


def save_spz(splats: Splats, path: str | Path, fractional_bits: int = FRACTIONAL_BITS) -> Path:
    """Write ``path`` (``.spz``); see :func:`encode_spz`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(encode_spz(splats, fractional_bits))
    return path


def load_spz(path: str | Path) -> Splats:
    """Splats in sie3d's world from an ``.spz`` file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"splat file not found: {path}")
    return decode_spz(path.read_bytes())
