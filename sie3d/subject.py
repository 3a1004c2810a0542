"""The person to build an avatar of, prepared once before training.

Two steps, each done once per run:

* :func:`make_subject` -- photos, the face detected in each, and the identity vector that conditions
  the prior (:class:`Subject`).
* :func:`prepare_subject` -- everything else derived from the photo, given the template the avatar is
  bound to (:class:`PreparedSubject`): the reference photo's own expression as blendshape coefficients
  (fitted to its 68 landmarks) with the similarity that aligns it to the frontal camera, the
  photo warped into that camera (reference view), and the emotion classifier's crop box; with
  MediaPipe's face mesh and selfie segmentation also the template in the person's face shape and
  skin / hair colours, and the photo the appearance is fitted to without the folds and teeth of its
  expression
  (:mod:`sie3d.avatar.person_fit`, ``models.person_shape`` / ``person_colours`` / ``expression_free_appearance``).

Then :func:`initial_avatar` paints the mesh-bound Gaussians from the photo; the trainer
(:mod:`sie3d.train`) receives them and reads the prepared fields; none of them detects, embeds or fits
the photo again.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from .avatar.expression_fit import ExpressionFit
from .avatar.gaussians import MeshGaussians
from .avatar.person_fit import expression_free_appearance, fit_template_shape, hair_region, person_colours
from .avatar.reference_view import (FIT_RESOLUTION, ReferenceView, align_reference_view, fit_reference,
                                    paint_from_reference, scaled_matrix)
from .avatar.template import HeadTemplate
from .avatar.template_files import load_template
from .config import Config, ModelsConfig
from .face.detect import Face, detect_faces, select_face
from .face.emotion import emotion_box
from .face.identity import embed_photos, make_identity_encoder
from .face.landmarks import landmarks_68
from .images import load_photo
from .render.cameras import Cameras, frontal_camera


@dataclass
class Subject:
    """One person, seen in one or more photos.

    Attributes:
        photos: uint8 RGB ``[H, W, 3]`` each.
        faces: the selected face of each photo.
        identity: ``[D]`` unit vector (ArcFace 512-d for the real prior, dlib 128-d offline),
            averaged over the photos and renormalised.
        identity_encoder: which encoder produced ``identity``.
        sources: where the photos came from (paths, or a description).
    """

    photos: list[np.ndarray]
    faces: list[Face]
    identity: np.ndarray
    identity_encoder: str
    sources: list[str] = field(default_factory=list)

    @property
    def photo(self) -> np.ndarray:
        """The first (reference) photo."""
        return self.photos[0]

    @property
    def face(self) -> Face:
        return self.faces[0]


def make_subject(photos: Sequence[str | Path | np.ndarray], models: ModelsConfig,
                 sources: Sequence[str] | None = None) -> Subject:
    """Load photos (paths or uint8 arrays), detect one face in each, embed the identity.

    Raises:
        sie3d.face.detect.NoFaceFound: a photo has no face (the message says which photo).
    """
    if not photos:
        raise ValueError("give at least one photo of the person")
    images, names = [], []
    for i, photo in enumerate(photos):
        if isinstance(photo, np.ndarray):
            images.append(photo)
            names.append(sources[i] if sources else f"photo {i}")
        else:
            images.append(load_photo(photo))
            names.append(str(photo))
    faces = [select_face(detect_faces(image, models.face_detector), what=name)
             for image, name in zip(images, names)]
    encoder = make_identity_encoder(models.identity, allow_glintr100=models.allow_glintr100_identity)
    identity = embed_photos(encoder, images, faces)
    return Subject(images, faces, identity, encoder.name, names)


@dataclass
class PreparedSubject:
    """A :class:`Subject` with everything the run derives from its reference photo.

    Attributes:
        subject: photos, faces and conditioning identity.
        template: the head template the avatar is bound to, on the run's device.
        frontal: the frontal camera (``render.frontal_resolution``) of the emotion and reference losses.
        fit: the photo's own expression and its alignment to the frontal camera; ``None`` when neither
            the person fit (``models.person_*``, ``expression_free_appearance``) nor the reference-view
            loss (``loss.lambda_ref > 0``) is on.
        reference: the photo warped into ``frontal`` with the face-region mask; ``None`` when the
            reference-view loss is off (``loss.lambda_ref == 0``).
        photo_expression: ``[K]`` blendshape coefficients of the photo (zeros without a fit).
        face_box: ``[4]`` emotion-classifier crop in the frontal render, in [0, 1] image units.
        appearance: ``[H, W, 3]`` uint8, the photo the colours are painted from and the reference view
            shows (the photo without its expression's marks with ``models.expression_free_appearance``).
        person: diagnostics of the person fit (shape: width scale, landmark RMS; colours: skin, hair).
        head: ``[H, W]`` bool (photo pixels), what of the head the photo shows is painted onto the
            avatar beside the template's face region: the photo's hair (fringe included,
            :func:`~sie3d.avatar.person_fit.hair_region`) with ``models.person_colours``, else the
            whole head; ``None`` without the person fit.
    """

    subject: Subject
    template: HeadTemplate
    frontal: Cameras
    fit: ExpressionFit | None
    reference: ReferenceView | None
    photo_expression: torch.Tensor
    face_box: torch.Tensor
    appearance: np.ndarray
    person: dict = field(default_factory=dict)
    head: np.ndarray | None = None

    @property
    def photo(self) -> np.ndarray:
        return self.subject.photo

    @property
    def face(self) -> Face:
        return self.subject.face


def prepare_subject(subject: Subject, config: Config, device: torch.device,
                    template: HeadTemplate | None = None) -> PreparedSubject:
    """Fit, align and measure the reference photo once (see the module docstring).

    Args:
        template: the head template to bind to; ``None`` loads ``config.models.template``.
    """
    template = (template if template is not None else load_template(config.models)).to("cpu")
    frontal_resolution = config.render.frontal_resolution or config.render.resolution
    frontal = frontal_camera(config.cameras, frontal_resolution).to(device)
    landmarks = landmarks_68(subject.photo, subject.face, config.models.landmarks)
    fit = reference = None
    appearance, person, head = subject.photo, {}, None
    models = config.models
    if config.loss.lambda_ref > 0 or models.person_shape or models.person_colours or models.expression_free_appearance:
        fit = fit_reference(landmarks, template, config.cameras)  # what the person fit and the reference view align
        template, fit, appearance, person, head = _person_fit(subject, template, fit, landmarks, config)
    if config.loss.lambda_ref > 0:
        reference = align_reference_view(appearance, fit, template.to(device), frontal).to(device)
    template = template.to(device)
    photo_expression = (fit.coefficients.to(device) if fit is not None
                        else torch.zeros(len(template.expression_names), device=device))
    face_box = classifier_box(template, frontal, subject.face, fit, config.models.emotion_crop_margin)
    return PreparedSubject(subject, template, frontal, fit, reference, photo_expression, face_box, appearance,
                           person, head)


def initial_avatar(prepared: PreparedSubject, config: Config, device: torch.device) -> MeshGaussians:
    """The Gaussians the trainer starts from: bound to ``prepared.template`` (``config.gaussians``), with
    the colours of those the frontal camera sees in the face region and the photo's head
    (``prepared.head``) painted from ``prepared.appearance`` at the photo's own expression (:func:`~sie3d.avatar.reference_view.paint_from_reference`; only with a
    photo fit, see :attr:`PreparedSubject.fit`)."""
    gaussians = MeshGaussians(prepared.template, config.gaussians).to(device)
    if prepared.fit is not None:
        paint_from_reference(gaussians, prepared.appearance, prepared.fit, prepared.template,
                             frontal_camera(config.cameras, FIT_RESOLUTION), region=prepared.head,
                             backend=config.render.backend)
    return gaussians


def _person_fit(subject: Subject, template: HeadTemplate, fit: ExpressionFit, landmarks: np.ndarray,
                config: Config) -> tuple[HeadTemplate, ExpressionFit, np.ndarray, dict, np.ndarray | None]:
    """The template shaped and coloured like the person, the expression re-fitted to the new shape,
    the appearance photo and the photo's head mask (see :class:`PreparedSubject`)."""
    models = config.models
    if not (models.person_shape or models.person_colours or models.expression_free_appearance):
        return template, fit, subject.photo, {}, None
    import cv2

    from .face.mediapipe_models import face_mesh, hair_mask, head_mask

    mesh = face_mesh(subject.photo, subject.face)
    head = head_mask(subject.photo, mesh)
    person: dict = {"mesh_presence": mesh.presence}
    if models.person_shape:
        template, person["shape"] = fit_template_shape(template, mesh.points, fit.coefficients)
        fit = fit_reference(landmarks, template, config.cameras)
    if models.person_colours:
        camera = frontal_camera(config.cameras, FIT_RESOLUTION)
        hair = hair_mask(subject.photo, mesh)
        template, person["colours"] = person_colours(
            template, subject.photo, mesh.points, hair,
            cv2.invertAffineTransform(fit.matrix), camera, fit.coefficients, head=head)
        if person["colours"]["hair"] is not None:  # outside the face region only the photo's hair is painted
            head = hair_region(subject.photo, hair, head, np.array(person["colours"]["skin"]),
                               np.array(person["colours"]["hair"]))
    appearance = subject.photo
    if models.expression_free_appearance:
        appearance, person["appearance"] = expression_free_appearance(subject.photo, mesh.points)
    return template, fit, appearance, person, head


def classifier_box(template: HeadTemplate, frontal: Cameras, face: Face, fit: ExpressionFit | None,
                   margin: float) -> torch.Tensor:
    """``[4]`` normalised emotion-classifier crop in the frontal render.

    The photo's detected face box, carried into the frontal view by the reference alignment, then
    squared with the classifier's margin exactly as on photos (:func:`sie3d.face.emotion.emotion_box`),
    so training and evaluation crop faces the same way. Without a photo alignment: the template's
    projected face region.
    """
    if fit is None:
        return template.frontal_face_box(frontal)
    matrix = scaled_matrix(fit, frontal)
    x0, y0, x1, y1 = face.box
    corners = np.array([[x0, y0], [x1, y0], [x0, y1], [x1, y1]]) @ matrix[:, :2].T + matrix[:, 2]
    box = np.concatenate([corners.min(0), corners.max(0)])
    return torch.as_tensor(emotion_box(box, frontal.width, frontal.height, margin), dtype=torch.float32,
                           device=frontal.viewmats.device)
