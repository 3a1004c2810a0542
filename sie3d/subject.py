"""The person to build an avatar of: photos, detected faces, and the identity vector for conditioning."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from .config import ModelsConfig
from .face.detect import Face, detect_faces, select_face
from .face.identity import embed_photos, make_identity_encoder
from .images import load_photo


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
    encoder = make_identity_encoder(models.identity)
    identity = embed_photos(encoder, images, faces)
    return Subject(images, faces, identity, encoder.name, names)
