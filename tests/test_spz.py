""".spz export: hand-computed bytes, a round trip against the .ply within the format's quantisation,
the version-2 layout, and errors. (The browser test renders static splats as .spz with the viewer page's own
JavaScript decoder, sie3d/render/viewer/splat-data.js.)"""

import gzip
import math
import struct

import numpy as np
import pytest
import torch

from sie3d.avatar.ply import load_ply, save_ply
from sie3d.avatar.spz import decode_spz, encode_spz, load_spz, save_spz
from sie3d.render.splats import SH_C0, Splats, random_splats


def _one(means, wxyz, scale=1.0, opacity=0.5, color=0.5):
    return Splats(torch.tensor([means]), torch.tensor([wxyz]), torch.full((1, 3), scale),
                  torch.tensor([opacity]), torch.full((1, 3), color))


def test_bytes_of_hand_computed_splats():
    s = math.sqrt(0.5)
    splats = Splats(torch.tensor([[1.5, -1.0, 0.0], [0.0, 0.0, 2.0]]),
                    torch.tensor([[1.0, 0.0, 0.0, 0.0], [s, 0.0, 0.0, s]]),  # identity; 90 deg about z
                    torch.tensor([[1.0, math.exp(-2.0), math.exp(-10.0)], [1.0, 1.0, 1.0]]),
                    torch.tensor([0.5, 1.0]), torch.tensor([[0.5, 0.5 + SH_C0, 0.0], [0.5, 0.5, 0.5]]))
    raw = gzip.decompress(encode_spz(splats))
    assert struct.unpack_from("<IIIBBBB", raw) == (0x5053474E, 3, 2, 0, 12, 0, 0)
    assert raw[:4] == b"NGSP"
    body = raw[16:]
    # positions: 1.5 * 4096 = 0x001800, -1 * 4096 = -0x1000 -> 0xFFF000 (24-bit two's complement)
    assert body[:9] == bytes([0x00, 0x18, 0x00, 0x00, 0xF0, 0xFF, 0, 0, 0])
    assert body[9:18] == bytes([0, 0, 0, 0, 0, 0, 0x00, 0x20, 0x00])
    alphas, colors, scales = body[18:20], body[20:26], body[26:32]
    assert list(alphas) == [128, 255]  # rint(0.5 * 255) = 128 (half to even), 255
    # colour 0.5 + SH_C0 is f_dc = 1 -> 0.15 * 255 + 127.5 = 165.75 -> 166; colour 0 -> f_dc = -1/(2 C0) -> 59.7 -> 60
    assert list(colors) == [128, 166, round(127.5 - 0.15 * 255 * 0.5 / SH_C0), 128, 128, 128]
    assert list(scales) == [160, 128, 0, 160, 160, 160]  # (log s + 10) * 16
    codes = struct.unpack_from("<II", body, 32)
    assert codes[0] == 3 << 30  # largest component w (index 3 in xyzw), x = y = z = 0
    # xyzw = (0, 0, s, s): the largest is z (index 2, first of the tie); x, y, w stored, w = 511 in the lowest bits
    assert codes[1] == (2 << 30) | 511
    assert len(body) == 32 + 8


def test_round_trip_against_the_ply(tmp_path):
    g = torch.Generator().manual_seed(3)
    splats = random_splats(2000, g, center=(0.0, 0.1, 0.0), extent=1.5)
    ply = load_ply(save_ply(splats, tmp_path / "a.ply"))
    back = load_spz(save_spz(ply, tmp_path / "a.spz"))
    assert len(back) == len(ply)
    assert (back.means - ply.means).abs().max() <= 0.5 / 4096 + 1e-6
    assert (back.opacities - ply.opacities).abs().max() <= 0.5 / 255 + 1e-6
    assert (back.colors - ply.colors).abs().max() <= 0.5 * SH_C0 / (0.15 * 255) + 1e-6
    assert (back.scales.log() - ply.scales.log()).abs().max() <= 0.5 / 16 + 1e-5
    q0 = torch.nn.functional.normalize(ply.quats, dim=-1)
    dot = (back.quats * q0).sum(-1).abs()
    angle = 2 * torch.arccos(dot.clamp(max=1.0))
    assert angle.max() < math.radians(0.3), math.degrees(angle.max())
    assert (tmp_path / "a.spz").stat().st_size < (tmp_path / "a.ply").stat().st_size / 5


def test_version_2_streams_are_read():
    # a v2 stream by hand: one splat, quaternion (x, y, z) = (0.6, 0, 0) stored as uint8 q * 127.5 + 127.5
    header = struct.pack("<IIIBBBB", 0x5053474E, 2, 1, 0, 8, 0, 0)
    position = (256 * np.array([1, 2, -3])).astype("<i4").view(np.uint8).reshape(3, 4)[:, :3].tobytes()
    body = position + bytes([51]) + bytes([128, 128, 128]) + bytes([160, 144, 176]) + bytes([204, 128, 128])
    splats = decode_spz(gzip.compress(header + body))
    assert splats.means[0].tolist() == [1.0, 2.0, -3.0]
    assert splats.opacities[0].item() == pytest.approx(0.2)
    assert torch.allclose(splats.scales[0].log(), torch.tensor([0.0, -1.0, 1.0]))
    x, e = 204 / 127.5 - 1, 128 / 127.5 - 1
    assert torch.allclose(splats.quats[0], torch.tensor([math.sqrt(1 - x * x - 2 * e * e), x, e, e]), atol=1e-6)


def test_errors():
    with pytest.raises(ValueError, match="magic"):
        decode_spz(gzip.compress(b"\0" * 16))
    with pytest.raises(ValueError, match="truncated"):
        decode_spz(gzip.compress(struct.pack("<IIIBBBB", 0x5053474E, 3, 5, 0, 12, 0, 0) + b"\0" * 10))
    with pytest.raises(ValueError, match="24-bit"):
        encode_spz(_one([3000.0, 0.0, 0.0], [1.0, 0.0, 0.0, 0.0]))
