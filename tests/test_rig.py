"""avatar.rig: the rig posed at several coefficient vectors reproduces the trainer's own
``MeshGaussians.to_world(template.deform(c))`` (the reference: midpoints applied at pose time, float32
parameters), the header round trip, bad files, and the size against the .spz of the same splats."""

import gzip
import math
import struct

import numpy as np
import pytest
import torch

from sie3d.avatar.builtin_head import builtin_head
from sie3d.avatar.gaussians import MeshGaussians
from sie3d.avatar.rig import QUANTA, RIG_MAGIC, decode_rig, encode_rig, read_rig, write_rig
from sie3d.avatar.spz import save_spz
from sie3d.avatar.template import BUILTIN_EXPRESSIONS, EXPRESSION_PROTOTYPES
from sie3d.config import CameraConfig, GaussiansConfig
from tests.helpers_avatar import sphere_template


def _trained_like(template, subdivisions=1, per_face=1, seed=0):
    """MeshGaussians (the quick preset's binding) with parameters spread like a trained avatar's."""
    g = torch.Generator().manual_seed(seed)
    gaussians = MeshGaussians(template, GaussiansConfig(subdivisions=subdivisions, gaussians_per_face=per_face),
                              generator=g)
    n = gaussians.num_gaussians
    with torch.no_grad():
        p = gaussians.params
        p["xyz"].add_(0.04 * torch.randn(n, 3, generator=g))
        p["rotation"].add_(0.3 * torch.randn(n, 4, generator=g))  # far from identity: the product is exercised
        p["scaling"].add_(0.3 * torch.randn(n, 3, generator=g))
        p["opacity"].copy_(2 * torch.randn(n, generator=g))
        p["color"].copy_(torch.randn(n, 3, generator=g))
    return gaussians


@pytest.fixture(scope="module")
def builtin_avatar():
    template = builtin_head()
    own = torch.tensor([0.3, 0.0, 0.2, 0.0, 0.5, 0.1, 0.0])
    return _trained_like(template), own


def _coefficient_vectors(template, own):
    vectors = {"own": own, "zero": torch.zeros(template.num_expressions),
               "random": torch.rand(template.num_expressions, generator=torch.Generator().manual_seed(1)) * 1.5 - 0.25}
    for emotion, shape in EXPRESSION_PROTOTYPES.items():
        vectors[emotion] = template.expression_coefficients(**shape)
    return vectors


def _assert_reproduces(rig, gaussians, coefficients):
    template = gaussians.template
    with torch.no_grad():
        expected = gaussians.to_world(template.deform(coefficients))
    got = rig.pose(coefficients)
    head = rig.header["head_size"]
    assert (got.means - expected.means).norm(dim=-1).max() <= 1e-3 * head
    # quaternions up to sign: the angle between them; the stored components are rounded to 2**-9
    dot = (torch.nn.functional.normalize(got.quats, dim=-1) * torch.nn.functional.normalize(expected.quats, dim=-1))
    angle = 2 * torch.arccos(dot.sum(-1).abs().clamp(max=1.0))
    assert angle.max() < math.radians(0.5), math.degrees(angle.max())
    # log-scales rounded to 2**-7 (half a step of error) plus float16 and the mesh's rounding
    assert (got.scales.log() - expected.scales.log()).abs().max() <= QUANTA["log_scales"] / 2 + 2e-3
    assert (got.colors - expected.colors).abs().max() <= 0.5 / 255 + 1e-6
    assert (got.opacities - expected.opacities).abs().max() <= 0.5 / 255 + 1e-6


def test_the_rig_reproduces_the_trainer_on_the_builtin_head(builtin_avatar, tmp_path):
    gaussians, own = builtin_avatar
    rig = read_rig(write_rig(gaussians, own, tmp_path / "avatar.rig"))
    for name, coefficients in _coefficient_vectors(gaussians.template, own).items():
        _assert_reproduces(rig, gaussians, coefficients)
    # the default pose is the avatar's own expression, and an emotion's coefficients come from the header
    assert torch.equal(rig.pose().means, rig.pose(own).means)
    surprise = rig.emotion_coefficients("surprise", 0.5)
    assert torch.allclose(surprise, 0.5 * gaussians.template.expression_coefficients(**EXPRESSION_PROTOTYPES["surprise"]))


def test_densified_several_per_face_and_twice_subdivided(tmp_path):
    gaussians = _trained_like(sphere_template(levels=2), subdivisions=2, per_face=3, seed=4)
    keep = torch.rand(gaussians.num_gaussians, generator=torch.Generator().manual_seed(2)) > 0.3
    gaussians.edit(None, keep)  # pruning: face ids no longer a regular pattern
    rig = decode_rig(encode_rig(gaussians, torch.tensor([0.7])))
    for c in (0.0, 0.7, 2.0, -1.0):
        _assert_reproduces(rig, gaussians, torch.tensor([c]))
    assert rig.header["emotions"] == {"neutral": {}}  # the sphere has none of the prototypes' blendshapes


def test_header_round_trip(builtin_avatar):
    gaussians, own = builtin_avatar
    camera = CameraConfig(eval_radius=5.0, eval_fovy=0.5)
    data = encode_rig(gaussians, own, camera)
    raw = gzip.decompress(data)
    magic, version, length = struct.unpack_from("<8sII", raw)
    assert (magic, version) == (b"SIE3DRIG", 1)
    assert (16 + length) % 4 == 0 or raw[16 + length:(16 + length + 3) // 4 * 4] == bytes((4 - length % 4) % 4)
    rig = decode_rig(data)
    h = rig.header
    assert (h["format"], h["version"], h["up"]) == ("sie3d-rig", 1, "y")
    assert h["blendshapes"] == list(BUILTIN_EXPRESSIONS)
    assert h["coefficients"] == pytest.approx(own.tolist())
    assert h["emotions"] == EXPRESSION_PROTOTYPES
    assert h["num_gaussians"] == gaussians.num_gaussians == len(rig.face_ids)
    assert h["num_faces"] == len(gaussians.faces) == len(rig.faces)
    assert h["num_vertices"] == len(rig.vertices) == rig.blendshapes.shape[1]
    width = rig.vertices[:, 0].max() - rig.vertices[:, 0].min()
    assert h["head_size"] == pytest.approx(float(width), abs=1e-3)
    assert h["camera"] == pytest.approx({"radius": 5.0, "fovy_deg": math.degrees(0.5)})
    for name, spec in h["buffers"].items():
        assert spec["offset"] % 4 == 0, name
    assert torch.equal(rig.faces, gaussians.faces)


def test_bad_files_raise(builtin_avatar, tmp_path):
    gaussians, own = builtin_avatar
    raw = gzip.decompress(encode_rig(gaussians, own))
    with pytest.raises(ValueError, match="magic"):
        decode_rig(gzip.compress(b"NOTARIG!" + raw[8:]))
    with pytest.raises(ValueError, match="version 2"):
        decode_rig(gzip.compress(raw[:8] + struct.pack("<I", 2) + raw[12:]))
    with pytest.raises(ValueError, match="truncated"):
        decode_rig(gzip.compress(raw[:len(raw) // 2]))
    with pytest.raises(ValueError, match="truncated"):
        decode_rig(gzip.compress(raw[:20]))
    with pytest.raises(ValueError, match="not an avatar.rig"):
        decode_rig(b"plain bytes")
    with pytest.raises(ValueError, match="not an avatar.rig"):
        decode_rig(gzip.compress(raw)[:1000])  # the gzip stream itself cut short
    with pytest.raises(FileNotFoundError):
        read_rig(tmp_path / "missing.rig")
    assert raw[:8] == RIG_MAGIC


def test_size_is_at_most_twice_the_spz(builtin_avatar, tmp_path):
    gaussians, own = builtin_avatar
    assert gaussians.num_gaussians == 73856  # the quick preset's binding: one per face, subdivided once
    rig = write_rig(gaussians, own, tmp_path / "avatar.rig")
    with torch.no_grad():
        spz = save_spz(gaussians.to_world(gaussians.template.deform(own)), tmp_path / "avatar.spz")
    assert rig.stat().st_size <= 2 * spz.stat().st_size, (rig.stat().st_size, spz.stat().st_size)


def test_the_widget_re_renders_when_the_emotion_changes(builtin_avatar):
    pytest.importorskip("ipywidgets")
    from sie3d.avatar.rig_widget import RigPanel

    gaussians, own = builtin_avatar
    panel = RigPanel(decode_rig(encode_rig(gaussians, own)), resolution=48, backend="torch")
    box = panel.widget()
    assert panel.emotion.options == ("own", *EXPRESSION_PROTOTYPES) and box.children[1] is panel.image
    panel.emotion.value = "neutral"
    neutral_png = panel.image.value
    panel.emotion.value = "surprise"  # the observer re-renders
    surprise_png = panel.image.value
    assert surprise_png[:8] == b"\x89PNG\r\n\x1a\n" and surprise_png != neutral_png
    assert np.array_equal(panel.render("surprise", 1.0, 0.0), panel.render("surprise", 1.0, 0.0))
    assert not np.array_equal(panel.render("surprise", 1.0, 0.0), panel.render("neutral", 1.0, 0.0))
    assert torch.equal(panel.coefficients("own", 0.5), 0.5 * own)
