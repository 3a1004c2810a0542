"""Pure-PyTorch 3D Gaussian rasterizer with gsplat's conventions, and a dense reference.

Conventions (those of gsplat 1.5, so the CPU and CUDA paths agree):

* cameras are OpenCV world-to-camera ``viewmats`` [C, 4, 4] (x right, y down, z forward) and pixel
  intrinsics ``Ks`` [C, 3, 3]; pixel ``(i, j)`` (column, row) has its centre at ``(i + 0.5, j + 0.5)``;
* EWA projection with the Jacobian's ``x/z, y/z`` clamped to 1.3x the frustum, plus ``eps2d = 0.3``
  pixel² on the diagonal of every 2D covariance; Gaussians with depth outside [near, far] are culled;
* ``alpha = min(0.999, opacity * exp(-sigma))`` with ``sigma = 0.5 * d^T conic d``; contributions
  with ``alpha < 1/255`` are skipped; a pixel stops at the first Gaussian that would bring its
  transmittance to ``<= 1e-4`` (that Gaussian is excluded), front to back in camera-z order.

:func:`composite_tiled` is the fast path: Gaussians are sorted by depth once, binned to 16x16 tiles
through their opacity-aware bounding boxes, and each tile walks its depth-sorted list in chunks,
carrying transmittance and retiring once every pixel of the tile has terminated.
:func:`composite_dense` evaluates every Gaussian at every pixel: slow, simple, the test reference.
Both are differentiable with plain autograd.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

ALPHA_THRESHOLD = 1.0 / 255.0  #: contributions below this alpha are skipped
ALPHA_MAX = 0.999  #: gsplat's clamp (the INRIA 3DGS kernel uses 0.99)
TRANSMITTANCE_MIN = 1e-4  #: a pixel terminates before its transmittance would reach this
EPS2D = 0.3  #: pixel² added to the 2D covariance diagonal (gsplat's low-pass filter)
MAX_EXTEND = 3.33  #: bounding-box half-size in standard deviations for opacity 1
SIGMA_MAX = 20.0  #: exponents are capped here; alpha there is < 1/255 for any opacity, so it is skipped anyway


@dataclass
class Projection:
    """Gaussians projected into C cameras (only entries with ``valid`` are meaningful).

    Attributes:
        means2d: [C, N, 2] pixel coordinates of the centres (differentiable).
        conics: [C, N, 3] inverse 2D covariance (xx, xy, yy), pixel⁻².
        depths: [C, N] camera-space z.
        opacities: [C, N] opacities broadcast to cameras.
        radii: [C, N, 2] int32 bounding-box half-sizes in pixels (x, y); 0 where culled.
        extents: [C, N, 2] the same half-sizes before rounding up (no gradient), used for binning.
        valid: [C, N] bool: in front of the camera, inside the image, opaque enough.
    """

    means2d: torch.Tensor
    conics: torch.Tensor
    depths: torch.Tensor
    opacities: torch.Tensor
    radii: torch.Tensor
    extents: torch.Tensor
    valid: torch.Tensor


def quat_to_rotmat(quats: torch.Tensor) -> torch.Tensor:
    """Rotation matrices [..., 3, 3] from quaternions [..., 4] (wxyz, normalised here)."""
    w, x, y, z = F.normalize(quats, dim=-1).unbind(-1)
    rows = [
        1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
        2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
        2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
    ]
    return torch.stack(rows, dim=-1).reshape(*quats.shape[:-1], 3, 3)


def covariance_3d(quats: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
    """World covariances R S S^T R^T [N, 3, 3] from quaternions [N, 4] and scales [N, 3]."""
    m = quat_to_rotmat(quats) * scales[..., None, :]
    return m @ m.transpose(-1, -2)


def project_gaussians(
    means: torch.Tensor,
    quats: torch.Tensor,
    scales: torch.Tensor,
    opacities: torch.Tensor,
    viewmats: torch.Tensor,
    Ks: torch.Tensor,
    width: int,
    height: int,
    near_plane: float = 0.01,
    far_plane: float = 1e10,
    eps2d: float = EPS2D,
) -> Projection:
    """EWA-project N Gaussians into C pinhole cameras (gsplat's ``fully_fused_projection``).

    Args:
        means [N, 3], quats [N, 4] (wxyz), scales [N, 3] (linear), opacities [N] in [0, 1];
        viewmats [C, 4, 4] world-to-camera (OpenCV); Ks [C, 3, 3]; image size in pixels.
    """
    R, t = viewmats[:, :3, :3], viewmats[:, :3, 3]
    mean_c = torch.einsum("cij,nj->cni", R, means) + t[:, None, :]  # [C, N, 3]
    cov_c = R[:, None] @ covariance_3d(quats, scales)[None] @ R[:, None].transpose(-1, -2)  # [C, N, 3, 3]
    x, y, z = mean_c.unbind(-1)
    in_depth = (z >= near_plane) & (z <= far_plane)
    z = torch.where(in_depth, z, torch.ones_like(z))  # keeps culled entries finite (no NaN gradients)

    fx, fy = Ks[:, 0, 0, None], Ks[:, 1, 1, None]  # [C, 1]
    cx, cy = Ks[:, 0, 2, None], Ks[:, 1, 2, None]
    tan_fovx, tan_fovy = 0.5 * width / fx, 0.5 * height / fy
    u = torch.minimum(torch.maximum(x / z, -(cx / fx + 0.3 * tan_fovx)), (width - cx) / fx + 0.3 * tan_fovx)
    v = torch.minimum(torch.maximum(y / z, -(cy / fy + 0.3 * tan_fovy)), (height - cy) / fy + 0.3 * tan_fovy)
    zeros = torch.zeros_like(z)
    J = torch.stack([fx / z, zeros, -fx * u / z, zeros, fy / z, -fy * v / z], dim=-1).reshape(*z.shape, 2, 3)
    cov2d = J @ cov_c @ J.transpose(-1, -2)  # [C, N, 2, 2]
    a = cov2d[..., 0, 0] + eps2d
    b = cov2d[..., 0, 1]
    c = cov2d[..., 1, 1] + eps2d
    det = a * c - b * b
    ok_det = det > 0
    det = torch.where(ok_det, det, torch.ones_like(det))
    conics = torch.stack([c / det, -b / det, a / det], dim=-1)
    means2d = torch.stack([fx * x / z + cx, fy * y / z + cy], dim=-1)

    with torch.no_grad():
        opac = opacities.detach().expand_as(z)
        extend = torch.sqrt(2.0 * torch.log(opac.clamp_min(ALPHA_THRESHOLD) / ALPHA_THRESHOLD)).clamp_max(MAX_EXTEND)
        extents = extend[..., None] * torch.stack([a, c], dim=-1).detach().clamp_min(0).sqrt()
        radii = torch.ceil(extents)
        mx, my = means2d.detach().unbind(-1)
        on_image = (mx + radii[..., 0] > 0) & (mx - radii[..., 0] < width) & (my + radii[..., 1] > 0) & (
            my - radii[..., 1] < height)
        valid = in_depth & ok_det & (opac >= ALPHA_THRESHOLD) & on_image & torch.isfinite(extents).all(-1)
        radii = torch.where(valid[..., None], radii, torch.zeros_like(radii)).to(torch.int32)
    return Projection(means2d=means2d, conics=conics, depths=z, opacities=opacities.expand_as(z),
                      radii=radii, extents=extents, valid=valid)


def _alpha(delta_x: torch.Tensor, delta_y: torch.Tensor, conic_a, conic_b, conic_c, opacity) -> torch.Tensor:
    """gsplat's per-pixel alpha (clamped, thresholded to 0) from mean-minus-pixel offsets.

    The offsets may be broadcastable partial tensors (e.g. x per column, y per row): the arithmetic
    and its order are the same as in the kernel, so the tiled and dense paths round identically.
    """
    sigma = 0.5 * (conic_a * delta_x * delta_x + conic_c * delta_y * delta_y) + conic_b * delta_x * delta_y
    # capping sigma avoids denormal exp() results (very slow on CPUs); any cap > ln(255) is exact
    alpha = (opacity * torch.exp(-sigma.clamp_max(SIGMA_MAX))).clamp_max(ALPHA_MAX)
    return torch.where(alpha >= ALPHA_THRESHOLD, alpha, torch.zeros_like(alpha))


# --------------------------------------------------------------------------- dense reference


def _composite_pixels(px, py, means2d, conics, opacities, features):
    """Composite depth-sorted Gaussians [G] at pixels [P]: returns (accumulated features [P, D], T [P])."""
    dx = means2d[None, :, 0] - px[:, None]  # [P, G]
    dy = means2d[None, :, 1] - py[:, None]
    alpha = _alpha(dx, dy, conics[:, 0], conics[:, 1], conics[:, 2], opacities)
    running = torch.cumprod(1.0 - alpha, dim=-1)  # transmittance after each Gaussian, nothing excluded
    alpha = alpha * (running > TRANSMITTANCE_MIN)  # T only decreases, so this keeps a prefix
    trans = torch.cumprod(torch.cat([torch.ones_like(alpha[:, :1]), 1.0 - alpha], dim=-1), dim=-1)
    weights = alpha * trans[:, :-1]
    return weights @ features, trans[:, -1].clone()  # a view would keep all of trans alive


def composite_dense(
    proj: Projection,
    features: torch.Tensor,
    backgrounds: torch.Tensor,
    width: int,
    height: int,
    chunk_elements: int = 1 << 22,
    use_checkpoint: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Reference compositor: every valid Gaussian at every pixel, in depth order.

    Args:
        features: [C, N, D] per-camera features to composite (e.g. RGB + depth).
        backgrounds: [C, D] added with the final transmittance.
        chunk_elements: pixels x Gaussians evaluated at once (bounds the temporaries).
        use_checkpoint: recompute each pixel chunk in backward (bounded memory for benchmarks).
    Returns:
        image [C, H, W, D], alpha [C, H, W, 1].
    """
    C, D = features.shape[0], features.shape[-1]
    dtype, device = features.dtype, features.device
    rows, cols = torch.meshgrid(torch.arange(height, device=device, dtype=dtype),
                                torch.arange(width, device=device, dtype=dtype), indexing="ij")
    px, py = cols.reshape(-1) + 0.5, rows.reshape(-1) + 0.5
    images, alphas = [], []
    for cam in range(C):
        ids = proj.valid[cam].nonzero().squeeze(-1)
        ids = ids[torch.argsort(proj.depths[cam, ids].detach(), stable=True)]
        args = (proj.means2d[cam, ids], proj.conics[cam, ids], proj.opacities[cam, ids], features[cam, ids])
        pixel_chunk = max(1, chunk_elements // max(ids.numel(), 1))
        outs, trans = [], []
        for start in range(0, px.numel(), pixel_chunk):
            sl = slice(start, start + pixel_chunk)
            if use_checkpoint:
                out, t = checkpoint(_composite_pixels, px[sl], py[sl], *args, use_reentrant=False)
            else:
                out, t = _composite_pixels(px[sl], py[sl], *args)
            outs.append(out)
            trans.append(t)
        t = torch.cat(trans)[:, None]
        images.append((torch.cat(outs) + t * backgrounds[cam]).reshape(height, width, D))
        alphas.append((1.0 - t).reshape(height, width, 1))
    return torch.stack(images), torch.stack(alphas)


# --------------------------------------------------------------------------- tiled fast path


def _tile_pairs(proj: Projection, width: int, height: int, tile_size: int):
    """Bin valid Gaussians to the tiles their opacity-aware boxes touch.

    Returns ``(cam, gauss, pair_tile, pair_inst)``: the valid (camera, Gaussian) instances sorted
    by camera then depth, and their tile pairs sorted by (global tile id, depth), where a global
    tile id is ``camera * tiles_per_image + row * tiles_x + col``.
    """
    tiles_x, tiles_y = math.ceil(width / tile_size), math.ceil(height / tile_size)
    cam, gauss = proj.valid.nonzero(as_tuple=True)
    order = torch.argsort(proj.depths.detach()[cam, gauss], stable=True)
    order = order[torch.argsort(cam[order], stable=True)]
    cam, gauss = cam[order], gauss[order]

    mean = proj.means2d.detach()[cam, gauss]
    ext = proj.extents[cam, gauss] * (1 + 1e-4) + 1e-3  # conservative against rounding
    # pixel centres i + 0.5 inside [mean - ext, mean + ext]
    lo = torch.ceil(mean - ext - 0.5)
    hi = torch.floor(mean + ext - 0.5)
    limit = torch.tensor([width - 1, height - 1], dtype=lo.dtype, device=lo.device)
    lo, hi = lo.clamp(min=0), torch.minimum(hi, limit)
    nonempty = (hi >= lo).all(-1)
    t_lo = torch.div(lo, tile_size, rounding_mode="floor").long()
    t_hi = torch.div(hi, tile_size, rounding_mode="floor").long()
    span = torch.where(nonempty[:, None], t_hi - t_lo + 1, torch.zeros_like(t_lo))
    counts = span[:, 0] * span[:, 1]

    inst = torch.repeat_interleave(torch.arange(cam.numel(), device=cam.device), counts)
    local = torch.arange(inst.numel(), device=cam.device) - (torch.cumsum(counts, 0) - counts)[inst]
    tx = t_lo[inst, 0] + local % span[inst, 0]
    ty = t_lo[inst, 1] + torch.div(local, span[inst, 0], rounding_mode="floor")
    tile = cam[inst] * (tiles_x * tiles_y) + ty * tiles_x + tx
    key = tile * max(cam.numel(), 1) + inst  # instances are depth-ordered within each camera
    perm = torch.sort(key).indices
    return cam, gauss, tile[perm], inst[perm]


def composite_tiled(
    proj: Projection,
    features: torch.Tensor,
    backgrounds: torch.Tensor,
    width: int,
    height: int,
    tile_size: int = 16,
    chunk: int = 32,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Tiled front-to-back compositor with early termination (same contract as :func:`composite_dense`).

    Each step takes the next ``chunk`` Gaussians of every live tile ([tiles, chunk] padded with a
    transparent Gaussian), evaluates them at the tile's pixels ([tiles, ts, ts, chunk]), composites
    them with a cumulative product of ``1 - alpha`` started from the carried transmittance, and
    retires tiles whose pixels have all terminated or whose lists are exhausted.
    """
    C, D = features.shape[0], features.shape[-1]
    dtype, device = features.dtype, features.device
    ts = tile_size
    tiles_x, tiles_y = math.ceil(width / ts), math.ceil(height / ts)
    n_tiles = C * tiles_x * tiles_y
    P = ts * ts

    cam, gauss, pair_tile, pair_inst = _tile_pairs(proj, width, height, ts)
    m = cam.numel()
    packed = torch.cat([proj.means2d[cam, gauss], proj.conics[cam, gauss], proj.opacities[cam, gauss, None],
                        features[cam, gauss]], dim=-1)  # [M, 6 + D]
    null = torch.zeros(1, packed.shape[-1], dtype=dtype, device=device)  # opacity 0: never contributes
    packed = torch.cat([packed, null])

    tiles, counts = torch.unique_consecutive(pair_tile, return_counts=True)
    starts = torch.cumsum(counts, 0) - counts
    local = torch.arange(ts, device=device, dtype=dtype) + 0.5
    lane = torch.arange(chunk, device=device)

    finished_ids, finished_acc, finished_t = [], [], []
    acc = torch.zeros(tiles.numel(), P, D, dtype=dtype, device=device)
    trans = torch.ones(tiles.numel(), P, dtype=dtype, device=device)
    done = torch.zeros(tiles.numel(), P, dtype=torch.bool, device=device)
    step = 0
    while tiles.numel() > 0:
        pos = starts[:, None] + step * chunk + lane  # [Ta, K]
        inside = (step * chunk + lane)[None, :] < counts[:, None]
        inst = torch.where(inside, pair_inst[pos.clamp(max=pair_inst.numel() - 1)], m)
        g = packed[inst]  # [Ta, K, 6 + D]
        in_image = tiles % (tiles_x * tiles_y)
        x0 = ((in_image % tiles_x) * ts).to(dtype)[:, None] + local  # [Ta, ts] pixel-centre x
        y0 = (torch.div(in_image, tiles_x, rounding_mode="floor") * ts).to(dtype)[:, None] + local
        dx = (g[:, None, :, 0] - x0[:, :, None])[:, None]  # [Ta, 1, ts(col), K]
        dy = (g[:, None, :, 1] - y0[:, :, None])[:, :, None]  # [Ta, ts(row), 1, K]
        con = g[:, None, None, :, 2:5]
        alpha = _alpha(dx, dy, con[..., 0], con[..., 1], con[..., 2], g[:, None, None, :, 5]).reshape(-1, P, chunk)

        one_minus = 1.0 - alpha
        after = trans[..., None] * torch.cumprod(one_minus, dim=-1)  # T after each Gaussian
        keep = (after > TRANSMITTANCE_MIN) & ~done[..., None]  # a prefix per pixel
        weights = torch.where(keep, alpha * (after / one_minus), torch.zeros_like(alpha))
        acc = acc + weights @ g[:, :, 6:]
        n_kept = keep.sum(-1)
        last = torch.gather(after, -1, (n_kept - 1).clamp(min=0)[..., None]).squeeze(-1)
        trans = torch.where(n_kept > 0, last, trans)
        done = done | (n_kept < chunk)  # some Gaussian would have dropped T to <= 1e-4
        step += 1

        retire = done.all(-1) | (step * chunk >= counts)
        if retire.any():
            finished_ids.append(tiles[retire])
            finished_acc.append(acc[retire])
            finished_t.append(trans[retire])
            live = ~retire
            tiles, counts, starts = tiles[live], counts[live], starts[live]
            acc, trans, done = acc[live], trans[live], done[live]

    out = torch.zeros(n_tiles, P, D, dtype=dtype, device=device)
    t_out = torch.ones(n_tiles, P, dtype=dtype, device=device)
    if finished_ids:
        ids = torch.cat(finished_ids)
        out = out.index_copy(0, ids, torch.cat(finished_acc))
        t_out = t_out.index_copy(0, ids, torch.cat(finished_t))

    def to_image(x: torch.Tensor) -> torch.Tensor:  # [n_tiles, P, k] -> [C, H, W, k]
        k = x.shape[-1]
        x = x.reshape(C, tiles_y, tiles_x, ts, ts, k).permute(0, 1, 3, 2, 4, 5)
        return x.reshape(C, tiles_y * ts, tiles_x * ts, k)[:, :height, :width]

    t_img = to_image(t_out[..., None])
    return to_image(out) + t_img * backgrounds[:, None, None, :], 1.0 - t_img
