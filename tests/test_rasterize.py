"""The tiled rasterizer against the dense reference, hand-computed values and finite differences."""

import math

import pytest
import torch

from sie3d.render.cameras import orbit_cameras
from sie3d.render.rasterize import (
    ALPHA_MAX,
    EPS2D,
    composite_dense,
    composite_tiled,
    covariance_3d,
    project_gaussians,
    quat_to_rotmat,
)
from sie3d.render.renderer import render, resolve_backend
from sie3d.render.splats import Splats, random_splats


def pinhole(width, height, focal, dtype=torch.float32):
    Ks = torch.tensor([[focal, 0.0, width / 2], [0.0, focal, height / 2], [0.0, 0.0, 1.0]], dtype=dtype)[None]
    return torch.eye(4, dtype=dtype)[None], Ks


def composite_both(splats, viewmats, Ks, width, height, background=None, chunk=32):
    """(tiled image, tiled alpha), (dense image, dense alpha) with RGB + depth features."""
    C = viewmats.shape[0]
    proj = project_gaussians(splats.means, splats.quats, splats.scales, splats.opacities, viewmats, Ks, width, height)
    features = torch.cat([splats.colors.expand(C, -1, -1), proj.depths[..., None]], -1)
    bg = torch.zeros(C, 4, dtype=splats.means.dtype) if background is None else background
    tiled = composite_tiled(proj, features, bg, width, height, chunk=chunk)
    dense = composite_dense(proj, features, bg, width, height)
    return tiled, dense


def leaf(splats):
    return Splats(*(t.detach().clone().requires_grad_(True) for t in splats._tensors()))


def grads_of(splats, image, alpha, weights):
    loss = (image * weights).sum() + (alpha[..., 0] * weights[..., 0]).sum()
    return torch.autograd.grad(loss, list(splats._tensors()), allow_unused=True, retain_graph=True)


@pytest.mark.parametrize("n, width, height, chunk", [(600, 64, 64, 32), (300, 50, 37, 8)])
def test_tiled_matches_dense_image_and_gradients(n, width, height, chunk):
    torch.manual_seed(0)
    splats = leaf(random_splats(n, torch.Generator().manual_seed(n)))
    viewmats, Ks = pinhole(width, height, 2.5 * width)
    (ti, ta), (di, da) = composite_both(splats, viewmats, Ks, width, height, torch.rand(1, 4), chunk=chunk)
    assert ti.shape == (1, height, width, 4) and ta.shape == (1, height, width, 1)
    assert (ti - di).abs().max() < 1e-5 and (ta - da).abs().max() < 1e-5
    assert ta.max() > 0.9  # the scene is dense enough for early termination to matter
    weights = torch.rand(1, height, width, 4)
    for gt, gd in zip(grads_of(splats, ti, ta, weights), grads_of(splats, di, da, weights)):
        assert (gt - gd).abs().max() <= 1e-5 * gd.abs().max().clamp_min(1.0)


def test_several_cameras_match_dense_and_single_renders():
    splats = random_splats(200, torch.Generator().manual_seed(3), center=(0.0, 0.0, 0.0), extent=1.2)
    cams = orbit_cameras(3.0, torch.tensor([90.0, 60.0, 100.0]), torch.tensor([0.0, 120.0, -45.0]), 0.8, 40, 30)
    (ti, _), (di, _) = composite_both(splats, cams.viewmats, cams.Ks, 40, 30)
    assert (ti - di).abs().max() < 1e-5
    single = render(splats, cams[1], backend="torch")
    assert torch.allclose(single.rgb[0], render(splats, cams, backend="torch").rgb[1], atol=1e-6)


def test_chunk_size_does_not_change_the_result():
    splats = random_splats(400, torch.Generator().manual_seed(5))
    viewmats, Ks = pinhole(48, 48, 120.0)
    proj = project_gaussians(splats.means, splats.quats, splats.scales, splats.opacities, viewmats, Ks, 48, 48)
    features = splats.colors[None]
    a = composite_tiled(proj, features, torch.zeros(1, 3), 48, 48, chunk=3)
    b = composite_tiled(proj, features, torch.zeros(1, 3), 48, 48, chunk=64)
    assert torch.allclose(a[0], b[0], atol=1e-6) and torch.allclose(a[1], b[1], atol=1e-6)


def test_projection_of_an_isotropic_gaussian_by_hand():
    s, z, f = 0.1, 4.0, 100.0
    viewmats, Ks = pinhole(64, 48, f)
    proj = project_gaussians(torch.tensor([[0.0, 0.0, z]]), torch.tensor([[1.0, 0, 0, 0]]), torch.full((1, 3), s),
                             torch.tensor([0.8]), viewmats, Ks, 64, 48)
    var = (f * s / z) ** 2 + EPS2D
    assert torch.allclose(proj.means2d[0, 0], torch.tensor([32.0, 24.0]))
    assert torch.allclose(proj.conics[0, 0], torch.tensor([1 / var, 0.0, 1 / var]), rtol=1e-5)
    extend = min(3.33, math.sqrt(2 * math.log(0.8 * 255)))
    assert proj.radii[0, 0].tolist() == [math.ceil(extend * math.sqrt(var))] * 2
    assert proj.depths[0, 0] == z and proj.valid.all()


def test_covariance_and_rotation_helpers():
    q = torch.nn.functional.normalize(torch.randn(10, 4, generator=torch.Generator().manual_seed(0)), dim=-1)
    R = quat_to_rotmat(q)
    assert torch.allclose(R @ R.transpose(1, 2), torch.eye(3).expand(10, 3, 3), atol=1e-5)
    assert torch.allclose(torch.linalg.det(R), torch.ones(10), atol=1e-5)
    # 90 degrees about z maps x to y
    rz = quat_to_rotmat(torch.tensor([math.cos(math.pi / 4), 0, 0, math.sin(math.pi / 4)]))
    assert torch.allclose(rz @ torch.tensor([1.0, 0, 0]), torch.tensor([0.0, 1, 0]), atol=1e-6)
    scales = torch.tensor([[1.0, 2.0, 3.0]])
    assert torch.allclose(covariance_3d(q[:1], scales)[0], R[0] @ torch.diag(scales[0] ** 2) @ R[0].T, atol=1e-5)


def test_single_gaussian_pixel_value_by_hand():
    # a large Gaussian at the orbit centre, 2 units ahead: focal 16 px, footprint variance (16 * 1 / 2)^2 + 0.3
    splats = Splats(torch.tensor([[0.0, 0.0, 0.0]]), torch.tensor([[1.0, 0, 0, 0]]), torch.full((1, 3), 1.0),
                    torch.tensor([0.6]), torch.tensor([[1.0, 0.5, 0.0]]))
    out = render(splats, orbit_cameras(2.0, 90.0, 0.0, 2 * math.atan(0.5), 16), background=torch.tensor([0.0, 0, 1]))
    var = (16.0 * 1.0 / 2.0) ** 2 + EPS2D
    sigma = 0.5 * (0.5 * 0.5 + 0.5 * 0.5) / var  # centre pixel (7.5, 7.5) vs mean (8, 8)
    a = 0.6 * math.exp(-sigma)
    expected = torch.tensor([a, 0.5 * a, 1 - a])
    assert torch.allclose(out.rgb[0, 7, 7], expected, atol=1e-5)
    assert torch.allclose(out.alpha[0, 7, 7, 0], torch.tensor(a), atol=1e-6)
    assert torch.allclose(out.depth[0, 7, 7, 0], torch.tensor(2.0), atol=1e-5)


def test_alpha_clamp_and_early_termination_rule():
    # three fully opaque Gaussians: the first gives alpha 0.999 (clamped), the second would bring
    # the transmittance to 1e-6 <= 1e-4 and is excluded, so alpha stays 0.999 and the colour is the first's
    viewmats, Ks = pinhole(8, 8, 8.0)
    means = torch.tensor([[0.0, 0.0, 2.0], [0.0, 0.0, 3.0], [0.0, 0.0, 4.0]])
    splats = Splats(means, torch.tensor([[1.0, 0, 0, 0]]).repeat(3, 1), torch.full((3, 3), 5.0), torch.ones(3),
                    torch.eye(3))
    (ti, ta), (di, da) = composite_both(splats, viewmats, Ks, 8, 8)
    for image, alpha in ((ti, ta), (di, da)):
        assert torch.allclose(alpha[0, 4, 4, 0], torch.tensor(ALPHA_MAX), atol=1e-6)
        assert torch.allclose(image[0, 4, 4, :3], torch.tensor([ALPHA_MAX, 0.0, 0.0]), atol=1e-6)


def test_finite_difference_gradients_float64():
    # a small, smooth scene: every contribution is far from the 1/255 and 1e-4 thresholds
    g = torch.Generator().manual_seed(1)
    n = 4
    means = torch.cat([(torch.rand(n, 2, generator=g) - 0.5) * 0.4, 3.0 + torch.rand(n, 1, generator=g)], 1)
    splats = Splats(means.double(), torch.randn(n, 4, generator=g).double(),
                    (0.25 + 0.1 * torch.rand(n, 3, generator=g)).double(), (0.3 + 0.3 * torch.rand(n, generator=g)).double(),
                    torch.rand(n, 3, generator=g).double())
    viewmats, Ks = pinhole(10, 8, 12.0, torch.float64)
    weights = torch.rand(1, 8, 10, 4, generator=g).double()

    def loss(means, quats, scales, opacities, colors, which):
        proj = project_gaussians(means, quats, scales, opacities, viewmats, Ks, 10, 8)
        feats = torch.cat([colors[None], proj.depths[..., None]], -1)
        bg = torch.full((1, 4), 0.3, dtype=torch.float64)
        fn = composite_tiled if which == "tiled" else composite_dense
        image, alpha = fn(proj, feats, bg, 10, 8)
        return (image * weights).sum() + (alpha[..., 0] * weights[..., 0]).sum()

    inputs = tuple(t.clone().requires_grad_(True) for t in splats._tensors())
    for which in ("tiled", "dense"):
        assert torch.autograd.gradcheck(lambda *x: loss(*x, which), inputs, eps=1e-6, atol=1e-6, rtol=1e-4)


def test_empty_scene_renders_the_background():
    cams = orbit_cameras(4.0, 90.0, 0.0, 0.7, 20, 12)
    empty = Splats(torch.zeros(0, 3, requires_grad=True), torch.zeros(0, 4), torch.zeros(0, 3), torch.zeros(0),
                   torch.zeros(0, 3))
    out = render(empty, cams, background=torch.tensor([0.2, 0.4, 0.6]))
    assert out.rgb.shape == (1, 12, 20, 3) and torch.allclose(out.rgb, torch.tensor([0.2, 0.4, 0.6]).expand(1, 12, 20, 3))
    assert out.alpha.abs().max() == 0 and out.depth.abs().max() == 0 and out.means2d.shape == (1, 0, 2)
    (out.rgb.sum() + out.means2d.sum()).backward()  # no error with zero-size tensors
    assert empty.means.grad.shape == (0, 3)


def test_behind_offscreen_and_far_gaussians_change_nothing():
    base = random_splats(100, torch.Generator().manual_seed(2))
    viewmats, Ks = pinhole(32, 32, 80.0)
    extra = Splats(torch.tensor([[0.0, 0.0, -3.0], [0.0, 0.0, 0.005], [40.0, 0.0, 3.0], [0.0, -50.0, 3.0]]),
                   torch.tensor([[1.0, 0, 0, 0]]).repeat(4, 1), torch.full((4, 3), 0.05), torch.ones(4), torch.ones(4, 3))
    both = Splats(*(torch.cat([a, b]) for a, b in zip(base._tensors(), extra._tensors())))
    proj = project_gaussians(both.means, both.quats, both.scales, both.opacities, viewmats, Ks, 32, 32)
    assert not proj.valid[0, 100:].any() and (proj.radii[0, 100:] == 0).all()
    (t1, _), _ = composite_both(base, viewmats, Ks, 32, 32)
    (t2, _), _ = composite_both(both, viewmats, Ks, 32, 32)
    assert torch.equal(t1, t2)


@pytest.mark.parametrize("scale", [20.0, 1e-5])
def test_huge_and_tiny_scales_match_dense(scale):
    splats = random_splats(50, torch.Generator().manual_seed(4))
    splats.scales[:5] = scale
    viewmats, Ks = pinhole(24, 24, 60.0)
    (ti, ta), (di, da) = composite_both(splats, viewmats, Ks, 24, 24)
    assert torch.isfinite(ti).all() and (ti - di).abs().max() < 1e-5 and (ta - da).abs().max() < 1e-5


def test_render_output_and_backend_choice():
    splats = random_splats(50, torch.Generator().manual_seed(6), center=(0.0, 0.0, 0.0))
    cams = orbit_cameras(3.0, 90.0, torch.tensor([0.0, 90.0]), 0.7, 24)
    out = render(splats, cams, background=torch.ones(2, 3), backend="torch")
    assert out.rgb.shape == (2, 24, 24, 3) and out.radii.shape == (2, 50, 2) and out.radii.dtype == torch.int32
    assert out.backend == "torch" and out.width == 24 and out.n_cameras == 2
    dense = render(splats, cams, background=torch.ones(2, 3), backend="dense")
    assert (out.rgb - dense.rgb).abs().max() < 1e-5
    assert resolve_backend("torch", torch.device("cpu")) == "torch"  # "auto" on CPU: tests/test_cpu_kernel.py
    with pytest.raises(ValueError, match="CUDA"):
        render(splats, cams, backend="gsplat")
    with pytest.raises(ValueError, match="background"):
        render(splats, cams, background=torch.ones(3, 3))


@pytest.mark.gpu
def test_gsplat_matches_the_cpu_rasterizer():
    pytest.importorskip("gsplat")
    splats = random_splats(3000, torch.Generator().manual_seed(7), center=(0.0, 0.0, 0.0), extent=1.5)
    cams = orbit_cameras(4.0, torch.tensor([90.0, 70.0]), torch.tensor([0.0, 60.0]), 0.6, 96, 80)
    bg = torch.tensor([[1.0, 1.0, 1.0], [0.0, 0.2, 0.4]])
    cpu = render(leaf(splats), cams, bg, backend="torch")
    gpu_splats = leaf(splats.to("cuda"))
    gpu = render(gpu_splats, cams, bg.cuda(), backend="gsplat")
    # fast exp on the GPU and summation order: agreement to a few 1e-4, identical radii
    assert (gpu.rgb.cpu() - cpu.rgb).abs().max() < 2e-3
    assert (gpu.alpha.cpu() - cpu.alpha).abs().max() < 2e-3
    assert (gpu.radii.cpu() - cpu.radii).abs().max() <= 1
    weights = torch.rand(2, 80, 96, 3)
    (gpu.rgb * weights.cuda()).sum().backward()
    cpu_splats = leaf(splats)
    (render(cpu_splats, cams, bg, backend="torch").rgb * weights).sum().backward()
    for a, b in zip(gpu_splats._tensors(), cpu_splats._tensors()):
        assert torch.allclose(a.grad.cpu(), b.grad, rtol=1e-2, atol=1e-2 * b.grad.abs().max())


def test_bench_render_command_runs(tmp_path, capsys):
    from sie3d.cli import main

    out = tmp_path / "bench.json"
    assert main(["bench", "render", "--sizes", "300", "--resolutions", "32", "--repeats", "1", "--no-dense",
                 "--threads", "1", "--json", str(out)]) == 0
    assert "tiled s" in capsys.readouterr().out
    import json

    (row,) = json.loads(out.read_text())["rows"]
    assert row["n"] == 300 and row["tiled_s"] > 0 and row["tiled_peak_mb"] >= 0
