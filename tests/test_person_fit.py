"""The template shaped and coloured like the person (MediaPipe mesh + selfie segmentation on the astronaut)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import skimage.data
import torch

from sie3d.avatar.person_fit import (MESH_LANDMARKS, STABLE, expression_free_appearance, fit_template_shape,
                                     person_colours, umeyama_3d)
from sie3d.avatar.reference_view import FIT_RESOLUTION, fit_reference
from sie3d.avatar.template_files import load_template
from sie3d.config import load_config
from sie3d.face.detect import detect_faces
from sie3d.face.landmarks import landmarks_68
from sie3d.render.cameras import frontal_camera
from sie3d.weights import is_available

needs_models = pytest.mark.skipif(
    not all(is_available(m) for m in ("mediapipe-face-landmark", "mediapipe-selfie-segmentation")),
    reason="MediaPipe models not cached: sie3d weights download --offline-set")


def test_umeyama_3d_recovers_a_known_similarity():
    rng = np.random.default_rng(0)
    src = rng.normal(size=(12, 3))
    angle = 0.7
    rotation = np.array([[np.cos(angle), 0, np.sin(angle)], [0, 1, 0], [-np.sin(angle), 0, np.cos(angle)]])
    dst = 1.7 * src @ rotation.T + np.array([0.3, -2.0, 5.0])
    scale, r, t = umeyama_3d(src, dst)
    assert scale == pytest.approx(1.7) and np.allclose(r, rotation) and np.allclose(t, [0.3, -2.0, 5.0])


@pytest.fixture(scope="module")
def astronaut_fit():
    from sie3d.face.mediapipe_models import face_mesh, hair_mask

    config = load_config("params/quick.yaml")
    image = skimage.data.astronaut()
    face = detect_faces(image, "dlib")[0]
    template = load_template(config.models)
    landmarks = landmarks_68(image, face)
    fit = fit_reference(landmarks, template, config.cameras)
    mesh = face_mesh(image, face)
    return config, image, template, fit, mesh, hair_mask(image, mesh)


def _landmark_rms(template, points, expression) -> float:
    """RMS distance of the template's landmarks to the mesh's after the best 3D similarity (independent
    recomputation, all landmarks)."""
    names = [n for n in MESH_LANDMARKS if n in template.landmarks]
    world = points * np.array([1.0, -1.0, -1.0])
    target = np.stack([world[list(MESH_LANDMARKS[n])].mean(0) for n in names])
    ours = template.deform(expression).numpy()[[template.landmarks[n] for n in names]]
    stable = [names.index(n) for n in STABLE]
    s, r, t = umeyama_3d(target[stable], ours[stable])
    return float(np.sqrt((((s * target @ r.T + t) - ours) ** 2).sum(-1).mean()))


@needs_models
def test_shape_follows_the_landmarks_and_ignores_the_photos_pose(astronaut_fit):
    _, _, template, fit, mesh, _ = astronaut_fit
    shaped, info = fit_template_shape(template, mesh.points, fit.coefficients)
    assert _landmark_rms(shaped, mesh.points, fit.coefficients) < 0.8 * _landmark_rms(template, mesh.points,
                                                                                      fit.coefficients)
    # the same face rotated, scaled and moved in the photo gives the same head
    angle = np.radians(12.0)
    rotation = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]])
    moved = 0.8 * mesh.points @ rotation.T + np.array([40.0, -25.0, 3.0])
    again, _ = fit_template_shape(template, moved, fit.coefficients)
    assert (again.vertices - shaped.vertices).abs().max() < 1e-3
    # a wider face (x stretched about the face's centre) gives a wider head
    centre = mesh.points.mean(0)
    wide, wide_info = fit_template_shape(template, (mesh.points - centre) * [1.1, 1, 1] + centre, fit.coefficients)
    assert wide_info["width_scale"] == pytest.approx(1.1 * info["width_scale"], rel=0.03)
    assert float(np.ptp(wide.vertices[:, 0].numpy())) > float(np.ptp(shaped.vertices[:, 0].numpy()))
    assert shaped.faces is template.faces and shaped.expression_basis is template.expression_basis


@needs_models
def test_colours_put_hair_on_the_back_and_skin_on_the_face(astronaut_fit):
    config, image, template, fit, mesh, hair = astronaut_fit
    camera = frontal_camera(config.cameras, FIT_RESOLUTION)
    coloured, info = person_colours(template, image, mesh.points, hair, cv2.invertAffineTransform(fit.matrix),
                                    camera, fit.coefficients)
    colours, v = coloured.init_colors.numpy(), template.vertices.numpy()
    hair_colour = np.median(image[hair], axis=0) / 255
    assert np.allclose(info["hair"], hair_colour)
    back_top = (v[:, 2] < -0.4) & (v[:, 1] > 0.3)
    assert np.allclose(colours[back_top], hair_colour, atol=1e-6)
    face = template.face_region.numpy() & (v[:, 1] < 0.2)
    assert np.linalg.norm(colours[face].mean(0) - hair_colour) > 0.3  # skin-toned, not hair
    neck = v[:, 1] < -1.2
    assert np.allclose(colours[neck].mean(0), info["skin"], atol=0.02)
    assert np.mean(info["skin"]) > np.mean(hair_colour) + 0.2  # her skin is lighter than her hair


@needs_models
def test_expression_free_appearance_takes_out_teeth_and_folds_and_keeps_the_eyes(astronaut_fit):
    from sie3d.face.mediapipe_models import INNER_LIPS, LEFT_EYE, OUTER_LIPS, landmark_mask

    _, image, _, _, mesh, _ = astronaut_fit
    opening = landmark_mask(image.shape[:2], mesh.points, INNER_LIPS)
    mouth = landmark_mask(image.shape[:2], mesh.points, OUTER_LIPS)
    assert 100 < opening.sum() < 2000 and image[opening].mean() > 150  # her smile shows white teeth
    out, info = expression_free_appearance(image, mesh.points)
    lips = mouth & ~opening
    assert np.allclose(out[lips], np.median(image[lips], axis=0).round(), atol=0.5)  # one lip colour
    assert np.allclose(out[opening], (0.55 * np.median(image[lips], axis=0)).round(), atol=0.5)  # a dark mouth

    def teeth(pixels: np.ndarray) -> int:  # bright, unsaturated pixels
        return int(((pixels.min(1) > 160) & (np.ptp(pixels.astype(int), axis=1) < 45)).sum())

    assert teeth(image[opening]) > 20 and teeth(out[mouth]) == 0
    # the cheeks keep their low frequencies (mean colour) and lose the folds (local contrast)
    iod = float(np.linalg.norm(mesh.points[33, :2] - mesh.points[263, :2]))
    x, y = np.round(mesh.points[205, :2]).astype(int)  # the subject's right cheek, beside the nasolabial fold
    r = int(0.25 * iod)
    before, after = image[y - r:y + r, x - r:x + r].astype(float), out[y - r:y + r, x - r:x + r].astype(float)
    assert np.abs(before.mean((0, 1)) - after.mean((0, 1))).max() < 12
    assert after.std((0, 1)).mean() < 0.6 * before.std((0, 1)).mean()
    eye = np.zeros(image.shape[:2], np.uint8)
    cv2.fillConvexPoly(eye, cv2.convexHull(np.round(mesh.points[list(LEFT_EYE), :2]).astype(np.int32)), 1)
    eye = eye.astype(bool)  # the eyes are the person's (the smoothing's feathered edge is a few levels at most)
    assert np.abs(out[eye].astype(int) - image[eye]).max() <= 3 and np.mean(out[eye] == image[eye]) > 0.9
    assert info["opening_pixels"] == opening.sum() and info["smoothed_pixels"] > 10 * opening.sum()


@needs_models
def test_painting_skips_what_the_photo_cannot_see_behind_closed_lips(astronaut_fit):
    """With the mouth closed, the cavity behind the lips faces the camera but is hidden: it keeps the
    template's dark colour, while the skin in front of it takes the photo's (a flat green photo here);
    without the depth test (infinite tolerance) the cavity would turn green too."""
    from dataclasses import replace

    from sie3d.avatar.gaussians import MeshGaussians
    from sie3d.avatar.reference_view import paint_from_reference

    config, image, template, fit, _, _ = astronaut_fit
    closed = replace(fit, coefficients=torch.zeros_like(fit.coefficients))
    green = np.zeros_like(image)
    green[..., 1] = 255
    cavity_vertex = (template.init_colors - torch.tensor([0.18, 0.06, 0.07])).abs().sum(-1) < 1e-4
    camera = frontal_camera(config.cameras, FIT_RESOLUTION)
    painted = {}
    for tolerance in (0.06, float("inf")):
        gaussians = MeshGaussians(template, replace(config.gaussians, subdivisions=0))
        count = paint_from_reference(gaussians, green, closed, template, camera, occlusion_tolerance=tolerance)
        colours = torch.sigmoid(gaussians.params["color"].detach())
        in_cavity = cavity_vertex[template.faces[gaussians.face_ids]].all(-1)
        painted[tolerance] = (count, int((colours[in_cavity, 1] > 0.9).sum()), int((colours[~in_cavity, 1] > 0.9).sum()))
    assert cavity_vertex.sum() > 50
    (count, cavity_green, skin_green), (count_all, cavity_green_all, _) = painted[0.06], painted[float("inf")]
    assert cavity_green == 0 < cavity_green_all  # the depth test is what keeps the cavity dark
    assert skin_green > 1000 and count_all - count < 0.1 * count_all  # and it spares the visible face


@needs_models
def test_initial_avatar_has_no_hairline_seam_and_no_skin_patch_by_the_ears():
    """The astronaut's painted avatar: the Gaussians on the ears and in the band just above the template's
    face region (where her fringe is) are hair-coloured, not left at the template's skin; the painting
    once stopped across the forehead (a dark seam over a skin band) and read the ears from the cheek
    in front of them (a skin patch by each ear)."""
    from sie3d.subject import initial_avatar, make_subject, prepare_subject

    config = load_config("params/quick.yaml")
    device = torch.device("cpu")
    with pytest.warns(Warning):  # the suit's second "face"
        subject = make_subject([skimage.data.astronaut()], config.models, ["astronaut"])
    prepared = prepare_subject(subject, config, device)
    gaussians = initial_avatar(prepared, config, device)
    colours = torch.sigmoid(gaussians.params["color"].detach()).numpy()
    template = prepared.template
    centre = gaussians.anchor_positions(template.vertices).detach().numpy()  # [N, 3] rest positions
    x, y, z = centre.T
    skin, hair = (np.array(prepared.person["colours"][k]) for k in ("skin", "hair"))
    skin_like = np.linalg.norm(colours - skin, axis=-1) < np.linalg.norm(colours - hair, axis=-1)
    ears = (np.abs(x) > 0.55) & (y > -0.35) & (y < 0.15) & (z > -0.3) & (z < 0.15)
    top = template.vertices[template.face_region].numpy()[:, 1].max()
    band = (y > top) & (y < top + 0.12) & (z > 0.3) & (np.abs(x) < 0.3)  # above the face region, in front
    assert ears.sum() > 100 and band.sum() > 50
    assert skin_like[ears].mean() < 0.02
    assert skin_like[band].mean() < 0.1
