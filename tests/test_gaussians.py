"""Mesh-bound Gaussians: binding, local->world, following deformations, optimiser bookkeeping."""

import math

import pytest
import torch
from helpers_avatar import sphere_template

from sie3d.avatar.gaussians import MeshGaussians, face_frames, quat_multiply, rotmat_to_quat
from sie3d.avatar.template import signed_volume, subdivide_template
from sie3d.config import GaussiansConfig, OptimConfig
from sie3d.render.rasterize import covariance_3d, quat_to_rotmat


@pytest.fixture
def template():
    return sphere_template()


def random_rotation(seed):
    q = torch.nn.functional.normalize(torch.randn(4, generator=torch.Generator().manual_seed(seed)), dim=0)
    return quat_to_rotmat(q)


def test_initial_gaussians_sit_on_their_faces(template):
    assert signed_volume(template.vertices, template.faces) > 0
    model = MeshGaussians(template, GaussiansConfig(subdivisions=1, init_opacity=0.3))
    assert model.num_gaussians == len(model) == 4 * template.faces.shape[0]
    splats = model.to_world()
    centroid, rotation, k = face_frames(model.mesh_vertices(), model.faces)
    assert torch.allclose(splats.means, centroid, atol=1e-6)
    cfg = model.cfg
    expected = k[:, None] * torch.tensor([cfg.init_scale_factor, cfg.init_scale_factor,
                                          cfg.init_scale_factor * cfg.init_flatness])
    assert torch.allclose(splats.scales, expected, atol=1e-6)
    assert torch.allclose(splats.opacities, torch.full_like(splats.opacities, 0.3), atol=1e-6)
    # the thin axis is the face normal, pointing outwards
    thin_axis = quat_to_rotmat(splats.quats)[..., 2]
    assert torch.allclose(thin_axis, rotation[..., 2], atol=1e-5)
    assert ((thin_axis * splats.means).sum(-1) > 0).all()
    # face-region flag: faces with at least two of three vertices in the region
    sub_region = subdivide_template(template, 1)[0].face_region
    assert torch.equal(model.face_region, sub_region[model.faces].sum(-1) >= 2)


def test_several_gaussians_per_face_lie_inside_their_triangles(template):
    model = MeshGaussians(template, GaussiansConfig(subdivisions=0, gaussians_per_face=3),
                          generator=torch.Generator().manual_seed(0))
    assert model.num_gaussians == 3 * template.faces.shape[0]
    means = model.to_world().means
    v0, v1, v2 = template.vertices[template.faces[model.face_ids]].unbind(1)
    # barycentric coordinates of each mean in its own triangle
    t = torch.linalg.solve(torch.stack([v1 - v0, v2 - v0, torch.linalg.cross(v1 - v0, v2 - v0)], -1), means - v0)
    assert (t[:, :2] >= -1e-5).all() and (t[:, :2].sum(-1) <= 1 + 1e-5).all() and t[:, 2].abs().max() < 1e-5


def test_rigid_motion_of_the_mesh_moves_the_gaussians_rigidly(template):
    model = MeshGaussians(template, GaussiansConfig(subdivisions=0))
    with torch.no_grad():  # non-trivial local state
        for name, p in model.params.items():
            p.add_(0.2 * torch.randn(p.shape, generator=torch.Generator().manual_seed(len(name))))
    rest = model.to_world()
    R, t = random_rotation(1), torch.tensor([0.3, -0.2, 0.5])
    moved = model.to_world(template.vertices @ R.T + t)
    assert torch.allclose(moved.means, rest.means @ R.T + t, atol=1e-5)
    cov_rest = covariance_3d(rest.quats, rest.scales)
    cov_moved = covariance_3d(moved.quats, moved.scales)
    assert torch.allclose(cov_moved, R @ cov_rest @ R.T, atol=1e-6)
    assert torch.equal(moved.colors, rest.colors) and torch.equal(moved.opacities, rest.opacities)
    # a uniform scaling of the mesh scales positions and Gaussian sizes alike
    scaled = model.to_world(2.0 * template.vertices)
    assert torch.allclose(scaled.means, 2 * rest.means, atol=1e-5)
    assert torch.allclose(scaled.scales, 2 * rest.scales, atol=1e-6)


def test_expressions_move_gaussians_and_gradients_reach_the_coefficients(template):
    model = MeshGaussians(template, GaussiansConfig(subdivisions=1))
    coeffs = torch.zeros(1, requires_grad=True)
    splats = model.to_world(template.deform(coeffs))
    splats.means[:, 2].sum().backward()
    assert coeffs.grad.item() > 0
    pushed = model.to_world(template.deform(torch.tensor([1.0]))).means
    moved = (pushed - model.to_world().means).norm(dim=-1)
    assert moved.max() > 0.05 and moved[model.to_world().means[:, 2] < -0.2].max() == 0
    assert torch.allclose(model.anchor_positions(template.deform(torch.tensor([1.0]))), pushed, atol=1e-6)
    with pytest.raises(ValueError, match="like the template"):
        model.to_world(torch.zeros(5, 3))


def test_rotmat_quat_round_trip_including_half_turns():
    quats = torch.nn.functional.normalize(torch.randn(200, 4, generator=torch.Generator().manual_seed(0)), dim=-1)
    quats = torch.cat([quats, torch.tensor([[0.0, 1, 0, 0], [0.0, 0, 1, 0], [0.0, 0, 0, 1], [1.0, 0, 0, 0]])])
    back = rotmat_to_quat(quat_to_rotmat(quats))
    same = torch.minimum((back - quats).abs().amax(-1), (back + quats).abs().amax(-1))
    assert same.max() < 1e-5
    a, b = quats[:10], quats[10:20]
    assert torch.allclose(quat_to_rotmat(quat_multiply(a, b)), quat_to_rotmat(a) @ quat_to_rotmat(b), atol=1e-5)


def test_param_groups_and_learning_rates(template):
    model = MeshGaussians(template, GaussiansConfig(subdivisions=0))
    optim = OptimConfig()
    groups = model.param_groups(optim)
    assert [g["name"] for g in groups] == ["xyz", "color", "opacity", "scaling", "rotation"]
    world_xyz = groups[0]["lr"] * model.mean_face_scale
    assert world_xyz == pytest.approx(optim.lr_xyz_init * template.bounding_radius)
    end = model.learning_rates(optim, 1.0)
    assert end["scaling"] == pytest.approx(optim.lr_scaling_final) and end["opacity"] == optim.lr_opacity
    mid = model.learning_rates(optim, 0.5)["color"]
    assert mid == pytest.approx(math.sqrt(optim.lr_color_init * optim.lr_color_final))
    with pytest.raises(ValueError, match="sh_degree"):
        MeshGaussians(template, GaussiansConfig(sh_degree=3))


def _step(model, optimizer):
    optimizer.zero_grad()
    s = model.to_world()
    (s.means.sum() + s.colors.sum() + s.opacities.sum() + s.scales.sum() + s.quats.sum()).backward()
    optimizer.step()


def test_edit_keeps_adam_state_consistent(template):
    model = MeshGaussians(template, GaussiansConfig(subdivisions=0))
    optimizer = torch.optim.Adam(model.param_groups(OptimConfig()), eps=1e-15)
    _step(model, optimizer)
    n = model.num_gaussians
    old_avg = {name: optimizer.state[p]["exp_avg"].clone() for name, p in model.params.items()}
    keep = torch.arange(n) % 3 != 0
    new = {name: p.detach()[:2].clone() for name, p in model.params.items()}
    new.update(face_ids=model.face_ids[:2], face_region=model.face_region[:2], anchors=model.anchors[:2])
    model.edit(optimizer, keep=keep, append=new)
    assert model.num_gaussians == int(keep.sum()) + 2
    for group in optimizer.param_groups:
        (param,) = group["params"]
        assert param is model.params[group["name"]]
        state = optimizer.state[param]
        assert state["exp_avg"].shape == param.shape == state["exp_avg_sq"].shape
        assert torch.equal(state["exp_avg"][:-2], old_avg[group["name"]][keep])
        assert state["exp_avg"][-2:].abs().max() == 0
    assert model.face_ids.shape[0] == model.anchors.shape[0] == model.num_gaussians
    _step(model, optimizer)  # the optimiser keeps working


def test_opacity_reset_in_logit_space(template):
    model = MeshGaussians(template, GaussiansConfig(subdivisions=0, init_opacity=0.5))
    optimizer = torch.optim.Adam(model.param_groups(OptimConfig()))
    _step(model, optimizer)
    with torch.no_grad():
        model.params["opacity"][:3] = torch.logit(torch.tensor(0.005))
    mask = ~model.face_region
    model.clamp_opacity(optimizer, 0.01, mask)
    opac = model.to_world().opacities
    assert torch.allclose(opac[mask & (torch.arange(len(opac)) >= 3)], torch.tensor(0.01), atol=1e-6)
    assert torch.allclose(opac[:3], torch.tensor(0.005), atol=1e-6)  # already lower: untouched
    assert (opac[model.face_region] > 0.4).all()
    assert optimizer.state[model.params["opacity"]]["exp_avg"].abs().max() == 0


def test_state_dict_round_trip_with_another_number_of_gaussians(template):
    a = MeshGaussians(template, GaussiansConfig(subdivisions=0))
    a.edit(None, keep=torch.arange(a.num_gaussians) < 10)
    b = MeshGaussians(template, GaussiansConfig(subdivisions=0))
    b.load_state_dict(a.state_dict())
    assert b.num_gaussians == 10 and torch.equal(b.to_world().means, a.to_world().means)
