"""The compiled CPU rasterizer against the dense PyTorch reference, finite differences and the fallback."""

import shutil
from dataclasses import replace
import warnings

import pytest
import torch

from sie3d.render import cpu_kernel, renderer
from sie3d.render.cameras import orbit_cameras
from sie3d.render.cpu_kernel import composite_compiled, project_gaussians_compiled
from sie3d.render.rasterize import ALPHA_MAX, _tile_pairs, composite_dense, project_gaussians
from sie3d.render.renderer import render, resolve_backend
from sie3d.render.splats import Splats, random_splats


@pytest.fixture(scope="module", autouse=True)
def kernel():
    if shutil.which(cpu_kernel._compiler()) is None:
        pytest.skip("no C++ compiler")
    module = cpu_kernel.load_kernel()
    assert module is not None, cpu_kernel.kernel_error()
    return module


def pinhole(width, height, focal, dtype=torch.float32):
    Ks = torch.tensor([[focal, 0.0, width / 2], [0.0, focal, height / 2], [0.0, 0.0, 1.0]], dtype=dtype)[None]
    return torch.eye(4, dtype=dtype)[None], Ks


def leaf(splats):
    return Splats(*(t.detach().clone().requires_grad_(True) for t in splats._tensors()))


def composite(splats, viewmats, Ks, width, height, background=None, compiled=True, tile_size=16):
    """(image [C, H, W, 4], alpha, projection) with RGB + depth features: C++ or dense PyTorch reference."""
    C = viewmats.shape[0]
    project = project_gaussians_compiled if compiled else project_gaussians
    proj = project(splats.means, splats.quats, splats.scales, splats.opacities, viewmats, Ks, width, height)
    if proj.means2d.requires_grad:
        proj.means2d.retain_grad()
    features = torch.cat([splats.colors.expand(C, -1, -1), proj.depths[..., None]], -1)
    bg = torch.zeros(C, 4, dtype=splats.means.dtype) if background is None else background
    if compiled:
        image, alpha = composite_compiled(proj, features, bg, width, height, tile_size)
    else:
        image, alpha = composite_dense(proj, features, bg, width, height)
    return image, alpha, proj


def gradients(splats, image, alpha, weights, proj):
    loss = (image * weights).sum() + (alpha[..., 0] * weights[..., 0]).sum()
    inputs = list(splats._tensors())
    for t in inputs:
        t.grad = None
    loss.backward()
    return [t.grad for t in inputs] + [proj.means2d.grad]


def assert_same_as_dense(splats, viewmats, Ks, width, height, background=None, tol=1e-5):
    """Images, alphas and gradients (splat tensors and means2d) of both paths agree; returns (image, alpha)."""
    a, b = leaf(splats), leaf(splats)
    ci, ca, cp = composite(a, viewmats, Ks, width, height, background)
    di, da, dp = composite(b, viewmats, Ks, width, height, background, compiled=False)
    assert ci.shape == di.shape and ca.shape == da.shape
    assert (ci - di).abs().max() < tol and (ca - da).abs().max() < tol
    assert torch.equal(cp.radii, dp.radii) and torch.equal(cp.valid, dp.valid)
    weights = torch.rand(di.shape, generator=torch.Generator().manual_seed(9), dtype=di.dtype)
    for gc, gd in zip(gradients(a, ci, ca, weights, cp), gradients(b, di, da, weights, dp)):
        assert (gc - gd).abs().max() <= tol * gd.abs().max().clamp_min(1.0)
    return ci.detach(), ca.detach()


@pytest.mark.parametrize("n, width, height", [(600, 64, 64), (300, 50, 37)])
def test_matches_dense_image_alpha_depth_and_gradients(n, width, height):
    splats = random_splats(n, torch.Generator().manual_seed(n))
    viewmats, Ks = pinhole(width, height, 2.5 * width)
    _, alpha = assert_same_as_dense(splats, viewmats, Ks, width, height, torch.rand(1, 4))
    assert alpha.max() > 0.999  # dense enough for pixels to get near the transmittance stop


def test_several_cameras_and_backgrounds_match_dense():
    splats = random_splats(300, torch.Generator().manual_seed(3), center=(0.0, 0.0, 0.0), extent=1.2)
    cams = orbit_cameras(3.0, torch.tensor([90.0, 60.0, 100.0]), torch.tensor([0.0, 120.0, -45.0]), 0.8, 40, 30)
    assert_same_as_dense(splats, cams.viewmats, cams.Ks, 40, 30, torch.rand(3, 4))


def test_early_termination_and_alpha_clamp():
    # three opaque Gaussians: the first is clamped to 0.999, the second would bring T to 1e-6 <= 1e-4
    viewmats, Ks = pinhole(8, 8, 8.0)
    means = torch.tensor([[0.0, 0.0, 2.0], [0.0, 0.0, 3.0], [0.0, 0.0, 4.0]])
    splats = Splats(means, torch.tensor([[1.0, 0, 0, 0]]).repeat(3, 1), torch.full((3, 3), 5.0), torch.ones(3),
                    torch.eye(3))
    image, alpha = assert_same_as_dense(splats, viewmats, Ks, 8, 8)
    assert torch.allclose(alpha[0, 4, 4, 0], torch.tensor(ALPHA_MAX), atol=1e-6)
    assert torch.allclose(image[0, 4, 4, :3], torch.tensor([ALPHA_MAX, 0.0, 0.0]), atol=1e-6)


def test_empty_tiles_keep_the_background_exactly():
    # a cluster in the top-left corner of a 64x48 image: most 16x16 tiles have no Gaussian at all
    splats = random_splats(80, torch.Generator().manual_seed(11), center=(-0.55, -0.4, 3.0), extent=0.2)
    viewmats, Ks = pinhole(64, 48, 80.0)
    background = torch.tensor([[0.2, 0.4, 0.6, 0.0]])
    image, alpha = assert_same_as_dense(splats, viewmats, Ks, 64, 48, background)
    assert alpha[0, :16, :16].max() > 0.5
    assert torch.equal(image[0, 32:, 32:], background[0].expand(16, 32, 4)) and alpha[0, 32:, 32:].max() == 0


def test_behind_near_offscreen_and_far_gaussians_change_nothing():
    base = random_splats(100, torch.Generator().manual_seed(2))
    viewmats, Ks = pinhole(32, 32, 80.0)
    extra = Splats(torch.tensor([[0.0, 0.0, -3.0], [0.0, 0.0, 0.005], [40.0, 0.0, 3.0], [0.0, -50.0, 3.0],
                                 [0.0, 0.0, 2e10]]),
                   torch.tensor([[1.0, 0, 0, 0]]).repeat(5, 1), torch.full((5, 3), 0.05), torch.ones(5), torch.ones(5, 3))
    both = Splats(*(torch.cat([a, b]) for a, b in zip(base._tensors(), extra._tensors())))
    proj = project_gaussians_compiled(both.means, both.quats, both.scales, both.opacities, viewmats, Ks, 32, 32)
    assert not proj.valid[0, 100:].any() and (proj.radii[0, 100:] == 0).all()
    assert torch.equal(composite(base, viewmats, Ks, 32, 32)[0], composite(both, viewmats, Ks, 32, 32)[0])
    assert_same_as_dense(both, viewmats, Ks, 32, 32)  # the culled ones get the reference's gradients too


@pytest.mark.parametrize("scale", [20.0, 1e-5])
def test_huge_and_tiny_scales_match_dense(scale):
    splats = random_splats(50, torch.Generator().manual_seed(4))
    splats.scales[:5] = scale
    viewmats, Ks = pinhole(24, 24, 60.0)
    assert_same_as_dense(splats, viewmats, Ks, 24, 24)


def test_projection_matches_pytorch_including_culled_and_unnormalised():
    g = torch.Generator().manual_seed(5)
    n = 64
    means = torch.cat([(torch.rand(n, 2, generator=g) - 0.5) * 3, torch.rand(n, 1, generator=g) * 6 - 1], 1)
    inputs = [means, torch.randn(n, 4, generator=g) * 3, torch.rand(n, 3, generator=g) * 0.3 + 1e-3,
              torch.rand(n, generator=g)]
    cams = orbit_cameras(0.5, torch.tensor([90.0, 70.0]), torch.tensor([0.0, 30.0]), 0.9, 48, 40)
    outs = []
    for fn in (project_gaussians_compiled, project_gaussians):
        leaves = [t.clone().requires_grad_(True) for t in inputs]
        proj = fn(*leaves, cams.viewmats, cams.Ks, 48, 40)
        weights = torch.rand(2, n, 6, generator=torch.Generator().manual_seed(6))
        loss = (torch.cat([proj.means2d, proj.conics, proj.depths[..., None]], -1) * weights).sum()
        outs.append((proj, torch.autograd.grad(loss, leaves[:3])))
    (cp, cg), (tp, tg) = outs
    assert tp.valid.any() and not tp.valid.all() and (~tp.valid & (tp.depths == 1)).any()  # some behind the camera
    assert torch.equal(cp.valid, tp.valid) and torch.equal(cp.radii, tp.radii)
    for a, b in ((cp.means2d, tp.means2d), (cp.conics, tp.conics), (cp.depths, tp.depths), (cp.extents, tp.extents)):
        a, b = a.detach(), b.detach()
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-5 * float(b.abs().max()))
    for a, b in zip(cg, tg):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-5 * float(b.abs().max()))


def test_finite_difference_gradients_float64():
    g = torch.Generator().manual_seed(1)
    n = 4
    means = torch.cat([(torch.rand(n, 2, generator=g) - 0.5) * 0.4, 3.0 + torch.rand(n, 1, generator=g)], 1)
    splats = Splats(means.double(), torch.randn(n, 4, generator=g).double(),
                    (0.25 + 0.1 * torch.rand(n, 3, generator=g)).double(),
                    (0.3 + 0.3 * torch.rand(n, generator=g)).double(), torch.rand(n, 3, generator=g).double())
    viewmats, Ks = pinhole(10, 8, 12.0, torch.float64)
    weights = torch.rand(1, 8, 10, 4, generator=g).double()
    bg = torch.full((1, 4), 0.3, dtype=torch.float64)

    def loss(*tensors):
        image, alpha, _ = composite(Splats(*tensors), viewmats, Ks, 10, 8, bg)
        return (image * weights).sum() + (alpha[..., 0] * weights[..., 0]).sum()

    inputs = tuple(t.clone().requires_grad_(True) for t in splats._tensors())
    assert torch.autograd.gradcheck(loss, inputs, eps=1e-6, atol=1e-6, rtol=1e-4)


def test_threads_and_tile_size_do_not_change_the_result():
    splats = random_splats(400, torch.Generator().manual_seed(7))
    viewmats, Ks = pinhole(48, 40, 120.0)
    previous = torch.get_num_threads()
    results = []
    try:
        for threads, tile in ((1, 16), (2, 16), (2, 8), (2, 4)):
            torch.set_num_threads(threads)
            s = leaf(splats)
            image, alpha, proj = composite(s, viewmats, Ks, 48, 40, tile_size=tile)
            results.append((image, alpha, gradients(s, image, alpha, torch.ones_like(image), proj)))
    finally:
        torch.set_num_threads(previous)
    for image, alpha, grads in results[1:]:
        assert torch.equal(image, results[0][0]) and torch.equal(alpha, results[0][1])
    # gradients are summed in a fixed order: the same bits on any number of threads (deterministic runs)
    assert all(torch.equal(a, b) for a, b in zip(results[1][2], results[0][2]))
    for a, b in (pair for other in results[2:] for pair in zip(other[2], results[0][2])):  # other tiles, other order
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-6 * float(b.abs().max()))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_tile_lists_match_the_pytorch_binning_with_depth_ties(kernel, dtype):
    """The kernel's tile lists (radix-sorted depths, Gaussians covering no pixel dropped) are those of
    ``_tile_pairs`` (a stable argsort), entry for entry, on two cameras with many exactly equal depths."""
    splats = random_splats(500, torch.Generator().manual_seed(11), center=(0.0, 0.0, 0.0))
    splats = Splats(splats.means.to(dtype), splats.quats.to(dtype), splats.scales.to(dtype), splats.opacities.to(dtype),
                    splats.colors.to(dtype))
    cams = orbit_cameras(3.0, 90.0, torch.tensor([0.0, 40.0]), 0.8, 40, 30)
    viewmats, Ks = cams.viewmats.to(dtype), cams.Ks.to(dtype)
    proj = project_gaussians(splats.means, splats.quats, splats.scales, splats.opacities, viewmats, Ks, 40, 30)
    proj = replace(proj, depths=torch.round(proj.depths.detach() * 8) / 8)  # a handful of depth values: ties
    features = torch.cat([splats.colors.expand(2, -1, -1), proj.depths[..., None]], -1).detach()
    _, _, _, offsets, tile_ids = kernel.composite_forward(
        proj.means2d.detach().contiguous(), proj.conics.detach().contiguous(),
        proj.opacities.detach().contiguous(), features.contiguous(), proj.depths.detach().contiguous(),
        proj.extents.to(dtype).contiguous(), proj.valid.contiguous(), 40, 30, 4, cpu_kernel._RULE)
    _, gauss, tile, inst = _tile_pairs(proj, 40, 30, 4)
    assert proj.depths.detach()[proj.valid].unique().numel() < proj.valid.sum() / 4  # the ties are there
    assert torch.equal(tile_ids.long(), gauss[inst])
    assert torch.equal(offsets, torch.searchsorted(tile, torch.arange(offsets.numel())))


def test_renderer_uses_the_kernel_on_cpu():
    splats = random_splats(200, torch.Generator().manual_seed(8), center=(0.0, 0.0, 0.0))
    cams = orbit_cameras(3.0, 90.0, torch.tensor([0.0, 90.0]), 0.7, 32, 24)
    assert resolve_backend("auto", torch.device("cpu")) == "compiled"
    out = render(splats, cams, background=torch.ones(2, 3))
    dense = render(splats, cams, background=torch.ones(2, 3), backend="dense")
    assert out.backend == "compiled" and out.radii.dtype == torch.int32 and out.radii.shape == (2, 200, 2)
    for name in ("rgb", "alpha", "depth"):
        assert (getattr(out, name) - getattr(dense, name)).abs().max() < 1e-4
    empty = Splats(torch.zeros(0, 3, requires_grad=True), torch.zeros(0, 4), torch.zeros(0, 3), torch.zeros(0),
                   torch.zeros(0, 3))
    out = render(empty, cams, background=torch.tensor([0.2, 0.4, 0.6]), backend="compiled")
    assert torch.allclose(out.rgb, torch.tensor([0.2, 0.4, 0.6]).expand(2, 24, 32, 3)) and out.alpha.max() == 0
    (out.rgb.sum() + out.means2d.sum()).backward()
    assert empty.means.grad.shape == (0, 3)


def test_build_failure_falls_back_to_pytorch_with_one_warning(monkeypatch, tmp_path):
    monkeypatch.setenv("CXX", str(tmp_path / "no-such-compiler"))
    monkeypatch.setenv("SIE3D_KERNEL_CACHE", str(tmp_path / "kernels"))
    monkeypatch.setattr(renderer, "_fallback_warned", [])
    cpu_kernel.reset()
    try:
        assert cpu_kernel.load_kernel() is None and "no C++ compiler" in cpu_kernel.kernel_error()
        splats = random_splats(30, torch.Generator().manual_seed(1), center=(0.0, 0.0, 0.0))
        cams = orbit_cameras(3.0, 90.0, 0.0, 0.7, 16)
        with pytest.warns(RuntimeWarning, match="could not be built.*no C.. compiler"):
            out = render(splats, cams)
        assert out.backend == "torch"
        with warnings.catch_warnings(record=True) as record:  # one warning per process, whichever backend asked
            warnings.simplefilter("always")
            again = render(splats, cams, backend="compiled")
        assert again.backend == "torch" and not [w for w in record if "could not be built" in str(w.message)]
        assert torch.equal(out.rgb, again.rgb)
        assert not list((tmp_path / "kernels").glob("*.so"))
    finally:
        cpu_kernel.reset()
