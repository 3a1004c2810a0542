"""Orbit cameras in one convention, the training camera sampler and the frontal evaluation camera.

World convention (the head templates are built or normalised to it):

* ``+y`` is up, the face looks along ``+z``; the subject's left is ``+x`` (it appears on the right
  of a frontal image, as in a photo);
* an orbit camera at ``(radius, polar, azimuth)`` sits at
  ``radius * (sin(polar) sin(azimuth), cos(polar), sin(polar) cos(azimuth))`` and looks at the origin:
  azimuth 0 is the frontal view, azimuth +90 looks at the subject's left side, ±180 at the back;
  polar 90 is level, polar < 90 looks down from above;
* cameras are OpenCV / gsplat style: ``viewmats`` [C, 4, 4] map world to camera coordinates with
  x right, y down, z forward; ``Ks`` [C, 3, 3] are pixel intrinsics with the principal point at the
  image centre and pixel ``(i, j)`` centred at ``(i + 0.5, j + 0.5)``; ``fovy`` is the vertical field
  of view in radians.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..config import CameraConfig

#: |azimuth| up to this many degrees is "front", beyond 180 minus it is "back", else "side"
FRONT_HALF_ANGLE = 45.0


@dataclass
class Cameras:
    """A batch of C pinhole cameras of one image size.

    Attributes:
        viewmats: [C, 4, 4] world-to-camera (OpenCV).
        Ks: [C, 3, 3] intrinsics in pixels.
        width, height: image size in pixels.
        azimuth_deg, polar_deg, radius, fovy: [C] the orbit parameters (fovy in radians).
    """

    viewmats: torch.Tensor
    Ks: torch.Tensor
    width: int
    height: int
    azimuth_deg: torch.Tensor
    polar_deg: torch.Tensor
    radius: torch.Tensor
    fovy: torch.Tensor

    def __len__(self) -> int:
        return self.viewmats.shape[0]

    def to(self, device: torch.device | str) -> "Cameras":
        return Cameras(self.viewmats.to(device), self.Ks.to(device), self.width, self.height,
                       self.azimuth_deg.to(device), self.polar_deg.to(device), self.radius.to(device),
                       self.fovy.to(device))

    def __getitem__(self, index) -> "Cameras":
        """Cameras at an int, slice, or index tensor (always a batch)."""
        if isinstance(index, int):
            index = slice(index, index + 1 if index != -1 else None)
        return Cameras(self.viewmats[index], self.Ks[index], self.width, self.height,
                       self.azimuth_deg[index], self.polar_deg[index], self.radius[index], self.fovy[index])

    def window(self, x0: int, y0: int, width: int, height: int) -> "Cameras":
        """The pixels ``[y0, y0 + height) x [x0, x0 + width)`` of these cameras' images, as cameras of that size.

        The principal point moves by ``(-x0, -y0)``, so a render of the window equals that region of the
        full render (with ``x0``, ``y0`` on the rasterizer's tile grid the same tiles are drawn; only the
        projection's Jacobian clamp, 1.3x the frustum, follows the smaller frustum, which changes nothing
        for Gaussians that project within 0.15 x the window's size of it).
        """
        if x0 < 0 or y0 < 0 or width < 1 or height < 1 or x0 + width > self.width or y0 + height > self.height:
            raise ValueError(f"window {width}x{height} at ({x0}, {y0}) is not inside the {self.width}x{self.height} image")
        Ks = self.Ks.clone()
        Ks[:, 0, 2] -= x0
        Ks[:, 1, 2] -= y0
        return Cameras(self.viewmats, Ks, width, height, self.azimuth_deg, self.polar_deg, self.radius, self.fovy)

    @property
    def centers(self) -> torch.Tensor:
        """[C, 3] camera positions in world coordinates."""
        R, t = self.viewmats[:, :3, :3], self.viewmats[:, :3, 3]
        return -(R.transpose(1, 2) @ t[..., None]).squeeze(-1)


def project_points(points: torch.Tensor, cameras: Cameras) -> torch.Tensor:
    """[C, P, 2] pixel coordinates (x right, y down) of world points [P, 3] in each camera."""
    R, t = cameras.viewmats[:, :3, :3].to(points), cameras.viewmats[:, :3, 3].to(points)
    cam = torch.einsum("cij,pj->cpi", R, points) + t[:, None]
    uv = cam[..., :2] / cam[..., 2:3]
    Ks = cameras.Ks.to(points)
    return uv * torch.stack([Ks[:, 0, 0], Ks[:, 1, 1]], -1)[:, None] + Ks[:, None, :2, 2]


def _as_batch(*values) -> list[torch.Tensor]:
    """float32 ``[C]`` tensors of floats or tensors, broadcast; on the device of the tensors given (CPU for floats)."""
    device = next((v.device for v in values if torch.is_tensor(v)), "cpu")
    tensors = [torch.as_tensor(v, dtype=torch.float32, device=device) for v in values]
    return [t.reshape(-1) for t in torch.broadcast_tensors(*tensors)]


def orbit_position(radius, polar_deg, azimuth_deg) -> torch.Tensor:
    """[C, 3] camera centres of the orbit parameters (see the module docstring)."""
    radius, polar_deg, azimuth_deg = _as_batch(radius, polar_deg, azimuth_deg)
    polar, azimuth = torch.deg2rad(polar_deg), torch.deg2rad(azimuth_deg)
    return radius[:, None] * torch.stack(
        [torch.sin(polar) * torch.sin(azimuth), torch.cos(polar), torch.sin(polar) * torch.cos(azimuth)], dim=-1)


def look_at(eye: torch.Tensor, target: torch.Tensor | None = None) -> torch.Tensor:
    """World-to-camera [C, 4, 4] (OpenCV) for cameras at ``eye`` [C, 3] looking at ``target`` (origin), +y up."""
    target = torch.zeros_like(eye) if target is None else target.expand_as(eye)
    forward = torch.nn.functional.normalize(target - eye, dim=-1)
    up = torch.tensor([0.0, 1.0, 0.0], dtype=eye.dtype, device=eye.device).expand_as(eye)
    right = torch.linalg.cross(forward, up)
    degenerate = right.norm(dim=-1) < 1e-6  # looking straight up or down: pick +z as the up hint
    z_hint = torch.tensor([0.0, 0.0, 1.0], device=eye.device).expand_as(eye)
    right = torch.where(degenerate[:, None], torch.linalg.cross(forward, z_hint), right)
    right = torch.nn.functional.normalize(right, dim=-1)
    down = torch.linalg.cross(forward, right)
    rotation = torch.stack([right, down, forward], dim=1)  # rows: camera axes in world coordinates
    viewmats = torch.zeros(eye.shape[0], 4, 4, dtype=eye.dtype, device=eye.device)
    viewmats[:, :3, :3] = rotation
    viewmats[:, :3, 3] = -(rotation @ eye[..., None]).squeeze(-1)
    viewmats[:, 3, 3] = 1.0
    return viewmats


def intrinsics(fovy, width: int, height: int) -> torch.Tensor:
    """[C, 3, 3] pinhole intrinsics with square pixels and the principal point at the image centre."""
    (fovy,) = _as_batch(fovy)
    focal = 0.5 * height / torch.tan(0.5 * fovy)
    Ks = torch.zeros(fovy.shape[0], 3, 3, device=fovy.device)
    Ks[:, 0, 0] = focal
    Ks[:, 1, 1] = focal
    Ks[:, 0, 2] = 0.5 * width
    Ks[:, 1, 2] = 0.5 * height
    Ks[:, 2, 2] = 1.0
    return Ks


def orbit_cameras(radius, polar_deg, azimuth_deg, fovy, width: int, height: int | None = None) -> Cameras:
    """Cameras on orbits around the origin; each argument is a float or a [C] tensor (broadcast)."""
    height = width if height is None else height
    if width <= 0 or height <= 0:
        raise ValueError(f"image size must be positive, got {width}x{height}")
    radius, polar_deg, azimuth_deg, fovy = _as_batch(radius, polar_deg, azimuth_deg, fovy)
    if (radius <= 0).any() or ((fovy <= 0) | (fovy >= math.pi)).any():
        raise ValueError("orbit cameras need radius > 0 and 0 < fovy < pi (radians)")
    viewmats = look_at(orbit_position(radius, polar_deg, azimuth_deg))
    return Cameras(viewmats=viewmats, Ks=intrinsics(fovy, width, height), width=width, height=height,
                   azimuth_deg=azimuth_deg, polar_deg=polar_deg, radius=radius, fovy=fovy)


def wrap_azimuth(azimuth_deg):
    """Azimuth wrapped to [-180, 180)."""
    return (azimuth_deg + 180.0) % 360.0 - 180.0


def view_label(azimuth_deg: float) -> str:
    """``"front"`` for |azimuth| <= 45, ``"back"`` for |azimuth| >= 135, else ``"side"``."""
    a = abs(float(wrap_azimuth(azimuth_deg)))
    if a <= FRONT_HALF_ANGLE:
        return "front"
    if a >= 180.0 - FRONT_HALF_ANGLE:
        return "back"
    return "side"


def frontal_camera(cfg: CameraConfig, resolution: int) -> Cameras:
    """The evaluation camera: azimuth 0, ``cfg.eval_polar``, ``cfg.eval_radius``, ``cfg.eval_fovy``."""
    return orbit_cameras(cfg.eval_radius, cfg.eval_polar, 0.0, cfg.eval_fovy, resolution, resolution)


@dataclass
class CameraBatch:
    """What the sampler draws for one iteration.

    Attributes:
        cameras: C cameras.
        backgrounds: [C, 3] background colours in [0, 1].
        flip: [C] bool: flip that render horizontally (augmentation; the trainer applies it).
    """

    cameras: Cameras
    backgrounds: torch.Tensor
    flip: torch.Tensor

    @property
    def view_labels(self) -> list[str]:
        return [view_label(a) for a in self.cameras.azimuth_deg.tolist()]


class CameraSampler:
    """Training cameras of the reference settings.

    * radius uniform in ``[lo, radius_range[1]]`` where ``lo`` starts at ``radius_range[0]`` and is
      multiplied by ``radius_decay_factor`` every ``radius_decay_every`` iterations, not below
      ``radius_floor``;
    * polar uniform in ``polar_range``;
    * azimuth: with probability ``front_bias`` uniform in ``[-front_sector, front_sector]``,
      otherwise uniform in ``azimuth_range`` (so the front is seen more often);
    * fovy uniform in ``[lo, hi]`` (radians) where ``(lo, hi)`` starts at ``fovy_range`` and every
      ``radius_decay_every`` iterations becomes ``(max(lo·f0, l0), min(hi·f1, l1))`` with
      ``(f0, f1) = fovy_widen_factors`` and ``(l0, l1) = fovy_widen_limits`` (the released code's
      camera scale-up; factors ``[1, 1]`` keep the range);
    * background: white with probability ``1 - p_nonwhite_background``, otherwise black or a
      uniformly random colour with equal probability;
    * flip: a fair coin per camera when ``random_flip``.

    Everything is drawn on the CPU from the (CPU) ``generator``, so a seed gives the same cameras on
    every device; the trainer moves the batch to its own.
    """

    def __init__(self, cfg: CameraConfig, resolution: int):
        for name in ("radius_range", "polar_range", "azimuth_range", "fovy_range"):
            lo, hi = getattr(cfg, name)
            if lo > hi:
                raise ValueError(f"cameras.{name} must be [low, high], got {[lo, hi]}")
        self.cfg = cfg
        self.resolution = resolution

    def radius_bounds(self, iteration: int) -> tuple[float, float]:
        cfg = self.cfg
        lo, hi = cfg.radius_range
        if cfg.radius_decay_every > 0:
            lo = lo * cfg.radius_decay_factor ** (iteration // cfg.radius_decay_every)
        lo = max(lo, cfg.radius_floor)
        return min(lo, hi), hi

    def fovy_bounds(self, iteration: int) -> tuple[float, float]:
        cfg = self.cfg
        lo, hi = cfg.fovy_range
        steps = iteration // cfg.radius_decay_every if cfg.radius_decay_every > 0 else 0
        for _ in range(steps):
            lo = max(lo * cfg.fovy_widen_factors[0], min(cfg.fovy_widen_limits[0], lo))
            hi = min(hi * cfg.fovy_widen_factors[1], max(cfg.fovy_widen_limits[1], hi))
        return lo, hi

    def sample(self, batch_size: int, iteration: int = 0, generator: torch.Generator | None = None) -> CameraBatch:
        cfg = self.cfg

        def uniform(lo: float, hi: float) -> torch.Tensor:
            return lo + (hi - lo) * torch.rand(batch_size, generator=generator, device="cpu")

        radius = uniform(*self.radius_bounds(iteration))
        polar = uniform(*cfg.polar_range)
        front = torch.rand(batch_size, generator=generator, device="cpu") < cfg.front_bias
        azimuth = torch.where(front, uniform(-cfg.front_sector, cfg.front_sector), uniform(*cfg.azimuth_range))
        fovy = uniform(*self.fovy_bounds(iteration))
        cameras = orbit_cameras(radius, polar, wrap_azimuth(azimuth), fovy, self.resolution, self.resolution)

        nonwhite = torch.rand(batch_size, generator=generator, device="cpu") < cfg.p_nonwhite_background
        black = torch.rand(batch_size, generator=generator, device="cpu") < 0.5
        random_colour = torch.rand(batch_size, 3, generator=generator, device="cpu")
        black_or_random = torch.where(black[:, None], torch.zeros(3, device="cpu"), random_colour)
        backgrounds = torch.where(nonwhite[:, None], black_or_random, torch.ones(3, device="cpu"))
        flip = (torch.rand(batch_size, generator=generator, device="cpu") < 0.5) & cfg.random_flip
        return CameraBatch(cameras=cameras, backgrounds=backgrounds, flip=flip)
