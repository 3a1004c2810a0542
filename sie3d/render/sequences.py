"""Side-by-side strips and cross-faded sequences of finished images (e.g. one frontal render per η)."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from .media import label_image


def labelled_strip(images: Sequence[np.ndarray], labels: Sequence[str]) -> np.ndarray:
    """uint8 ``[H, W·n, 3]``: n uint8 ``[H, W, 3]`` images side by side, each labelled top-left."""
    if len(images) != len(labels) or not images:
        raise ValueError(f"need one label per image and at least one image; got {len(images)} and {len(labels)}")
    return np.concatenate([label_image(np.ascontiguousarray(im), text) for im, text in zip(images, labels)], axis=1)


def crossfade_sequence(images: Sequence[np.ndarray], hold: int = 8, fade: int = 6) -> np.ndarray:
    """uint8 ``[T, H, W, 3]``: each image held ``hold`` frames, consecutive ones blended over ``fade`` frames.

    T = n·hold + (n − 1)·fade. Blend frame j of a fade is (1 − a)·A + a·B with a = (j + 1)/(fade + 1).
    """
    if not images or hold < 1 or fade < 0:
        raise ValueError("need at least one image, hold >= 1 and fade >= 0")
    frames: list[np.ndarray] = []
    for i, image in enumerate(images):
        frames += [image] * hold
        if i + 1 < len(images):
            a, b = image.astype(np.float32), images[i + 1].astype(np.float32)
            for j in range(fade):
                w = (j + 1) / (fade + 1)
                frames.append(np.clip((1 - w) * a + w * b + 0.5, 0, 255).astype(np.uint8))
    return np.stack(frames)
