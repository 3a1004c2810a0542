"""Gaussians bound to the faces of a head template; :meth:`MeshGaussians.to_world` is the only local->world code.

Each Gaussian belongs to one face of the (optionally midpoint-subdivided) template. Its parameters
live in that face's frame: origin at the centroid, axes (first edge, in-plane normal to it, face
normal), unit length ``k`` = the face's mean edge length. So

    mean   = centroid + k * R_face @ offset
    scale  = k * exp(log_scale)
    rotation = R_face * q_local

and when the template deforms (an expression), every Gaussian follows its face. Colours are
sigmoid(logits), opacities sigmoid(logits).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..config import GaussiansConfig, OptimConfig
from ..render.splats import Splats  # also importable from here: sie3d.avatar.gaussians.Splats
from .template import HeadTemplate, apply_midpoints, subdivide_template

#: parameter names, in the order of the optimiser's param groups
PARAM_NAMES = ("xyz", "color", "opacity", "scaling", "rotation")


def face_frames(vertices: torch.Tensor, faces: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-face (centroid [F, 3], rotation [F, 3, 3] with columns e1, e2, n, unit length k [F])."""
    v0, v1, v2 = vertices[faces].unbind(1)
    e1 = F.normalize(v1 - v0, dim=-1)
    normal = F.normalize(torch.linalg.cross(v1 - v0, v2 - v0), dim=-1)
    e2 = torch.linalg.cross(normal, e1)
    rotation = torch.stack([e1, e2, normal], dim=-1)
    k = ((v1 - v0).norm(dim=-1) + (v2 - v1).norm(dim=-1) + (v0 - v2).norm(dim=-1)) / 3.0
    return (v0 + v1 + v2) / 3.0, rotation, k


def rotmat_to_quat(matrix: torch.Tensor) -> torch.Tensor:
    """Unit quaternions [..., 4] (wxyz, w >= 0) of rotation matrices [..., 3, 3] (differentiable)."""
    m = matrix
    m00, m11, m22 = m[..., 0, 0], m[..., 1, 1], m[..., 2, 2]
    # four candidate solutions, each well-conditioned when its leading component is large
    cands = torch.stack([
        torch.stack([1 + m00 + m11 + m22, m[..., 2, 1] - m[..., 1, 2], m[..., 0, 2] - m[..., 2, 0],
                     m[..., 1, 0] - m[..., 0, 1]], -1),
        torch.stack([m[..., 2, 1] - m[..., 1, 2], 1 + m00 - m11 - m22, m[..., 0, 1] + m[..., 1, 0],
                     m[..., 0, 2] + m[..., 2, 0]], -1),
        torch.stack([m[..., 0, 2] - m[..., 2, 0], m[..., 0, 1] + m[..., 1, 0], 1 - m00 + m11 - m22,
                     m[..., 1, 2] + m[..., 2, 1]], -1),
        torch.stack([m[..., 1, 0] - m[..., 0, 1], m[..., 0, 2] + m[..., 2, 0], m[..., 1, 2] + m[..., 2, 1],
                     1 - m00 - m11 + m22], -1),
    ], dim=-2)  # [..., 4 candidates, 4]
    lead = torch.stack([1 + m00 + m11 + m22, 1 + m00 - m11 - m22, 1 - m00 + m11 - m22, 1 - m00 - m11 + m22], -1)
    best = lead.argmax(-1)
    q = torch.gather(cands, -2, best[..., None, None].expand(*best.shape, 1, 4)).squeeze(-2)
    q = F.normalize(q, dim=-1)
    return torch.where(q[..., :1] < 0, -q, q)


def quat_multiply(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Hamilton product a * b of wxyz quaternions [..., 4] (rotation b first, then a)."""
    aw, ax, ay, az = a.unbind(-1)
    bw, bx, by, bz = b.unbind(-1)
    return torch.stack([aw * bw - ax * bx - ay * by - az * bz, aw * bx + ax * bw + ay * bz - az * by,
                        aw * by - ax * bz + ay * bw + az * bx, aw * bz + ax * by - ay * bx + az * bw], -1)


def exponential_lr(init: float, final: float, progress: float) -> float:
    """Log-linear interpolation from ``init`` (progress 0) to ``final`` (progress 1)."""
    t = min(max(progress, 0.0), 1.0)
    return math.exp(math.log(init) * (1 - t) + math.log(final) * t)


class MeshGaussians(nn.Module):
    """Mesh-bound Gaussians on ``template`` subdivided ``cfg.subdivisions`` times.

    Parameters (``self.params``, keys = optimiser group names): ``xyz`` [N, 3] local offsets (face
    units), ``color`` [N, 3] logits, ``opacity`` [N] logits, ``scaling`` [N, 3] log-scales (face
    units), ``rotation`` [N, 4] local wxyz quaternions. Buffers: ``face_ids`` [N] (subdivided
    faces), ``face_region`` [N] bool, ``anchors`` [N, 3] the offsets the Gaussians started from.
    """

    def __init__(self, template: HeadTemplate, cfg: GaussiansConfig, generator: torch.Generator | None = None):
        super().__init__()
        if cfg.sh_degree != 0:
            raise ValueError(f"gaussians.sh_degree={cfg.sh_degree}: only SH degree 0 (RGB colours) is implemented")
        if cfg.gaussians_per_face < 1 or cfg.subdivisions < 0:
            raise ValueError("gaussians.gaussians_per_face must be >= 1 and gaussians.subdivisions >= 0")
        if cfg.init_color not in ("template", "grey"):
            raise ValueError(f"gaussians.init_color must be 'template' or 'grey', got {cfg.init_color!r}")
        self.template = template
        self.cfg = cfg
        sub, parents = subdivide_template(template, cfg.subdivisions)
        for level, p in enumerate(parents):
            self.register_buffer(f"_parents_{level}", p, persistent=False)
        self.num_levels = len(parents)
        self.register_buffer("faces", sub.faces, persistent=False)

        n_faces, per_face = sub.faces.shape[0], cfg.gaussians_per_face
        device = sub.vertices.device
        face_ids = torch.arange(n_faces, device=device).repeat_interleave(per_face)
        centroid, rotation, k = face_frames(sub.vertices, sub.faces)
        if per_face == 1:
            offsets = torch.zeros(n_faces, 3, device=device)
        else:  # uniform points on each triangle, expressed in its frame
            u = torch.rand(len(face_ids), 2, generator=generator, device="cpu").to(device)
            u = torch.where(u.sum(-1, keepdim=True) > 1, 1 - u, u)
            v0, v1, v2 = sub.vertices[sub.faces[face_ids]].unbind(1)
            points = v0 + u[:, :1] * (v1 - v0) + u[:, 1:] * (v2 - v0)
            local = (rotation[face_ids].transpose(1, 2) @ (points - centroid[face_ids])[..., None]).squeeze(-1)
            offsets = local / k[face_ids, None]
        n = len(face_ids)
        tangential = math.log(cfg.init_scale_factor)
        log_scales = torch.tensor([tangential, tangential, tangential + math.log(cfg.init_flatness)],
                                  device=device).repeat(n, 1)
        if cfg.init_color == "template" and sub.init_colors is not None:
            colors = sub.init_colors[sub.faces[face_ids]].mean(1)
        else:
            colors = torch.full((n, 3), 0.5, device=device)
        region = sub.face_region[sub.faces[face_ids]].sum(-1) >= 2  # at least two of its three vertices

        self.params = nn.ParameterDict({
            "xyz": nn.Parameter(offsets),
            "color": nn.Parameter(torch.logit(colors.clamp(1e-3, 1 - 1e-3))),
            "opacity": nn.Parameter(torch.full((n,), math.log(cfg.init_opacity / (1 - cfg.init_opacity)),
                                                  device=device)),
            "scaling": nn.Parameter(log_scales),
            "rotation": nn.Parameter(torch.tensor([1.0, 0.0, 0.0, 0.0], device=device).repeat(n, 1)),
        })
        self.register_buffer("face_ids", face_ids)
        self.register_buffer("face_region", region)
        self.register_buffer("anchors", offsets.clone())
        self.mean_face_scale = float(k.mean())

    # ------------------------------------------------------------------ geometry

    @property
    def num_gaussians(self) -> int:
        return self.face_ids.shape[0]

    def __len__(self) -> int:
        return self.num_gaussians

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        """Accept checkpoints with another number of Gaussians (densification changes N)."""
        for name in PARAM_NAMES:
            saved = state_dict.get(f"{prefix}params.{name}")
            if saved is not None and saved.shape != self.params[name].shape:
                self.params[name] = nn.Parameter(torch.empty_like(saved, device=self.params[name].device))
        for name in ("face_ids", "face_region", "anchors"):
            saved = state_dict.get(prefix + name)
            if saved is not None and saved.shape != getattr(self, name).shape:
                setattr(self, name, torch.empty_like(saved, device=getattr(self, name).device))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def mesh_vertices(self, vertices: torch.Tensor | None = None) -> torch.Tensor:
        """[V', 3] subdivided mesh vertices from template-resolution vertices [V, 3] (default: rest pose)."""
        v = self.template.vertices.to(self.faces.device) if vertices is None else vertices
        if v.shape != self.template.vertices.shape:
            raise ValueError(f"vertices must be [V={self.template.num_vertices}, 3] like the template "
                             f"(e.g. template.deform(coeffs)), got {list(v.shape)}")
        for level in range(self.num_levels):
            v = apply_midpoints(v, getattr(self, f"_parents_{level}"))
        return v

    def mesh_frames(self, vertices: torch.Tensor | None = None) -> tuple[torch.Tensor, ...]:
        """Per face of the subdivided mesh with ``vertices`` [V, 3] (default rest pose): centroid [F, 3],
        rotation [F, 3, 3], scale [F] and the rotation as a unit quaternion [F, 4] (per face, not per
        Gaussian: a quarter of the work). Pass them as ``frames`` to :meth:`to_world` and
        :meth:`anchor_positions` to compute them once for several calls (they stay valid when
        Gaussians are added or removed)."""
        centroid, rotation, k = face_frames(self.mesh_vertices(vertices), self.faces)
        return centroid, rotation, k, rotmat_to_quat(rotation)

    def _frames(self, vertices=None, frames=None):
        ids = self.face_ids
        return tuple(t[ids] for t in (self.mesh_frames(vertices) if frames is None else frames))

    def to_world(self, vertices: torch.Tensor | None = None, frames=None) -> Splats:
        """World-space splats on the mesh with ``vertices`` [V, 3] (default rest pose; pass
        ``template.deform(coeffs)`` to follow an expression), or on its :meth:`mesh_frames` ``frames``.
        Differentiable in all parameters and in ``vertices`` (``frames``)."""
        centroid, rotation, k, frame_quats = self._frames(vertices, frames)
        p = self.params
        means = centroid + k[:, None] * (rotation @ p["xyz"][..., None]).squeeze(-1)
        quats = quat_multiply(frame_quats, F.normalize(p["rotation"], dim=-1))
        return Splats(means=means, quats=quats, scales=k[:, None] * torch.exp(p["scaling"]),
                      opacities=torch.sigmoid(p["opacity"]), colors=torch.sigmoid(p["color"]))

    def anchor_positions(self, vertices: torch.Tensor | None = None, frames=None) -> torch.Tensor:
        """[N, 3] where each Gaussian started on the mesh with ``vertices`` (or its :meth:`mesh_frames`
        ``frames``): the targets of ``loss_pos``."""
        centroid, rotation, k, _ = self._frames(vertices, frames)
        return centroid + k[:, None] * (rotation @ self.anchors[..., None]).squeeze(-1)

    def normals(self, vertices: torch.Tensor | None = None) -> torch.Tensor:
        """[N, 3] unit normal of each Gaussian's face."""
        return self._frames(vertices)[1][..., 2]

    # ------------------------------------------------------------------ optimisation

    def learning_rates(self, optim_cfg: OptimConfig, progress: float = 0.0) -> dict[str, float]:
        """Learning rate of each group at ``progress`` in [0, 1] (exponential decay init -> final).

        ``xyz`` offsets are in face units, so their rate is the world rate (``lr_xyz`` times the
        scene extent, the template's bounding radius) divided by the mean face size.
        """
        extent = self.template.bounding_radius
        o = optim_cfg
        return {
            "xyz": exponential_lr(o.lr_xyz_init, o.lr_xyz_final, progress) * extent / self.mean_face_scale,
            "color": exponential_lr(o.lr_color_init, o.lr_color_final, progress),
            "opacity": o.lr_opacity,
            "scaling": exponential_lr(o.lr_scaling_init, o.lr_scaling_final, progress),
            "rotation": exponential_lr(o.lr_rotation_init, o.lr_rotation_final, progress),
        }

    def param_groups(self, optim_cfg: OptimConfig) -> list[dict]:
        """Adam parameter groups named ``xyz``, ``color``, ``opacity``, ``scaling``, ``rotation``."""
        lrs = self.learning_rates(optim_cfg, 0.0)
        return [{"params": [self.params[name]], "lr": lrs[name], "name": name} for name in PARAM_NAMES]

    def edit(self, optimizer: torch.optim.Optimizer | None, keep: torch.Tensor | None = None,
             append: dict[str, torch.Tensor] | None = None) -> None:
        """Remove Gaussians where ``keep`` [N] is False, then append new ones, keeping Adam consistent.

        ``append`` holds the five parameter tensors (local units, like ``self.params``) plus
        ``face_ids``, ``face_region`` and ``anchors``. Kept Gaussians keep their Adam moments; new
        ones start with zero moments. The optimiser's groups must be :meth:`param_groups`.
        """
        keep = torch.ones(self.num_gaussians, dtype=torch.bool, device=self.face_ids.device) if keep is None else keep
        append = append or {}

        def edited(old: torch.Tensor, new: torch.Tensor | None) -> torch.Tensor:
            kept = old[keep]
            return kept if new is None else torch.cat([kept, new.to(kept)])

        groups = {g.get("name"): g for g in optimizer.param_groups} if optimizer is not None else {}
        for name in PARAM_NAMES:
            old = self.params[name]
            new_param = nn.Parameter(edited(old.detach(), append.get(name)))
            group = groups.get(name)
            if group is not None:
                state = optimizer.state.pop(old, None)
                if state:
                    for key, value in state.items():
                        if torch.is_tensor(value) and value.shape == old.shape:
                            extra = None if name not in append else torch.zeros_like(append[name], dtype=value.dtype)
                            state[key] = edited(value, extra)
                    optimizer.state[new_param] = state
                group["params"] = [new_param]
            elif optimizer is not None:
                raise ValueError(f"the optimiser has no param group named {name!r}; build it from param_groups()")
            self.params[name] = new_param
        for name in ("face_ids", "face_region", "anchors"):
            setattr(self, name, edited(getattr(self, name), append.get(name)))

    def clamp_opacity(self, optimizer: torch.optim.Optimizer | None, max_opacity: float,
                      mask: torch.Tensor | None = None) -> None:
        """Opacity reset: opacity = min(opacity, max_opacity) where ``mask``, done on the logits, with the
        Adam moments of the opacity group cleared (as in 3DGS)."""
        logits = self.params["opacity"]
        with torch.no_grad():
            cap = torch.tensor(max_opacity, dtype=logits.dtype, device=logits.device)
            capped = torch.minimum(logits, torch.logit(cap))
            if mask is not None:
                capped = torch.where(mask, capped, logits)
            logits.copy_(capped)
        if optimizer is not None:
            for value in optimizer.state.get(logits, {}).values():
                if torch.is_tensor(value) and value.shape == logits.shape:
                    value.zero_()
