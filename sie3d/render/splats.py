"""World-space Gaussian splats: the one data type the renderer, the exporter and the media helpers see.

Only :mod:`sie3d.avatar.gaussians` turns mesh-bound (local) parameters into :class:`Splats`; everything
downstream works in world space.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

#: 0th-order real spherical-harmonic constant: colour = 0.5 + SH_C0 * f_dc (INRIA convention)
SH_C0 = 0.28209479177387814


@dataclass
class Splats:
    """N 3D Gaussians in world space (SH degree 0).

    Attributes:
        means: [N, 3] centres (world units).
        quats: [N, 4] rotations, wxyz, not necessarily normalised.
        scales: [N, 3] standard deviations along the rotated axes (linear, world units, > 0).
        opacities: [N] in [0, 1].
        colors: [N, 3] RGB in [0, 1].
    """

    means: torch.Tensor
    quats: torch.Tensor
    scales: torch.Tensor
    opacities: torch.Tensor
    colors: torch.Tensor

    def __post_init__(self) -> None:
        n = self.means.shape[0]
        expected = {"means": (n, 3), "quats": (n, 4), "scales": (n, 3), "opacities": (n,), "colors": (n, 3)}
        for name, shape in expected.items():
            value = getattr(self, name)
            if not isinstance(value, torch.Tensor) or tuple(value.shape) != shape:
                got = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
                raise ValueError(f"Splats.{name} must have shape {list(shape)} (N={n} from means), got {got}")

    def __len__(self) -> int:
        return self.means.shape[0]

    @property
    def device(self) -> torch.device:
        return self.means.device

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> "Splats":
        return Splats(*(t.to(device=device, dtype=dtype) for t in self._tensors()))

    def detach(self) -> "Splats":
        return Splats(*(t.detach() for t in self._tensors()))

    def select(self, index: torch.Tensor) -> "Splats":
        """The splats at a boolean mask or integer index [M]."""
        return Splats(*(t[index] for t in self._tensors()))

    def _tensors(self) -> tuple[torch.Tensor, ...]:
        return self.means, self.quats, self.scales, self.opacities, self.colors


def random_splats(
    n: int,
    generator: torch.Generator | None = None,
    center: tuple[float, float, float] = (0.0, 0.0, 3.0),
    extent: float = 1.0,
    log_scale_range: tuple[float, float] = (-3.5, -2.5),
    dtype: torch.dtype = torch.float32,
) -> Splats:
    """``n`` random Gaussians uniformly in a cube of side ``extent`` around ``center``.

    Log-scales are uniform in ``log_scale_range``, rotations uniform (normalised Gaussian
    quaternions), opacities and colours uniform in [0, 1]. This is the benchmark scene of
    ``sie3d bench render`` and the random scene of the tests.
    """
    g = generator

    def rand(*shape):
        return torch.rand(*shape, generator=g, dtype=dtype, device="cpu")

    means = (rand(n, 3) - 0.5) * extent + torch.tensor(center, dtype=dtype, device="cpu")
    quats = torch.randn(n, 4, generator=g, dtype=dtype, device="cpu")
    quats = quats / quats.norm(dim=-1, keepdim=True)
    lo, hi = log_scale_range
    scales = torch.exp(lo + (hi - lo) * rand(n, 3))
    return Splats(means=means, quats=quats, scales=scales, opacities=rand(n), colors=rand(n, 3))
