"""Reference-view loss: the frontal render against the input photo, aligned to the frontal camera.

:func:`sie3d.avatar.expression_fit.fit_photo_expression` gives the photo's own expression as template
coefficients ``c_photo`` and the similarity that brings the photo's 68 landmarks onto the template's
(deformed by ``c_photo``) in the frontal camera. A similarity keeps the photo's appearance intact;
the blendshapes carry its expression, so the painted mouth corners sit on the mesh's mouth corners.
Appearance is fitted at the photo's expression; expressions are then made by the geometry. The loss
is evaluated inside the projected face region of the template only (image-to-3D methods such as
Magic123 use the same kind of reference-view term).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from ..render.cameras import Cameras, frontal_camera, project_points
from ..render.renderer import render
from ..render.splats import Splats
from .expression_fit import ExpressionFit, fit_photo_expression

#: resolution of the camera in which the photo's expression is fitted (matrices scale linearly)
FIT_RESOLUTION = 512


@dataclass
class ReferenceView:
    """The aligned photo as a target for the frontal render.

    Attributes:
        image: ``[H, W, 3]`` float in [0, 1], the photo warped into the frontal camera.
        mask: ``[H, W, 1]`` float {0, 1}, the template's projected face region where the photo is defined.
        background: ``[3]`` background colour used when rendering the frontal view for this loss.
        matrix: ``[2, 3]`` photo pixels -> render pixels.
    """

    image: torch.Tensor
    mask: torch.Tensor
    background: torch.Tensor
    matrix: np.ndarray

    def to(self, device: torch.device | str) -> "ReferenceView":
        return ReferenceView(self.image.to(device), self.mask.to(device), self.background.to(device), self.matrix)


def fit_reference(landmarks: np.ndarray, template, camera_cfg) -> ExpressionFit:
    """The photo's expression coefficients and alignment (in a ``FIT_RESOLUTION`` frontal camera)
    from its ``[68, 2]`` dlib landmarks (photo pixels)."""
    camera = frontal_camera(camera_cfg, FIT_RESOLUTION).to(template.vertices.device)
    return fit_photo_expression(landmarks, template, camera)


def scaled_matrix(fit: ExpressionFit, camera: Cameras) -> np.ndarray:
    """The fit's photo -> render similarity for a frontal camera of another resolution."""
    return fit.matrix * (camera.width / FIT_RESOLUTION)


def face_region_mask(vertices: torch.Tensor, face_region: torch.Tensor, camera: Cameras) -> np.ndarray:
    """``[H, W]`` bool: the convex hull of the face-region ``vertices`` ``[V, 3]`` in the first camera."""
    points = project_points(vertices[face_region].detach().float(), camera)[0].cpu().numpy()
    hull = cv2.convexHull(np.round(points).astype(np.int32))
    mask = np.zeros((camera.height, camera.width), np.uint8)
    cv2.fillConvexPoly(mask, hull, 1)
    return mask.astype(bool)


def align_reference_view(photo: np.ndarray, fit: ExpressionFit, template, camera: Cameras) -> ReferenceView:
    """Warp ``photo`` (uint8 ``[H, W, 3]``) into the frontal ``camera`` (one camera) with the fit's similarity."""
    matrix = scaled_matrix(fit, camera)
    size = (camera.width, camera.height)
    warped = cv2.warpAffine(photo, matrix, size, flags=cv2.INTER_AREA, borderValue=0)
    inside = cv2.warpAffine(np.ones(photo.shape[:2], np.uint8), matrix, size, flags=cv2.INTER_NEAREST,
                            borderValue=0).astype(bool)
    vertices = template.deform(fit.coefficients.to(template.vertices.device))
    mask = face_region_mask(vertices, template.face_region, camera) & inside
    return ReferenceView(
        image=torch.from_numpy(warped).float() / 255.0,
        mask=torch.from_numpy(mask[..., None].astype(np.float32)),
        background=torch.ones(3, device="cpu"),
        matrix=matrix,
    )


def reference_view_loss(rgb: torch.Tensor, reference: ReferenceView) -> torch.Tensor:
    """Mean absolute error inside the face region: ``rgb`` ``[H, W, 3]`` in [0, 1] -> scalar."""
    weight = reference.mask.sum().clamp_min(1.0) * rgb.shape[-1]
    return ((rgb - reference.image).abs() * reference.mask).sum() / weight


@torch.no_grad()
def paint_from_reference(gaussians, photo: np.ndarray, fit: ExpressionFit, template, camera: Cameras,
                         region: np.ndarray | None = None, min_facing: float = 0.3, occlusion_tolerance: float = 0.06,
                         backend: str = "auto") -> int:
    """Initialise the colours of the Gaussians that the frontal camera sees inside the face region, or
    inside ``region`` (``[H, W]`` bool, photo pixels: the head the photo shows, face, fringe and hair,
    :func:`sie3d.face.mediapipe_models.head_mask`), from the aligned photo (bilinear lookup at their
    projected centres on the mesh deformed by the photo's expression); ``camera`` is a frontal camera,
    the larger the finer the lookup. The template's face region alone ends across the forehead, where
    a fringe would be cut into a dark seam over an unpainted band; ``region`` carries the painting on
    to the photo's own hairline and hair.

    Only Gaussians whose face normal points towards the camera (cosine > ``min_facing``) are painted,
    so the photo is not smeared over the sides of the head, and only those in front: a Gaussian more
    than ``occlusion_tolerance`` (world units) behind the first surface at its pixel (the depth of an
    opaque render of the same Gaussians) is hidden in the photo, e.g. the mouth cavity behind closed
    lips, which would otherwise carry the lips' colour into a mouth the geometry later opens.
    Returns how many were painted.
    """
    device = gaussians.params["color"].device
    camera = camera.to(device)
    reference = align_reference_view(photo, fit, template, camera)
    mask = reference.mask[..., 0].numpy().astype(bool)
    if region is not None:
        mask |= cv2.warpAffine(region.astype(np.uint8), reference.matrix, (camera.width, camera.height),
                               flags=cv2.INTER_NEAREST, borderValue=0).astype(bool)
    vertices = template.deform(fit.coefficients.to(device))
    splats = gaussians.to_world(vertices)
    means = splats.means
    uv = project_points(means, camera)[0]  # [N, 2] pixels
    to_camera = F.normalize(camera.centers[0] - means, dim=-1)
    facing = (gaussians.normals(vertices) * to_camera).sum(-1) > min_facing
    opaque = Splats(means, splats.quats, splats.scales, torch.full_like(splats.opacities, 0.99), splats.colors)
    surface = render(opaque, camera, torch.ones(3, device=device), backend=backend).depth[0].permute(2, 0, 1)[None]
    size = torch.tensor([camera.width, camera.height], device=device, dtype=uv.dtype)
    grid = (uv / size * 2 - 1)[None, None]  # [1, 1, N, 2] for grid_sample (align_corners=False)
    image = reference.image.to(device).permute(2, 0, 1)[None]
    mask = torch.from_numpy(mask).to(device, torch.float32)[None, None]
    colors = F.grid_sample(image, grid, align_corners=False)[0, :, 0].T  # [N, 3]
    inside = F.grid_sample(mask, grid, mode="nearest", align_corners=False)[0, 0, 0] > 0.5
    depth = (means @ camera.viewmats[0, :3, :3].T + camera.viewmats[0, :3, 3])[:, 2]
    front = depth <= F.grid_sample(surface, grid, mode="nearest", align_corners=False)[0, 0, 0] + occlusion_tolerance
    paint = facing & inside & front
    gaussians.params["color"].data[paint] = torch.logit(colors.clamp(1e-3, 1 - 1e-3))[paint]
    return int(paint.sum())
