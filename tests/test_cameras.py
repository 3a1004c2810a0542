"""Camera convention, intrinsics, sampler of the reference settings, view labels."""

import math

import pytest
import torch

from sie3d.config import CameraConfig
from sie3d.render.cameras import (
    CameraSampler,
    frontal_camera,
    orbit_cameras,
    orbit_position,
    project_points,
    view_label,
    wrap_azimuth,
)


def test_orbit_positions_follow_the_documented_convention():
    pos = orbit_position(torch.tensor([2.0, 2.0, 2.0, 2.0]), torch.tensor([90.0, 90.0, 90.0, 0.0]),
                         torch.tensor([0.0, 90.0, 180.0, 0.0]))
    expected = torch.tensor([[0, 0, 2.0], [2.0, 0, 0], [0, 0, -2.0], [0, 2.0, 0]])
    assert torch.allclose(pos, expected, atol=1e-6)


def test_frontal_view_maps_subject_left_to_image_right_and_up_to_image_top():
    cams = orbit_cameras(4.5, 90.0, 0.0, 0.7, 100, 80)
    assert torch.allclose(cams.centers, torch.tensor([[0.0, 0.0, 4.5]]), atol=1e-6)
    uv = project_points(torch.tensor([[0.0, 0.0, 0.0], [0.3, 0.0, 0.0], [0.0, 0.3, 0.0]]), cams)[0]
    assert torch.allclose(uv[0], torch.tensor([50.0, 40.0]))
    assert uv[1, 0] > 50 and abs(uv[1, 1] - 40) < 1e-4  # +x (subject's left) -> right
    assert uv[2, 1] < 40  # +y (up) -> top


def test_viewmats_are_rigid_and_look_at_the_origin():
    cams = orbit_cameras(torch.tensor([5.0, 5.9]), torch.tensor([55.0, 100.0]), torch.tensor([-170.0, 30.0]), 0.5, 64)
    R = cams.viewmats[:, :3, :3]
    assert torch.allclose(R @ R.transpose(1, 2), torch.eye(3).expand(2, 3, 3), atol=1e-6)
    assert torch.allclose(torch.linalg.det(R), torch.ones(2), atol=1e-6)
    origin_cam = cams.viewmats[:, :3, 3]  # world origin in camera coordinates
    assert torch.allclose(origin_cam, torch.stack([torch.zeros(2), torch.zeros(2), cams.radius], -1), atol=1e-5)
    # polar < 90 is above the head: the camera's "down" axis points partly along -y
    assert cams.viewmats[0, 1, 1] < 0 and cams.centers[0, 1] > 0


def test_intrinsics_match_the_vertical_field_of_view():
    fovy, H = 0.6, 90
    cams = orbit_cameras(3.0, 90.0, 0.0, fovy, 120, H)
    top = torch.tensor([[0.0, 3.0 * math.tan(fovy / 2), 0.0]])  # on the upper frustum edge at the origin's depth
    assert torch.allclose(project_points(top, cams)[0, 0, 1], torch.tensor(0.0), atol=1e-4)
    assert cams.Ks[0, 0, 0] == cams.Ks[0, 1, 1] and cams.Ks[0, 0, 2] == 60 and cams.Ks[0, 1, 2] == 45


def test_bad_cameras_are_rejected():
    with pytest.raises(ValueError, match="fovy"):
        orbit_cameras(3.0, 90.0, 0.0, 4.0, 32)
    with pytest.raises(ValueError, match="image size"):
        orbit_cameras(3.0, 90.0, 0.0, 0.5, 0)
    with pytest.raises(ValueError, match="radius_range"):
        CameraSampler(CameraConfig(radius_range=[6.0, 5.0]), 32)


def test_view_labels_and_wrapping():
    assert [view_label(a) for a in (0, 45, 46, -90, 134, 135, 180, -179, 360)] == [
        "front", "front", "side", "side", "side", "back", "back", "back", "front"]
    assert wrap_azimuth(190.0) == -170.0 and wrap_azimuth(-180.0) == -180.0


def test_frontal_camera_uses_the_evaluation_settings():
    cfg = CameraConfig()
    cam = frontal_camera(cfg, 64)
    assert len(cam) == 1 and cam.width == 64
    assert cam.radius.item() == cfg.eval_radius and cam.azimuth_deg.item() == 0
    assert cam.polar_deg.item() == cfg.eval_polar and abs(cam.fovy.item() - cfg.eval_fovy) < 1e-7


def test_sampler_ranges_schedule_and_frequencies():
    cfg = CameraConfig()
    sampler = CameraSampler(cfg, 32)
    batch = sampler.sample(4000, iteration=0, generator=torch.Generator().manual_seed(0))
    cams = batch.cameras
    assert len(cams) == 4000 and batch.backgrounds.shape == (4000, 3) and batch.flip.dtype == torch.bool
    assert cams.radius.min() >= 5.6 and cams.radius.max() <= 5.9
    assert cams.polar_deg.min() >= 55 and cams.polar_deg.max() <= 100
    assert cams.fovy.min() >= 0.4 and cams.fovy.max() <= 0.6
    front = (cams.azimuth_deg.abs() <= 90).float().mean()
    assert 0.70 < front < 0.80  # 0.5 from the front sector + 0.5 * 0.5 from the full circle
    white = (batch.backgrounds == 1).all(-1).float().mean()
    black = (batch.backgrounds == 0).all(-1).float().mean()
    assert abs(white - 0.34) < 0.03 and abs(black - 0.33) < 0.03
    assert abs(batch.flip.float().mean() - 0.5) < 0.03
    assert set(batch.view_labels) == {"front", "side", "back"}
    # radius lower bound: x0.95 every 1500 iterations, never below the floor
    assert sampler.radius_bounds(1499) == (5.6, 5.9)
    assert sampler.radius_bounds(3000) == pytest.approx((5.6 * 0.95 ** 2, 5.9))
    assert sampler.radius_bounds(30000) == (4.6, 5.9)
    late = sampler.sample(500, iteration=30000, generator=torch.Generator().manual_seed(1)).cameras
    assert late.radius.min() >= 4.6 and late.radius.min() < 4.7


def test_sampler_is_reproducible_and_flip_can_be_disabled():
    cfg = CameraConfig(random_flip=False)
    a = CameraSampler(cfg, 16).sample(8, 10, torch.Generator().manual_seed(3))
    b = CameraSampler(cfg, 16).sample(8, 10, torch.Generator().manual_seed(3))
    assert torch.equal(a.cameras.viewmats, b.cameras.viewmats) and not a.flip.any()
