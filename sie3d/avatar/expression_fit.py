"""Fit the template's blendshape coefficients and a 2D similarity to a photo's 68 landmarks.

This gives the photo's *own* expression as template coefficients ``c_photo`` (the astronaut smiles:
``smile`` > 0), and the similarity that brings the photo into the frontal camera. Painting and the
reference-view loss then use the template deformed by ``c_photo``, so the painted mouth corners sit
on the mesh's mouth corners, and the target expression is reached by moving the coefficients away
from ``c_photo`` (see :mod:`sie3d.train.trainer`).

Correspondences (iBUG 68 -> template landmark names) are pairs for left/right features, assigned by
image side, and single points on the midline.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..face.align import similarity_transform
from ..render.cameras import Cameras, project_points

#: (iBUG indices averaged, image-left / image-right) -> template landmark pair (subject's left/right)
PAIRED = [
    (((36, 37, 38, 39, 40, 41), (42, 43, 44, 45, 46, 47)), ("left_eye", "right_eye")),
    (((37, 38), (43, 44)), ("left_eye_top", "right_eye_top")),
    (((40, 41), (46, 47)), ("left_eye_bottom", "right_eye_bottom")),
    (((21,), (22,)), ("left_brow_inner", "right_brow_inner")),
    (((19,), (24,)), ("left_brow_mid", "right_brow_mid")),
    (((17,), (26,)), ("left_brow_outer", "right_brow_outer")),
    (((48,), (54,)), ("mouth_left", "mouth_right")),
]
#: iBUG index -> template landmark on the midline
SINGLE = [(30, "nose_tip"), (27, "nose_bridge"), (51, "mouth_top"), (57, "mouth_bottom"),
          (62, "lip_inner_top"), (66, "lip_inner_bottom")]


@dataclass
class ExpressionFit:
    """Result of :func:`fit_photo_expression`.

    Attributes:
        coefficients: ``[K]`` blendshape coefficients in [0, 1] reproducing the photo's expression.
        matrix: ``[2, 3]`` similarity, photo pixels -> frontal-render pixels.
        residual: RMS landmark error after the fit, in units of the template's inter-ocular distance.
        residual_neutral: the same with all coefficients at zero (how much the fit explains).
        names: template landmark names used, in the order of the point arrays.
        photo_points: ``[P, 2]`` photo landmarks (pixels).
        template_points: ``[P, 2]`` template landmarks at ``coefficients`` (render pixels).
    """

    coefficients: torch.Tensor
    matrix: np.ndarray
    residual: float
    residual_neutral: float
    names: list[str]
    photo_points: np.ndarray
    template_points: np.ndarray


def correspondences(landmarks_68: np.ndarray, template, camera: Cameras) -> tuple[np.ndarray, list[str]]:
    """``[P, 2]`` photo points and the matching template landmark names (pairs matched by image side)."""
    points = np.asarray(landmarks_68, dtype=np.float64)
    if points.shape != (68, 2):
        raise ValueError(f"expected [68, 2] landmarks, got {points.shape}")
    photo, names = [], []
    for (image_left, image_right), pair in PAIRED:
        if not all(n in template.landmarks for n in pair):
            continue
        index = torch.tensor([template.landmarks[n] for n in pair], device=template.vertices.device)
        x = project_points(template.vertices[index].detach().float(), camera)[0, :, 0]
        left_name, right_name = (pair if x[0] <= x[1] else pair[::-1])
        photo += [points[list(image_left)].mean(0), points[list(image_right)].mean(0)]
        names += [left_name, right_name]
    for index, name in SINGLE:
        if name in template.landmarks:
            photo.append(points[index])
            names.append(name)
    if len(names) < 5:
        raise ValueError(f"the template has too few landmark vertices ({names}) to fit a photo's expression")
    return np.stack(photo), names


def fit_photo_expression(landmarks_68: np.ndarray, template, camera: Cameras, steps: int = 300,
                         lr: float = 0.05, prior: float = 1e-3) -> ExpressionFit:
    """Alternate a closed-form similarity (photo -> render) with Adam steps on the coefficients.

    Minimises ``mean ||S(photo_i) - project(deform(c))_i||² / iod² + prior · ||c||²`` over
    ``c`` in [0, 1]^K, where ``iod`` is the template's projected inter-ocular distance.
    """
    photo, names = correspondences(landmarks_68, template, camera)
    index = torch.tensor([template.landmarks[n] for n in names], device=template.vertices.device)
    eyes = [names.index(n) for n in ("left_eye", "right_eye") if n in names]

    def project(coeffs: torch.Tensor) -> torch.Tensor:
        return project_points(template.deform(coeffs)[index].float(), camera)[0]

    device = template.vertices.device
    coeffs = torch.zeros(template.num_expressions, device=device, requires_grad=True)
    optimizer = torch.optim.Adam([coeffs], lr=lr)
    rest = project(torch.zeros(template.num_expressions, device=device)).detach()
    iod = float((rest[eyes[0]] - rest[eyes[1]]).norm()) if len(eyes) == 2 else float(camera.width) / 4

    def residual(target: torch.Tensor, moved: torch.Tensor) -> torch.Tensor:
        return ((moved - target) ** 2).sum(-1).mean() / iod**2

    for _ in range(steps):
        with torch.no_grad():
            matrix = similarity_transform(photo, project(coeffs).numpy().astype(np.float64))
        moved = torch.as_tensor(photo @ matrix[:, :2].T + matrix[:, 2], dtype=torch.float32, device=device)
        loss = residual(project(coeffs), moved) + prior * (coeffs ** 2).sum()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        with torch.no_grad():
            coeffs.clamp_(0.0, 1.0)
    coeffs = coeffs.detach()
    fitted = project(coeffs).detach()
    matrix = similarity_transform(photo, fitted.numpy().astype(np.float64))
    moved = torch.as_tensor(photo @ matrix[:, :2].T + matrix[:, 2], dtype=torch.float32, device=device)
    matrix_rest = similarity_transform(photo, rest.numpy().astype(np.float64))
    moved_rest = torch.as_tensor(photo @ matrix_rest[:, :2].T + matrix_rest[:, 2], dtype=torch.float32,
                                 device=device)
    return ExpressionFit(coeffs, matrix, float(residual(fitted, moved).sqrt()),
                         float(residual(rest, moved_rest).sqrt()), names, photo, fitted.numpy())
