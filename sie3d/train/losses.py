"""Geometric and image regularisers (pure functions; weights come from ``loss.lambda_*``).

* ``loss_pos``: mean squared distance of face-region points to their template positions;
* ``loss_lap``: mean squared change of the uniform Laplacian of the deformed template relative to
  the rest template (at most ``max_neighbours`` neighbours per vertex);
* ``tv_loss``: total variation of an image or depth map (mean squared neighbour differences);
* ``mean_scale_loss``: mean Gaussian scale;
* ``loss_expression_prior``: the blendshape coefficients the target emotion does not use pulled to zero
  (those it uses are held at least at η × its FACS prototype,
  :data:`sie3d.avatar.template.EXPRESSION_PROTOTYPES`, by the trainer's projection), so the emotion loss reaches its class through that expression's own muscles
  instead of any pattern the classifier happens to like (a neutral is the rest face; a surprise drops
  the jaw, which fer alone, content with wide eyes, does not ask for, and without which face-api reads
  fear).
"""

from __future__ import annotations

import torch

from ..avatar.template import EXPRESSION_PROTOTYPES


def loss_pos(points: torch.Tensor, template_points: torch.Tensor, face_mask: torch.Tensor) -> torch.Tensor:
    """mean over masked i of ||points[i] - template_points[i]||² ([N, 3], [N, 3], [N] bool); 0 if none."""
    if points.shape != template_points.shape or face_mask.shape != points.shape[:1]:
        raise ValueError(f"loss_pos: points {list(points.shape)}, template {list(template_points.shape)} and "
                         f"mask {list(face_mask.shape)} must be [N, 3], [N, 3], [N]")
    if not face_mask.any():
        return points.sum() * 0.0
    diff = points[face_mask] - template_points[face_mask]
    return (diff * diff).sum(-1).mean()


def uniform_neighbours(faces: torch.Tensor, num_vertices: int, max_neighbours: int = 10) -> torch.Tensor:
    """[V, max_neighbours] mesh neighbours of each vertex (ascending index, padded with -1).

    Vertices with more neighbours keep the ``max_neighbours`` of lowest index.
    """
    edges = torch.cat([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])
    edges = torch.unique(torch.cat([edges, edges.flip(1)]), dim=0)  # both directions, sorted by (i, j)
    src, dst = edges[:, 0], edges[:, 1]
    counts = torch.bincount(src, minlength=num_vertices)
    rank = torch.arange(src.numel(), device=src.device) - (torch.cumsum(counts, 0) - counts)[src]
    keep = rank < max_neighbours
    table = torch.full((num_vertices, max_neighbours), -1, dtype=torch.long, device=faces.device)
    table[src[keep], rank[keep]] = dst[keep]
    return table


def uniform_laplacian(vertices: torch.Tensor, neighbours: torch.Tensor) -> torch.Tensor:
    """[V, 3] v_i - mean of v_j over the neighbours j of i (0 for isolated vertices)."""
    valid = neighbours >= 0
    gathered = vertices[neighbours.clamp(min=0)] * valid[..., None]
    count = valid.sum(-1, keepdim=True)
    mean = gathered.sum(1) / count.clamp(min=1)
    return torch.where(count > 0, vertices - mean, torch.zeros_like(vertices))


def loss_lap(vertices: torch.Tensor, rest_vertices: torch.Tensor, neighbours: torch.Tensor) -> torch.Tensor:
    """mean over i of ||L(vertices)_i - L(rest_vertices)_i||² with the uniform Laplacian L."""
    delta = uniform_laplacian(vertices, neighbours) - uniform_laplacian(rest_vertices, neighbours)
    return (delta * delta).sum(-1).mean()


def tv_loss(image: torch.Tensor, layout: str = "BCHW") -> torch.Tensor:
    """mean((I[y+1, x] - I[y, x])²) + mean((I[y, x+1] - I[y, x])²) over a batch.

    Args:
        image: [B, C, H, W] (``layout="BCHW"``) or [B, H, W, C] (``layout="BHWC"``, the renderer's).
    """
    if image.ndim != 4 or layout not in ("BCHW", "BHWC"):
        raise ValueError(f"tv_loss expects a 4D image and layout BCHW or BHWC, got {list(image.shape)}, {layout}")
    h_axis, w_axis = (2, 3) if layout == "BCHW" else (1, 2)
    dh = image.diff(dim=h_axis)
    dw = image.diff(dim=w_axis)
    return (dh * dh).mean() + (dw * dw).mean()


def mean_scale_loss(scales: torch.Tensor) -> torch.Tensor:
    """Mean of the (linear, world) Gaussian scales [N, 3]."""
    return scales.mean()


def expression_prior_target(names: list[str], emotion: str, eta: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """The expression prior for ``emotion`` at intensity ``eta``.

    Returns:
        ``floor`` ``[K]`` (η × the prototype's weight, 0 where the emotion does not use a blendshape)
        and ``used`` ``[K]`` bool. A template whose blendshapes are not the built-in head's gets an
        all-zero floor and an all-True ``used`` (no prior).
    """
    known = {n for prototype in EXPRESSION_PROTOTYPES.values() for n in prototype}
    if not set(names) & known:
        return torch.zeros(len(names), device="cpu"), torch.ones(len(names), dtype=torch.bool, device="cpu")
    prototype = EXPRESSION_PROTOTYPES.get(emotion, {}) if eta > 0 else {}  # η = 0 is the neutral face
    target = torch.tensor([eta * prototype.get(n, 0.0) for n in names], device="cpu")
    return target, torch.tensor([n in prototype for n in names], dtype=torch.bool, device="cpu")


def loss_expression_prior(coefficients: torch.Tensor, used: torch.Tensor) -> torch.Tensor:
    """Σ over the unused k of c_k² (``[K]``, ``used`` ``[K]`` bool); the used ones are held at their floor
    by projection after each step (:meth:`sie3d.train.trainer.AvatarTrainer`), not by this term."""
    return ((~used).to(coefficients.dtype) * coefficients.square()).sum()
