"""What the emotion loss does on its own: pixel-space optimisation and loss landscapes of a photo.

Used by notebook 03 to show that a classifier loss with free pixels finds small, nearly invisible
changes that flip the classifier (so the same classifier cannot also be the metric).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .emotion import EmotionClassifier, emotion_index, emotion_loss


def face_region(image: np.ndarray, face_box, margin: float = 0.35) -> tuple[np.ndarray, np.ndarray]:
    """A square region around a face (clipped to the image), to optimise fewer pixels.

    Args:
        image: ``[H, W, 3]`` uint8; face_box: ``[4]`` pixels.

    Returns:
        the region ``[h, w, 3]`` (a copy) and its top-left corner ``[2]`` (x, y) in the image.
    """
    x0, y0, x1, y1 = (float(v) for v in face_box)
    half = max(x1 - x0, y1 - y0) * (0.5 + margin)
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    side = int(np.ceil(2 * half))
    left, top = int(np.floor(cx - half)), int(np.floor(cy - half))
    right, bottom = min(left + side, image.shape[1]), min(top + side, image.shape[0])
    left, top = max(left, 0), max(top, 0)
    return image[top:bottom, left:right].copy(), np.array([left, top])


@dataclass
class PixelOptimisation:
    """Result of :func:`optimise_pixels`.

    Attributes:
        image: ``[1, 3, H, W]`` optimised image in [0, 1].
        probs: ``[steps + 1, 7]`` the classifier's probabilities before each step and at the end.
        losses: ``[steps]`` emotion loss at each step.
    """

    image: torch.Tensor
    probs: np.ndarray
    losses: np.ndarray


def optimise_pixels(classifier: EmotionClassifier, image: torch.Tensor, box, target: str | int,
                    steps: int = 60, lr: float = 2e-3, max_change: float | None = 8 / 255) -> PixelOptimisation:
    """Adam on an additive pixel offset, driven only by :func:`emotion_loss` toward ``target``.

    Args:
        image: ``[1, 3, H, W]`` in [0, 1].
        box: normalised face box ``[4]`` (see :func:`sie3d.face.emotion.emotion_box`).
        max_change: per-pixel bound on the offset (L∞), None for unbounded.
    """
    emotion_index(target)  # validate early
    delta = torch.zeros_like(image, requires_grad=True)
    optimiser = torch.optim.Adam([delta], lr=lr)
    history, losses = [], []
    for _ in range(steps):
        logits = classifier.logits((image + delta).clamp(0, 1), box)
        loss = emotion_loss(logits, target, logits=True)
        history.append(torch.softmax(logits.detach(), -1)[0].numpy())
        losses.append(loss.item())
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        if max_change is not None:
            with torch.no_grad():
                delta.clamp_(-max_change, max_change)
    final = (image + delta.detach()).clamp(0, 1)
    with torch.no_grad():
        history.append(classifier(final, box)[0].numpy())
    return PixelOptimisation(final, np.stack(history), np.asarray(losses))


def loss_landscape(classifier: EmotionClassifier, image: torch.Tensor, box, target: str | int,
                   extent: float = 8 / 255, points: int = 15, seed: int = 0,
                   chunk: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """The loss on a 2-D slice through the image: along the sign of its gradient and a random ±1 direction.

    Args:
        image: ``[1, 3, H, W]`` in [0, 1].
        extent: the slice spans ``[-extent, extent]`` per pixel along each direction.

    Returns:
        offsets ``[points]`` and losses ``[points, points]`` (rows: gradient direction, columns: random).
    """
    probe = image.clone().requires_grad_(True)
    emotion_loss(classifier.logits(probe, box), target, logits=True).backward()
    towards = probe.grad.sign()  # steepest ascent under an L∞ budget
    generator = torch.Generator().manual_seed(seed)
    random = torch.randint(0, 2, image.shape, generator=generator, device="cpu").to(image) * 2 - 1
    offsets = torch.linspace(-extent, extent, points, device=image.device)
    grid = torch.cartesian_prod(offsets, offsets)  # [points², 2]
    losses = []
    with torch.no_grad():
        for part in grid.split(chunk):
            batch = (image + part[:, 0, None, None, None] * towards + part[:, 1, None, None, None] * random).clamp(0, 1)
            logits = classifier.logits(batch, box)
            losses.append(-torch.log_softmax(logits, -1)[:, emotion_index(target)])
    return offsets.numpy(), torch.cat(losses).view(points, points).numpy()
