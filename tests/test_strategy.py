"""Densify / prune / opacity-reset strategy on mesh-bound Gaussians."""

import math

import pytest
import torch
from helpers_avatar import sphere_template

from sie3d.avatar.gaussians import MeshGaussians
from sie3d.avatar.strategy import SPLIT_SHRINK, DensifyStrategy
from sie3d.config import GaussiansConfig, OptimConfig
from sie3d.render.cameras import orbit_cameras
from sie3d.render.renderer import RenderOutput, render


def setup(**overrides):
    cfg = GaussiansConfig(subdivisions=0, **{"densify_from": 0, "densify_every": 10, "opacity_reset_every": 0,
                                             **overrides})
    template = sphere_template()
    model = MeshGaussians(template, cfg)
    optimizer = torch.optim.Adam(model.param_groups(OptimConfig()), eps=1e-15)
    return cfg, model, optimizer, DensifyStrategy(cfg, generator=torch.Generator().manual_seed(0))


def fake_output(n, grad_px, radii_px=5, width=64, height=48, cameras=1):
    """A render output whose screen-space gradient is ``grad_px`` [N] pixels (along x) in every camera."""
    means2d = torch.zeros(cameras, n, 2, requires_grad=True)
    means2d.grad = torch.zeros(cameras, n, 2)
    means2d.grad[..., 0] = grad_px
    radii = torch.full((cameras, n, 2), radii_px, dtype=torch.int32)
    rgb = torch.zeros(cameras, height, width, 3)
    return RenderOutput(rgb=rgb, alpha=rgb[..., :1], depth=rgb[..., :1], means2d=means2d, radii=radii, backend="fake")


def test_gradient_statistics_are_in_normalised_device_units():
    cfg, model, optimizer, strategy = setup()
    n = model.num_gaussians
    out = fake_output(n, torch.full((n,), 0.001), cameras=2)
    out.radii[1, :5] = 0  # not visible in the second camera
    strategy.update_stats(out)
    assert torch.allclose(strategy.grad2d[5:], torch.full((n - 5,), 2 * 0.001 * 32 * 2))
    assert strategy.count[:5].tolist() == [1.0] * 5 and strategy.count[5] == 2
    assert strategy.max_radius.max() == 5


def test_clone_small_split_large_and_keep_the_face_region():
    cfg, model, optimizer, strategy = setup()
    n = model.num_gaussians
    extent = model.template.bounding_radius
    with torch.no_grad():  # half the Gaussians small enough to clone, half large enough to split
        small = torch.arange(n) % 2 == 0
        world_target = torch.where(small, 0.5 * cfg.densify_scale_threshold * extent, 0.2)
        k = model.to_world().scales[:, 0] / torch.exp(model.params["scaling"][:, 0])
        model.params["scaling"][:] = torch.log(world_target / k)[:, None]
    grow = torch.arange(n) < n // 2  # high gradient for the first half
    out = fake_output(n, torch.where(grow, 1.0, 0.0))
    before = model.to_world()
    face = model.face_region.clone()
    info = strategy.step_post_backward(model, optimizer, out, iteration=10)
    n_clone = int((grow & small & ~face).sum())
    n_split = int((grow & ~small & ~face).sum())
    assert info["cloned"] == n_clone and info["split"] == n_split and n_clone > 0 and n_split > 0
    assert info["pruned"] == 0 and model.num_gaussians == n + n_clone + n_split
    after = model.to_world()
    kept = ~(grow & ~small & ~face)
    assert torch.allclose(after.means[: int(kept.sum())], before.means[kept])
    children = after.scales[n - n_split + n_clone:]
    parents = before.scales[grow & ~small & ~face].repeat(2, 1)
    assert torch.allclose(children, parents / SPLIT_SHRINK, rtol=1e-5)
    # face-region Gaussians are all still there, none grew
    assert model.face_region.sum() == face.sum()
    for group in optimizer.param_groups:
        assert optimizer.state.get(group["params"][0]) is None or \
            optimizer.state[group["params"][0]]["exp_avg"].shape == group["params"][0].shape
    assert strategy.grad2d.shape == (model.num_gaussians,) and strategy.count.sum() == 0


def test_prune_by_opacity_screen_size_and_world_scale():
    cfg, model, optimizer, strategy = setup(opacity_reset_every=7)  # size pruning from iteration 8, no reset at 10/20
    n = model.num_gaussians
    face = model.face_region.clone()
    with torch.no_grad():
        model.params["opacity"][:] = 3.0
        model.params["opacity"][:4] = torch.logit(torch.tensor(0.1))  # transparent
    big_screen = torch.zeros(n, dtype=torch.bool)
    big_screen[4:8] = True
    radii = torch.where(big_screen, 25, 5).to(torch.int32)
    out = fake_output(n, torch.zeros(n))
    out.radii[:] = radii[None, :, None]
    info = strategy.step_post_backward(model, optimizer, out, iteration=10)
    expected = ((torch.arange(n) < 8) & ~face).sum()
    assert info["pruned"] == expected and model.num_gaussians == n - expected
    assert model.face_region.sum() == face.sum()
    # world scale > prune_world_scale is pruned too (past the first reset)
    with torch.no_grad():
        model.params["scaling"][~model.face_region] += math.log(100.0)
    info = strategy.step_post_backward(model, optimizer, fake_output(model.num_gaussians, 0.0), iteration=20)
    assert model.num_gaussians == int(face.sum()) and info["opacity_reset"] is False


def test_opacity_reset_schedule_spares_the_face_region_by_default():
    cfg, model, optimizer, strategy = setup(opacity_reset_every=400, densify_from=10**6)
    with torch.no_grad():
        model.params["opacity"][:] = 3.0
    out = fake_output(model.num_gaussians, 0.0)
    assert not strategy.step_post_backward(model, optimizer, out, 399)["opacity_reset"]
    assert strategy.step_post_backward(model, optimizer, out, 400)["opacity_reset"]
    opac = model.to_world().opacities
    assert torch.allclose(opac[~model.face_region], torch.tensor(cfg.opacity_reset_value), atol=1e-6)
    assert (opac[model.face_region] > 0.9).all()
    cfg.reset_face_region_opacity = True
    strategy.step_post_backward(model, optimizer, out, 800)
    assert torch.allclose(model.to_world().opacities, torch.tensor(cfg.opacity_reset_value), atol=1e-6)
    # nothing happens after densify_until
    assert not strategy.step_post_backward(model, optimizer, out, cfg.densify_until + 400)["opacity_reset"]


def test_hooks_with_a_real_render_and_training_steps():
    cfg, model, optimizer, strategy = setup(densify_grad_threshold=1e-9, densify_every=2, prune_opacity=0.0)
    cams = orbit_cameras(3.5, 90.0, torch.tensor([0.0, 180.0]), 0.8, 32)
    sizes = [model.num_gaussians]
    for iteration in range(1, 5):
        optimizer.zero_grad()
        out = render(model.to_world(), cams, torch.ones(3))
        strategy.step_pre_backward(model, out, iteration)
        out.rgb.mean().backward()
        assert out.means2d.grad is not None and out.means2d.grad.abs().sum() > 0
        optimizer.step()
        strategy.step_post_backward(model, optimizer, out, iteration)
        sizes.append(model.num_gaussians)
    assert sizes[-1] > sizes[0]  # every visible non-face Gaussian passes the tiny threshold
    state = strategy.state_dict()
    other = DensifyStrategy(cfg)
    other.load_state_dict(state)
    assert torch.equal(other.grad2d, strategy.grad2d) and other.scene_extent == pytest.approx(1.0)
