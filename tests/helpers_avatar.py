"""A small synthetic head template for fast Gaussian / strategy tests."""

import torch

from sie3d.avatar.template import HeadTemplate, midpoint_subdivision


def sphere_template(levels: int = 2, radius: float = 1.0, with_expression: bool = True) -> HeadTemplate:
    """An icosphere-like sphere (octahedron subdivided ``levels`` times); the face region is z > 0.5.

    One expression, ``push``, moves the front cap forward by 0.1 at its tip.
    """
    v = torch.tensor([[1.0, 0, 0], [-1, 0, 0], [0, 1, 0], [0, -1, 0], [0, 0, 1], [0, 0, -1]])
    f = torch.tensor([[0, 2, 4], [2, 1, 4], [1, 3, 4], [3, 0, 4], [2, 0, 5], [1, 2, 5], [3, 1, 5], [0, 3, 5]])
    for _ in range(levels):
        f, parents = midpoint_subdivision(f, v.shape[0])
        v = torch.cat([v, 0.5 * (v[parents[:, 0]] + v[parents[:, 1]])])
    v = torch.nn.functional.normalize(v, dim=-1) * radius
    names = ["push"] if with_expression else []
    basis = (0.1 * v[:, 2].clamp(min=0) ** 4)[None, :, None] * torch.tensor([0.0, 0.0, 1.0]) if names else torch.zeros(
        0, v.shape[0], 3)
    return HeadTemplate(vertices=v, faces=f, face_region=v[:, 2] > 0.5, landmarks={"nose_tip": 4},
                        expression_names=names, expression_basis=basis, name="sphere")
