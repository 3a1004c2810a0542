"""The template made the person's shape and colours from one photo.

* :func:`fit_template_shape` -- MediaPipe's 468 3D face landmarks (:mod:`sie3d.face.mediapipe_models`)
  moved onto the template by a 3D similarity (Umeyama) on stable points; the head's width is scaled
  by the ratio of the face widths (face-oval sides / eye-to-chin height), then the remaining
  landmark residuals (nose, brows, eyes, mouth, chin, forehead, and the face-oval sides in x) are
  interpolated over the surface with Gaussian radial basis functions (radius ``sigma`` world units,
  a ridge against near-coincident anchors) and applied to the rest vertices. Landmarks are compared with the template deformed by the photo's own
  expression, so a smile stays in the expression coefficients, not in the identity shape.
* :func:`expression_free_appearance` -- the photo the colours are painted from, without the marks of
  its expression: a smile's folds, raised cheeks and teeth are shading, not albedo, and painted onto
  the head they keep a neutral or a surprised avatar smiling whatever the geometry does (face-api's
  network reads happy from the cheeks alone once the teeth are gone). Below the eyes and outside the
  nose the photo's skin is low-passed; the lips become one colour and the mouth opening that colour
  darkened, so that closing the jaw leaves a lip seam and opening it a dark mouth. Eyes, brows, nose,
  hair and the skin's tone stay the person's. The expression is then made by the geometry alone.
* :func:`person_colours` -- the template's albedo hint recoloured: skin tone from cheek and
  forehead patches of the photo, hair colour from the hair mask; a vertex the photo sees (facing the
  camera as the painting requires, :func:`~sie3d.avatar.reference_view.paint_from_reference`) is hair
  where it projects into the photo's hair, or, outside the template's face region, onto a head pixel
  nearer the hair colour than the skin colour (a fringe or the hair beside the temples, which the
  hair mask leaves to the face's hull); an unseen vertex is hair where its mirror image across the
  face's mid-plane is, else on the front half (temples, beside the face) where the nearest seen vertex
  is, else (top, back, ears) where it lies above the lowest hair the photo shows. Grazing views are
  not read: at the side of the face the photo shows the cheek in front, not the ear behind it.

World convention: :mod:`sie3d.render.cameras` (``+y`` up, the face looks along ``+z``, the subject's
left is ``+x``). MediaPipe's points (x right, y down, z away from the camera, pixels) map to
``(x, −y, −z)``.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch

from ..face.mediapipe_models import FACE_OVAL, INNER_LIPS, LEFT_EYE, NOSE, OUTER_LIPS, RIGHT_EYE, landmark_mask
from .template import HeadTemplate, vertex_normals

#: template landmark -> MediaPipe face-mesh indices averaged (subject's left = MediaPipe's "left")
MESH_LANDMARKS = {
    "left_eye": (362, 263, 386, 374), "right_eye": (133, 33, 159, 145),
    "left_eye_top": (386,), "left_eye_bottom": (374,), "right_eye_top": (159,), "right_eye_bottom": (145,),
    "left_brow_inner": (336,), "left_brow_mid": (334,), "left_brow_outer": (300,),
    "right_brow_inner": (107,), "right_brow_mid": (105,), "right_brow_outer": (70,),
    "nose_bridge": (6,), "nose_tip": (1,), "mouth_left": (291,), "mouth_right": (61,),
    "mouth_top": (0,), "mouth_bottom": (17,), "lip_inner_top": (13,), "lip_inner_bottom": (14,),
    "chin": (152,), "forehead": (151,),
}
#: landmarks that fix the similarity (rigid, little moved by expressions)
STABLE = ("left_eye", "right_eye", "nose_bridge", "nose_tip", "chin", "forehead")
#: MediaPipe face-oval points on the subject's right (x < 0) and left side, brow to jaw
OVAL_RIGHT = (127, 234, 93, 132, 58, 172)
OVAL_LEFT = (356, 454, 323, 361, 288, 397)
#: MediaPipe points of skin patches (cheeks, forehead) for the skin tone
SKIN_POINTS = (50, 280, 151, 9)


def umeyama_3d(src: np.ndarray, dst: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """Least-squares similarity ``dst ≈ s R src + t`` (``[N, 3]`` each) -> (s, R ``[3, 3]``, t ``[3]``)."""
    mu_s, mu_d = src.mean(0), dst.mean(0)
    a, b = src - mu_s, dst - mu_d
    u, sigma, vt = np.linalg.svd(b.T @ a / len(src))
    d = np.ones(3)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        d[-1] = -1.0
    rotation = u @ np.diag(d) @ vt
    scale = float((sigma * d).sum() / ((a ** 2).sum() / len(src)))
    return scale, rotation, mu_d - scale * rotation @ mu_s


def mesh_to_world(points: np.ndarray) -> np.ndarray:
    """``[468, 3]`` MediaPipe (x right, y down, z away) -> world axes (x, −y, −z), same units."""
    return np.asarray(points, np.float64) * np.array([1.0, -1.0, -1.0])


def _side_extreme(vertices: np.ndarray, y: float, side: float, band: float) -> int:
    """Index of the front-half vertex furthest out on ``side`` (±1) within ``band`` of height ``y``."""
    near = np.nonzero((np.abs(vertices[:, 1] - y) < band) & (vertices[:, 2] > -0.05) & (vertices[:, 0] * side > 0))[0]
    return int(near[np.argmax(vertices[near, 0] * side)])


def fit_template_shape(template: HeadTemplate, mesh_points: np.ndarray, expression: torch.Tensor | None = None,
                       sigma: float = 0.2, max_offset: float = 0.2, width_range: tuple[float, float] = (0.8, 1.25),
                       ridge: float = 0.05) -> tuple[HeadTemplate, dict[str, float]]:
    """The template with the person's face shape (see the module docstring).

    Args:
        mesh_points: ``[468, 3]`` MediaPipe landmarks (photo pixels, relative depth).
        expression: ``[K]`` the photo's expression coefficients (None: neutral).

    Returns:
        the reshaped template, and diagnostics: ``width_scale``, ``rms_before`` / ``rms_after``
        (landmark RMS distance in world units after the similarity).
    """
    names = [n for n in MESH_LANDMARKS if n in template.landmarks]
    posed = template.deform(expression).detach().cpu().double().numpy()
    rest = template.vertices.detach().cpu().double().numpy()
    target = np.stack([mesh_to_world(mesh_points)[list(MESH_LANDMARKS[n])].mean(0) for n in names])
    ours = posed[[template.landmarks[n] for n in names]]
    stable = [names.index(n) for n in STABLE if n in names]
    scale, rotation, shift = umeyama_3d(target[stable], ours[stable])
    aligned = (scale * (rotation @ mesh_to_world(mesh_points).T)).T + shift  # [468, 3] world
    target = (scale * (rotation @ target.T)).T + shift

    # face width relative to height: the ratio of the oval's half widths at the same heights
    eye_chin = abs(ours[names.index("chin"), 1] - ours[[names.index("left_eye"), names.index("right_eye")], 1].mean())
    band = 0.04 * eye_chin / 0.9
    oval_src, oval_dst = [], []
    for side, indices in ((1.0, OVAL_LEFT), (-1.0, OVAL_RIGHT)):
        for i in indices:
            oval_src.append(_side_extreme(posed, aligned[i, 1], side, band))
            oval_dst.append(aligned[i])
    oval_src, oval_dst = np.array(oval_src), np.array(oval_dst)
    width_scale = float(np.clip(np.abs(oval_dst[:, 0]).sum() / np.abs(posed[oval_src, 0]).sum(), *width_range))
    scaled = rest * np.array([width_scale, 1.0, 1.0])
    posed_scaled = posed * np.array([width_scale, 1.0, 1.0])

    # residuals at the landmarks (all axes) and at the oval (x only), spread with Gaussian weights
    anchors = np.concatenate([posed_scaled[[template.landmarks[n] for n in names]], posed_scaled[oval_src]])
    residual = np.concatenate([target - anchors[:len(names)],
                               np.stack([oval_dst[:, 0] - anchors[len(names):, 0],
                                         np.zeros(len(oval_src)), np.zeros(len(oval_src))], -1)])
    residual = np.clip(residual, -max_offset, max_offset)
    # Gaussian radial basis interpolation: exact at the anchors (up to the ridge), zero far from them
    kernel = np.exp(-0.5 * ((anchors[:, None] - anchors[None]) ** 2).sum(-1) / sigma ** 2)  # [A, A]
    coefficients = np.linalg.solve(kernel + ridge * np.eye(len(anchors)), residual)  # [A, 3]
    d2 = ((posed_scaled[:, None, :] - anchors[None]) ** 2).sum(-1)  # [V, A]
    offset = np.clip(np.exp(-0.5 * d2 / sigma ** 2) @ coefficients, -max_offset, max_offset)
    vertices = torch.as_tensor(scaled + offset, dtype=template.vertices.dtype, device=template.vertices.device)
    before = float(np.sqrt(((target - ours) ** 2).sum(-1).mean()))
    moved = (scaled + offset)[[template.landmarks[n] for n in names]] + (posed_scaled - scaled)[
        [template.landmarks[n] for n in names]]
    after = float(np.sqrt(((target - moved) ** 2).sum(-1).mean()))
    return replace(template, vertices=vertices, name=f"{template.name} (shaped to the photo)"), {
        "width_scale": width_scale, "rms_before": before, "rms_after": after}


def expression_free_appearance(photo: np.ndarray, mesh_points: np.ndarray, smooth: float = 0.2,
                               opening_shade: float = 0.55) -> tuple[np.ndarray, dict]:
    """The photo with the marks its expression leaves on the skin taken out (see the module docstring).

    Below the eyes, outside the nose, inside the face oval (the cheeks, the mouth and the chin, where
    a smile's folds, raised cheeks and teeth are), the photo is replaced by its low-pass (a normalised
    Gaussian of ``smooth`` × the inter-ocular distance that leaves the lips out), feathered into the
    rest; the lips (outer contour minus the opening) become their median colour and the opening
    (teeth, tongue) that colour darkened by ``opening_shade``, the colour a closed mouth's seam or an
    opened mouth's inside shows once the geometry moves the lips.

    Args:
        photo: ``[H, W, 3]`` uint8; mesh_points: ``[468, 3]`` MediaPipe landmarks (photo pixels).

    Returns:
        ``[H, W, 3]`` uint8, and ``{"lip_colour": [3] in [0, 1], "opening_pixels": int, "smoothed_pixels": int}``.
    """
    import cv2

    shape = photo.shape[:2]
    points = np.asarray(mesh_points, np.float64)
    iod = float(np.linalg.norm(points[33, :2] - points[263, :2]))
    mouth = landmark_mask(shape, points, OUTER_LIPS)
    opening = landmark_mask(shape, points, INNER_LIPS) & mouth
    lips = mouth & ~opening
    lip_colour = np.median(photo[lips], axis=0) if lips.any() else np.median(photo[mouth], axis=0)

    region = landmark_mask(shape, points, FACE_OVAL)
    region &= np.arange(shape[0])[:, None] > points[[145, 374], 1].mean()  # below the lower eyelids
    keep = np.zeros(shape, bool)
    for part in (LEFT_EYE, RIGHT_EYE, NOSE):
        keep |= landmark_mask(shape, points, part, convex=True)
    grow = max(1, int(round(0.08 * iod)))
    keep = cv2.dilate(keep.astype(np.uint8), np.ones((2 * grow + 1,) * 2, np.uint8)).astype(bool)
    region &= ~keep
    sigma = smooth * iod
    weight = (~cv2.dilate(mouth.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)).astype(np.float32)
    low = cv2.GaussianBlur(photo.astype(np.float32) * weight[..., None], (0, 0), sigma) / \
        np.maximum(cv2.GaussianBlur(weight, (0, 0), sigma), 1e-3)[..., None]
    alpha = cv2.GaussianBlur(region.astype(np.float32), (0, 0), 0.04 * iod)[..., None]
    out = alpha * low + (1 - alpha) * photo.astype(np.float32)
    out[lips] = lip_colour
    out[opening] = opening_shade * lip_colour
    return np.clip(out.round(), 0, 255).astype(np.uint8), {
        "lip_colour": (lip_colour / 255.0).tolist(), "opening_pixels": int(opening.sum()),
        "smoothed_pixels": int(region.sum())}


def _patch_colour(photo: np.ndarray, centres: np.ndarray, radius: int) -> np.ndarray:
    pixels = [photo[max(0, int(y) - radius):int(y) + radius + 1, max(0, int(x) - radius):int(x) + radius + 1]
              .reshape(-1, 3) for x, y in centres]
    return np.median(np.concatenate(pixels), axis=0) / 255.0


def hair_region(photo: np.ndarray, hair: np.ndarray, head: np.ndarray, skin: np.ndarray,
                hair_colour: np.ndarray) -> np.ndarray:
    """``[H, W]`` bool: the hair mask, plus the head pixels nearer ``hair_colour`` than ``skin`` (``[3]``
    in [0, 1] each): the fringe and the hair beside the temples that the hair mask leaves to the face."""
    pixel = photo.astype(np.float64) / 255.0
    nearer = np.linalg.norm(pixel - hair_colour, axis=-1) < np.linalg.norm(pixel - skin, axis=-1)
    return hair | (head & nearer)


def hidden_vertices(pixels: np.ndarray, depth: np.ndarray, cell: float, tolerance: float) -> np.ndarray:
    """``[V]`` bool: the vertices more than ``tolerance`` (world units) behind the nearest vertex that
    projects into the same square of ``cell`` pixels (a vertex z-buffer; ``pixels`` ``[V, 2]`` the
    vertices' projections, ``depth`` ``[V]`` their camera depths)."""
    keys = np.floor(pixels / cell).astype(np.int64)
    _, cells = np.unique(keys, axis=0, return_inverse=True)
    cells = cells.reshape(-1)
    nearest = np.full(cells.max() + 1, np.inf)
    np.minimum.at(nearest, cells, depth)
    return depth > nearest[cells] + tolerance


def person_colours(template: HeadTemplate, photo: np.ndarray, mesh_points: np.ndarray, hair: np.ndarray,
                   render_to_photo: np.ndarray, camera, expression: torch.Tensor | None = None,
                   head: np.ndarray | None = None, min_facing: float = 0.3,
                   base_skin: tuple[float, float, float] = (0.80, 0.66, 0.58)) -> tuple[HeadTemplate, dict]:
    """The template with its albedo hint in the person's skin and hair colours (module docstring).

    Args:
        photo: ``[H, W, 3]`` uint8; mesh_points: ``[468, 3]``; hair: ``[H, W]`` bool hair mask.
        head: ``[H, W]`` bool, the head the photo shows (:func:`sie3d.face.mediapipe_models.head_mask`);
            None: only the hair mask marks hair.
        min_facing: a vertex is seen where the cosine of its normal to the camera exceeds this.
        render_to_photo: ``[2, 3]`` affine, ``camera`` pixels -> photo pixels.
        camera: the frontal camera (one) the template is aligned to the photo in.
        base_skin: the template's own skin hint, shifted to the photo's skin tone.

    Returns:
        the recoloured template, and ``{"skin": [3], "hair": [3] or None, "hair_vertices": int}``.
    """
    from ..render.cameras import project_points

    iod = float(np.linalg.norm(mesh_points[33, :2] - mesh_points[263, :2]))
    skin = _patch_colour(photo, mesh_points[list(SKIN_POINTS), :2], max(1, int(0.06 * iod)))
    colours = template.init_colors.clone() if template.init_colors is not None else \
        torch.full_like(template.vertices, 0.5)
    shift = torch.as_tensor(skin - np.array(base_skin), dtype=colours.dtype, device=colours.device)
    colours = (colours + shift).clamp(0, 1)
    info: dict = {"skin": skin.tolist(), "hair": None, "hair_vertices": 0}
    if hair.sum() < 50:  # no hair visible (bald, hat, or a failed mask): skin everywhere
        return replace(template, init_colors=colours), info
    hair_colour = np.median(photo[hair], axis=0) / 255.0

    vertices = template.deform(expression).detach().float().cpu()
    uv = project_points(vertices, camera.to("cpu"))[0].numpy().astype(np.float64)
    xy = uv @ render_to_photo[:, :2].T + render_to_photo[:, 2]
    h, w = hair.shape
    inside = (xy[:, 0] >= 0) & (xy[:, 0] < w) & (xy[:, 1] >= 0) & (xy[:, 1] < h)
    cols, rows = np.clip(xy[:, 0].astype(int), 0, w - 1), np.clip(xy[:, 1].astype(int), 0, h - 1)
    centre = camera.centers[0].cpu().numpy()
    normals = vertex_normals(vertices, template.faces.cpu()).numpy()
    to_camera = centre - vertices.numpy()
    facing = (normals * to_camera).sum(-1) / np.linalg.norm(to_camera, axis=-1) > min_facing
    region = template.face_region.cpu().numpy()
    in_hair = inside & hair[rows, cols]
    if head is not None:  # hair-coloured head pixels outside the face region: a fringe, the temples' hair
        in_hair |= inside & ~region & hair_region(photo, hair, head, skin, hair_colour)[rows, cols]
    view = camera.viewmats[0].cpu().numpy()
    depth = vertices.numpy() @ view[:3, :3].T[:, 2] + view[2, 3]
    seen = facing & inside & ~hidden_vertices(uv, depth, cell=camera.width / 64, tolerance=0.06)
    is_hair = seen & in_hair
    unseen = ~seen
    points = vertices.numpy()
    if seen.any():
        from scipy.spatial import cKDTree

        seen_idx = np.nonzero(seen)[0]
        tree = cKDTree(points[seen])
        # the far side from the near side: mirror across the mid-plane x = 0
        distance, k = tree.query(points * np.array([-1.0, 1.0, 1.0]))
        mirror_ok = unseen & (distance < 0.05)
        is_hair |= mirror_ok & in_hair[seen_idx[k]]
        unseen &= ~mirror_ok
        # beside the face (front half): as the nearest seen vertex
        beside = unseen & (points[:, 2] >= 0.35)
        _, k = tree.query(points[beside])
        is_hair[beside] = is_hair[seen_idx[k]]
        unseen &= ~beside
    # the lowest hair the photo shows, as a world height at the head's depth (the frontal camera
    # looks at the origin along -z from distance |centre|)
    photo_to_render = np.linalg.inv(np.vstack([render_to_photo, [0, 0, 1]]))[:2]
    hair_rows, hair_cols = np.nonzero(hair)
    lowest_render = (np.stack([hair_cols, hair_rows], -1) @ photo_to_render[:, :2].T + photo_to_render[:, 2])[:, 1].max()
    K = camera.Ks[0].cpu().numpy()
    lowest = -(lowest_render - K[1, 2]) / K[1, 1] * float(np.linalg.norm(centre))
    is_hair |= unseen & (points[:, 1] >= lowest) & ~region
    colours[torch.from_numpy(is_hair)] = torch.as_tensor(hair_colour, dtype=colours.dtype, device=colours.device)
    info.update(hair=hair_colour.tolist(), hair_vertices=int(is_hair.sum()), hair_lowest_y=float(lowest))
    return replace(template, init_colors=colours), info
