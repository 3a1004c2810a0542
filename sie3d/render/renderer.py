"""``render(splats, cameras, background)``: gsplat on CUDA, the compiled C++ rasterizer on CPU.

Backends: ``gsplat`` (CUDA), ``compiled`` (:mod:`sie3d.render.cpu_kernel`, built on first use),
``torch`` (the pure-PyTorch tiled rasterizer, CPU or CUDA, the readable reference and the fallback)
and ``dense`` (the slow test reference). ``auto`` picks gsplat on CUDA and the compiled kernel on
CPU, or the PyTorch path, with one warning saying why, when the kernel cannot be built; so does an
explicit ``compiled``: a build failure never breaks a run. All follow gsplat's conventions (see
:mod:`sie3d.render.rasterize`), return the same :class:`RenderOutput`, and give the densification
strategy the projected means (``means2d``, whose gradient it reads) and the pixel radii of every
Gaussian in every camera.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch

from ..registry import Registry
from . import cpu_kernel
from .cameras import Cameras
from .rasterize import composite_dense, composite_tiled, project_gaussians
from .splats import Splats

#: rasterizers by name: ``draw(splats, cameras, backgrounds [C, 3], tile_size, near, far) -> RenderOutput``
#: (cameras on the splats' device); ``auto`` is not one of them but a choice among them (:func:`resolve_backend`)
BACKENDS: Registry = Registry("render backend")
_fallback_warned: list[str] = []  # the one fallback warning of this process, once given


@dataclass
class RenderOutput:
    """Renders of C cameras.

    Attributes:
        rgb: [C, H, W, 3] colour composited over the background.
        alpha: [C, H, W, 1] accumulated opacity.
        depth: [C, H, W, 1] expected camera-space depth (sum w z / sum w; 0 where alpha is 0).
        means2d: [C, N, 2] projected centres, part of the graph: call ``.retain_grad()`` before
            ``backward()`` to read the screen-space gradient (the strategy does this).
        radii: [C, N, 2] int32 pixel half-sizes of the bounding boxes; 0 where not visible.
        backend: which rasterizer produced it.
    """

    rgb: torch.Tensor
    alpha: torch.Tensor
    depth: torch.Tensor
    means2d: torch.Tensor
    radii: torch.Tensor
    backend: str

    @property
    def width(self) -> int:
        return self.rgb.shape[2]

    @property
    def height(self) -> int:
        return self.rgb.shape[1]

    @property
    def n_cameras(self) -> int:
        return self.rgb.shape[0]


def resolve_backend(backend: str, device: torch.device) -> str:
    """``auto`` -> ``gsplat`` on CUDA, ``compiled`` on CPU when the kernel builds, else ``torch``.

    ``gsplat`` without CUDA and ``compiled`` on a GPU are errors; ``compiled`` that cannot be built
    falls back to ``torch`` with one warning per process giving the reason.
    """
    if backend == "auto":
        backend = "gsplat" if device.type == "cuda" else "compiled"
    elif backend not in BACKENDS:
        raise ValueError(f"unknown render backend '{backend}'; choose auto or one of {', '.join(BACKENDS.names())}")
    if backend == "gsplat" and device.type != "cuda":
        raise ValueError("render.backend=gsplat needs the splats on a CUDA device; use render.backend=auto on CPU")
    if backend == "compiled":
        if device.type != "cpu":
            raise ValueError(f"render.backend=compiled runs on the CPU, the splats are on {device}")
        if cpu_kernel.load_kernel() is None:
            if not _fallback_warned:
                _fallback_warned.append(cpu_kernel.kernel_error())
                warnings.warn(f"the compiled CPU rasterizer could not be built, rendering with the slower PyTorch "
                              f"path (render.backend=torch): {cpu_kernel.kernel_error()}", RuntimeWarning, stacklevel=3)
            return "torch"
    return backend


def _backgrounds(background, n_cameras: int, like: torch.Tensor) -> torch.Tensor:
    """[C, 3] from None (black), a [3] colour or [C, 3] colours."""
    if background is None:
        return torch.zeros(n_cameras, 3, dtype=like.dtype, device=like.device)
    background = torch.as_tensor(background, dtype=like.dtype, device=like.device)
    if background.shape == (3,):
        return background.expand(n_cameras, 3)
    if background.shape != (n_cameras, 3):
        raise ValueError(f"background must be [3] or [C={n_cameras}, 3], got {list(background.shape)}")
    return background


def render(
    splats: Splats,
    cameras: Cameras,
    background=None,
    backend: str = "auto",
    tile_size: int = 16,
    near_plane: float = 0.01,
    far_plane: float = 100.0,
) -> RenderOutput:
    """Render world-space splats into a batch of cameras.

    Args:
        splats: N Gaussians (any device; cameras are moved to it).
        cameras: C cameras of one image size.
        background: None (black), a [3] colour, or [C, 3] colours in [0, 1].
        backend: ``auto`` | ``compiled`` (C++, CPU) | ``torch`` (tiled, CPU or CUDA) | ``dense`` (reference, slow)
            | ``gsplat`` (CUDA); see :func:`resolve_backend`.
        tile_size: tile edge in pixels (both rasterizers).
    """
    device = splats.device
    backend = resolve_backend(backend, device)
    cameras = cameras.to(device)
    backgrounds = _backgrounds(background, len(cameras), splats.means)
    return BACKENDS.get(backend)(splats, cameras, backgrounds, tile_size, near_plane, far_plane)


def _projected(backend: str, project, composite):
    """A rasterizer of this package: project (PyTorch or C++), then composite colour + depth."""

    def draw(splats: Splats, cameras: Cameras, backgrounds: torch.Tensor, tile_size: int, near_plane: float,
             far_plane: float) -> RenderOutput:
        viewmats, Ks = cameras.viewmats.to(splats.means.dtype), cameras.Ks.to(splats.means.dtype)
        proj = project(splats.means, splats.quats, splats.scales, splats.opacities, viewmats, Ks,
                       cameras.width, cameras.height, near_plane=near_plane, far_plane=far_plane)
        features = torch.cat([splats.colors.expand(len(cameras), -1, -1), proj.depths[..., None]], dim=-1)
        backgrounds4 = torch.cat([backgrounds, torch.zeros_like(backgrounds[:, :1])], dim=-1)
        image, alpha = composite(proj, features, backgrounds4, cameras.width, cameras.height, tile_size)
        depth = image[..., 3:] / alpha.clamp_min(1e-10)
        return RenderOutput(rgb=image[..., :3], alpha=alpha, depth=depth, means2d=proj.means2d, radii=proj.radii,
                            backend=backend)

    return BACKENDS.register(backend)(draw)


_projected("compiled", cpu_kernel.project_gaussians_compiled, cpu_kernel.composite_compiled)
_projected("torch", project_gaussians, composite_tiled)
_projected("dense", project_gaussians, lambda proj, features, bg, width, height, tile_size:
           composite_dense(proj, features, bg, width, height))


@BACKENDS.register("gsplat")
def _render_gsplat(splats, cameras, backgrounds, tile_size, near_plane, far_plane):
    try:
        from gsplat import rasterization
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("render.backend=gsplat needs gsplat: pip install -e '.[gpu]' (gsplat==1.5.3 on a CUDA "
                          "build of torch), or use render.backend=torch") from exc
    viewmats, Ks = cameras.viewmats.to(splats.means.dtype), cameras.Ks.to(splats.means.dtype)
    colors, alphas, meta = rasterization(
        means=splats.means, quats=splats.quats, scales=splats.scales, opacities=splats.opacities,
        colors=splats.colors, viewmats=viewmats, Ks=Ks, width=cameras.width, height=cameras.height,
        near_plane=near_plane, far_plane=far_plane, eps2d=0.3, packed=False, tile_size=tile_size,
        backgrounds=backgrounds, render_mode="RGB+ED", rasterize_mode="classic",
    )
    radii = meta["radii"]
    if radii.dim() == 2:  # gsplat < 1.5 returns one radius per Gaussian
        radii = radii[..., None].expand(-1, -1, 2)
    return RenderOutput(rgb=colors[..., :3], alpha=alphas, depth=colors[..., 3:4], means2d=meta["means2d"],
                        radii=radii.to(torch.int32), backend="gsplat")
