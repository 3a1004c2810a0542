"""Re-posing a finished avatar: blendshape coefficients from an expression request, a morph, its frames.

A finished avatar's Gaussians live in the frames of its template's faces (:mod:`.gaussians`), so any
coefficient vector ``c`` ``[K]`` poses it: ``gaussians.to_world(template.deform(c))``. This module

* turns a request ``EXPRESSION[:WEIGHT]`` into target coefficients (:func:`target_coefficients`):
  a component name of the template (``smile:0.6``, ``flame_expr_03:2``; several joined by ``,``),
  or an emotion text (``surprised``, ``"smiling broadly"``) mapped to a class by the word list of
  :mod:`sie3d.face.expression_text` and then to its FACS prototype, the table training uses
  (:data:`sie3d.avatar.template.EXPRESSION_PROTOTYPES`; built-in head only:
  FLAME's PCA components have no emotion meaning, name them instead); the weight multiplies the
  coefficients (default 1);
* interpolates linearly from the avatar's own coefficients to the target (:func:`morph_coefficients`)
  while the camera orbits slowly (:func:`orbit_azimuths`), and renders each pose (:func:`render_morph`);
* bakes one static ``.spz`` + ``.ply`` per requested expression for common splat viewers
  (:func:`bake_expressions`).

The templates here carry expression blendshapes only: FLAME's jaw *pose* (a joint rotation with
linear blend skinning) is not modelled; the built-in head opens its jaw with the ``mouth_open``
blendshape.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from ..face.expression_text import UnknownExpression, match_words
from ..render.media import render_views
from ..render.splats import Splats
from .gaussians import MeshGaussians
from .ply import save_ply
from .spz import save_spz
from .template import BUILTIN_EXPRESSIONS, EXPRESSION_PROTOTYPES, HeadTemplate


def split_weight(spec: str) -> tuple[str, float]:
    """``"smile:0.6"`` -> ``("smile", 0.6)``; no ``:number`` suffix -> weight 1."""
    name, sep, weight = spec.rpartition(":")
    if sep:
        try:
            return name.strip(), float(weight)
        except ValueError:
            pass
    return spec.strip(), 1.0


def target_coefficients(spec: str, template: HeadTemplate) -> tuple[torch.Tensor, str]:
    """``[K]`` coefficients requested by ``EXPRESSION[:WEIGHT]`` and a one-line description.

    Raises:
        ValueError: empty request, an unknown component, emotion text on a template without emotion
            presets, or text the word list cannot map (:class:`UnknownExpression`).
    """
    if not spec.strip():
        raise ValueError("empty expression request; give e.g. --to surprise:0.8 or --to smile:0.5")
    names = template.expression_names
    parts = [split_weight(p) for p in spec.split(",")]
    if all(name in names for name, _ in parts):
        coeffs = template.expression_coefficients(**{name: w for name, w in parts})
        return coeffs, ", ".join(f"{name}={w:g}" for name, w in parts)
    if len(parts) > 1:
        unknown = [name for name, _ in parts if name not in names]
        raise ValueError(f"unknown component(s) {unknown} of template {template.name!r}; it has {names}")
    text, weight = parts[0]
    if tuple(names) != BUILTIN_EXPRESSIONS:
        raise ValueError(f"{text!r}: emotion presets exist for the built-in head's blendshapes only; template "
                         f"{template.name!r} has {len(names)} components: name them, e.g. "
                         f"--to {names[0] if names else 'COMPONENT'}:1.5")
    try:
        match = match_words(text)
    except UnknownExpression as exc:
        raise UnknownExpression(f"{exc}; or name blendshapes: {', '.join(names)}") from None
    shape = EXPRESSION_PROTOTYPES[match.emotion]
    coeffs = template.expression_coefficients(**{k: weight * v for k, v in shape.items()})
    return coeffs, f"{match.describe()} × {weight:g}"


def morph_coefficients(start: torch.Tensor, end: torch.Tensor, frames: int) -> torch.Tensor:
    """``[T, K]`` linear path: frame i holds ``(1 − t)·start + t·end``, t = i / (T − 1) (T = 1: ``end``)."""
    if frames < 1:
        raise ValueError(f"a morph needs at least one frame, got {frames}")
    t = (torch.linspace(0.0, 1.0, frames, dtype=start.dtype, device=start.device) if frames > 1
         else torch.ones(1, dtype=start.dtype, device=start.device))
    return (1 - t)[:, None] * start[None] + t[:, None] * end.to(start)[None]


def orbit_azimuths(frames: int, orbit_deg: float) -> np.ndarray:
    """``[T]`` azimuths in degrees, from −orbit/2 to +orbit/2 (0 = frontal; orbit 0: always frontal)."""
    return np.linspace(-orbit_deg / 2, orbit_deg / 2, frames) if frames > 1 else np.zeros(1)


@torch.no_grad()
def posed_splats(gaussians: MeshGaussians, coefficients: torch.Tensor) -> Splats:
    """World splats of the avatar with expression ``coefficients`` ``[K]``."""
    template = gaussians.template
    device = gaussians.face_ids.device
    return gaussians.to_world(template.deform(coefficients.to(device)).to(device))


def render_morph(gaussians: MeshGaussians, coefficients: torch.Tensor, azimuths_deg, resolution: int = 256,
                 on_pose: Callable[[int, Splats], None] | None = None, **render_kwargs) -> np.ndarray:
    """uint8 ``[T, H, W, 3]``: frame i is the avatar posed with ``coefficients[i]`` seen at ``azimuths_deg[i]``.

    ``on_pose(i, splats)`` is called with every frame's posed splats (e.g. to write some as ``.ply``).
    ``render_kwargs`` go to :func:`sie3d.render.media.render_views` (camera_cfg, backend, background...).
    """
    if len(coefficients) != len(azimuths_deg):
        raise ValueError(f"{len(coefficients)} poses but {len(azimuths_deg)} azimuths")
    frames = []
    for i, (coeffs, azimuth) in enumerate(zip(coefficients, azimuths_deg)):
        splats = posed_splats(gaussians, coeffs)
        if on_pose is not None:
            on_pose(i, splats)
        frames.append(render_views(splats, [float(azimuth)], resolution, **render_kwargs)[0])
    return np.stack(frames)


def bake_expressions(gaussians: MeshGaussians, requests: Sequence[str], out_dir: str | Path) -> list[tuple[Path, Path]]:
    """One static avatar per request (``EXPRESSION[:WEIGHT]``, see :func:`target_coefficients`):
    ``out_dir/avatar_<request>.spz`` and ``.ply``, posed by :func:`posed_splats`.

    The ``.spz`` is in sie3d's world (SPZ's RUB axes, what Spark reads), the ``.ply`` in the COLMAP y-down
    convention SuperSplat and INRIA-style viewers expect (:mod:`sie3d.avatar.ply`): both open upright.
    Returns the ``(spz, ply)`` paths in request order.
    """
    out_dir = Path(out_dir)
    poses = [(request, target_coefficients(request, gaussians.template)[0]) for request in requests]  # errors first
    written = []
    for request, coefficients in poses:
        splats = posed_splats(gaussians, coefficients).to("cpu")
        stem = "avatar_" + re.sub(r"[^A-Za-z0-9_.-]+", "_", request.strip())
        written.append((save_spz(splats, out_dir / f"{stem}.spz"), save_ply(splats, out_dir / f"{stem}.ply")))
    return written
