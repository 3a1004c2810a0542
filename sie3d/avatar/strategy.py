"""Densify / prune / opacity-reset strategy for :class:`~sie3d.avatar.gaussians.MeshGaussians` (3DGS rules).

Used like gsplat's strategies::

    strategy = DensifyStrategy(cfg.gaussians)   # scene extent: the template's bounding radius
    out = render(model.to_world(), cameras, backgrounds)
    strategy.step_pre_backward(model, out, iteration)   # keep the screen-space gradient
    loss.backward()
    optimizer.step()
    strategy.step_post_backward(model, optimizer, out, iteration)

Rules (reference settings): screen-space gradients are accumulated while ``iteration <
densify_until``; every ``densify_every`` iterations in ``[densify_from, densify_until)`` Gaussians
whose mean gradient is at least ``densify_grad_threshold`` are cloned (max world scale <=
``densify_scale_threshold`` x extent) or split in two (scale / 1.6, positions sampled from the
Gaussian); then Gaussians with opacity < ``prune_opacity`` are removed, and, once past the first
opacity reset, those larger than ``prune_screen_radius`` pixels or ``prune_world_scale`` world
units. Every ``opacity_reset_every`` iterations (while densifying) opacities are capped at
``opacity_reset_value`` in logit space. Face-region Gaussians are never densified or pruned, and
are exempt from the reset unless ``reset_face_region_opacity``.

The gradient is measured in normalised device units like 3DGS / gsplat: the pixel gradient times
half the image size and the number of cameras, so the threshold does not depend on resolution or batch.
"""

from __future__ import annotations

import math

import torch

from ..config import GaussiansConfig
from ..render.rasterize import quat_to_rotmat
from ..render.renderer import RenderOutput
from .gaussians import MeshGaussians

SPLIT_SHRINK = 1.6  #: a split Gaussian's children have its scales divided by this


class DensifyStrategy:
    """Adaptive density control with pre/post-backward hooks; holds the per-Gaussian statistics."""

    def __init__(self, cfg: GaussiansConfig, scene_extent: float | None = None,
                 generator: torch.Generator | None = None):
        """``scene_extent`` (world units) defaults to the template's bounding radius at the first step."""
        if scene_extent is not None and scene_extent <= 0:
            raise ValueError(f"scene_extent must be positive, got {scene_extent}")
        self.cfg = cfg
        self.scene_extent = scene_extent
        self.generator = generator
        self.grad2d = self.count = self.max_radius = None

    def _reset_stats(self, n: int, device) -> None:
        self.grad2d = torch.zeros(n, device=device)
        self.count = torch.zeros(n, device=device)
        self.max_radius = torch.zeros(n, device=device)

    def state_dict(self) -> dict:
        return {"grad2d": self.grad2d, "count": self.count, "max_radius": self.max_radius,
                "scene_extent": self.scene_extent}

    def load_state_dict(self, state: dict) -> None:
        self.grad2d, self.count, self.max_radius = state["grad2d"], state["count"], state["max_radius"]
        self.scene_extent = state["scene_extent"]

    def step_pre_backward(self, model: MeshGaussians, out: RenderOutput, iteration: int) -> None:
        """Ask autograd to keep ``out.means2d.grad`` (call between render and backward)."""
        if out.means2d.requires_grad:
            out.means2d.retain_grad()

    @torch.no_grad()
    def update_stats(self, out: RenderOutput) -> None:
        """Accumulate the screen-space gradient norm, visibility count and largest pixel radius."""
        grad = out.means2d.grad
        if grad is None:
            return
        C, N = grad.shape[:2]
        if self.grad2d is None or self.grad2d.shape[0] != N:
            self._reset_stats(N, grad.device)
        scale = torch.tensor([out.width / 2.0 * C, out.height / 2.0 * C], device=grad.device, dtype=grad.dtype)
        norms = (grad * scale).norm(dim=-1)  # [C, N]
        visible = (out.radii > 0).all(-1)
        self.grad2d += (norms * visible).sum(0).float()
        self.count += visible.sum(0).float()
        radius = torch.where(visible, out.radii.max(-1).values, torch.zeros_like(out.radii[..., 0]))
        self.max_radius = torch.maximum(self.max_radius, radius.max(0).values.float())

    def step_post_backward(self, model: MeshGaussians, optimizer: torch.optim.Optimizer, out: RenderOutput,
                           iteration: int, vertices: torch.Tensor | None = None) -> dict[str, int | bool]:
        """Statistics, then densify + prune and opacity reset on their schedules.

        ``vertices`` is the mesh the Gaussians were rendered on (default: rest pose); it sets the
        world scales used by the clone/split and prune rules. Returns what happened.
        """
        cfg = self.cfg
        if self.scene_extent is None:
            self.scene_extent = model.template.bounding_radius
        info: dict[str, int | bool] = {"cloned": 0, "split": 0, "pruned": 0, "opacity_reset": False}
        if iteration >= cfg.densify_until:
            info["num_gaussians"] = model.num_gaussians
            return info
        self.update_stats(out)
        if self.grad2d is None or self.grad2d.shape[0] != model.num_gaussians:
            self._reset_stats(model.num_gaussians, model.face_ids.device)
        if iteration >= cfg.densify_from and cfg.densify_every > 0 and iteration % cfg.densify_every == 0:
            info.update(self._densify(model, optimizer, vertices))
            info["pruned"] = self._prune(model, optimizer, vertices, iteration)
            self._reset_stats(model.num_gaussians, model.face_ids.device)
        if cfg.opacity_reset_every > 0 and iteration > 0 and iteration % cfg.opacity_reset_every == 0:
            mask = None if cfg.reset_face_region_opacity else ~model.face_region
            model.clamp_opacity(optimizer, cfg.opacity_reset_value, mask)
            info["opacity_reset"] = True
        info["num_gaussians"] = model.num_gaussians
        return info

    @torch.no_grad()
    def _densify(self, model: MeshGaussians, optimizer, vertices) -> dict[str, int]:
        cfg = self.cfg
        mean_grad = self.grad2d / self.count.clamp_min(1.0)
        grow = (mean_grad >= cfg.densify_grad_threshold) & ~model.face_region
        world_scale = model.to_world(vertices).scales.max(-1).values
        small = world_scale <= cfg.densify_scale_threshold * self.scene_extent
        clone, split = grow & small, grow & ~small
        if not (clone.any() or split.any()):
            return {"cloned": 0, "split": 0}
        p = {name: param.detach() for name, param in model.params.items()}
        new = {name: p[name][clone] for name in p}
        for name in ("face_ids", "face_region", "anchors"):
            new[name] = getattr(model, name)[clone]

        # split: two children sampled from the parent's local Gaussian, scales shrunk
        idx = torch.nonzero(split).squeeze(-1).repeat(2)
        local_std = torch.exp(p["scaling"][idx])
        noise = torch.randn(idx.numel(), 3, generator=self.generator, device="cpu").to(local_std) * local_std
        offsets = p["xyz"][idx] + (quat_to_rotmat(p["rotation"][idx]) @ noise[..., None]).squeeze(-1)
        children = {name: p[name][idx] for name in p}
        children["xyz"] = offsets
        children["scaling"] = p["scaling"][idx] - math.log(SPLIT_SHRINK)
        children["face_ids"] = model.face_ids[idx]
        children["face_region"] = model.face_region[idx]
        children["anchors"] = offsets
        append = {name: torch.cat([new[name], children[name]]) for name in new}
        model.edit(optimizer, keep=~split, append=append)
        n_new = append["face_ids"].shape[0]
        self.max_radius = torch.cat([self.max_radius[~split], self.max_radius.new_zeros(n_new)])
        return {"cloned": int(clone.sum()), "split": int(split.sum())}

    @torch.no_grad()
    def _prune(self, model: MeshGaussians, optimizer, vertices, iteration: int) -> int:
        cfg = self.cfg
        splats = model.to_world(vertices)
        prune = splats.opacities < cfg.prune_opacity
        if cfg.opacity_reset_every > 0 and iteration > cfg.opacity_reset_every:
            prune |= self.max_radius > cfg.prune_screen_radius
            prune |= splats.scales.max(-1).values > cfg.prune_world_scale
        prune &= ~model.face_region
        if prune.any():
            model.edit(optimizer, keep=~prune)
        return int(prune.sum())
