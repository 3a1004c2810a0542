"""The parts of the frontal render that the emotion and reference-view losses read, found once.

The classifier sees only its crop box and the reference-view loss only the template's face region, so
the trainer renders each loss's window of the frontal camera (:meth:`sie3d.render.cameras.Cameras.window`)
instead of the whole ``render.frontal_resolution``² image: at 256² about a third of the pixels and of the
rasterizer's forward and backward work. A window covers its pixels plus one (bilinear sampling at the
crop's edge reads its neighbours) and starts and ends on the rasterizer's tile grid, so it draws the same
tiles as the full render; outside the image the crop still reads black, as it does on the full render.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from ..avatar.reference_view import ReferenceView
from ..render.cameras import Cameras


@dataclass(frozen=True)
class PixelWindow:
    """Pixels ``[y0, y0 + height) x [x0, x0 + width)`` of an image."""

    x0: int
    y0: int
    width: int
    height: int


def tile_window(lo_x: float, lo_y: float, hi_x: float, hi_y: float, width: int, height: int,
                tile: int) -> PixelWindow:
    """The tile-aligned window of a ``width`` x ``height`` image holding the pixel range
    ``[lo, hi)`` (pixel units, may reach past the image) and one pixel around it, clipped to the image."""
    x0 = max(0, (math.floor(lo_x) - 1) // tile * tile)
    y0 = max(0, (math.floor(lo_y) - 1) // tile * tile)
    x1 = min(width, -(-(math.ceil(hi_x) + 1) // tile) * tile)
    y1 = min(height, -(-(math.ceil(hi_y) + 1) // tile) * tile)
    if x1 <= x0 or y1 <= y0:
        raise ValueError(f"the range x [{lo_x}, {hi_x}), y [{lo_y}, {hi_y}) misses the {width}x{height} image")
    return PixelWindow(x0, y0, x1 - x0, y1 - y0)


def emotion_window(frontal: Cameras, box: torch.Tensor, tile: int) -> tuple[Cameras, torch.Tensor]:
    """The frontal camera's window around the classifier's ``box`` ``[4]`` (normalised x0, y0, x1, y1 of
    the full image) and the same box normalised to the window (``[4]``, same device and dtype)."""
    w, h = frontal.width, frontal.height
    x0, y0, x1, y1 = (float(v) for v in box.detach().cpu())
    win = tile_window(x0 * w, y0 * h, x1 * w, y1 * h, w, h, tile)
    scale = box.new_tensor([w / win.width, h / win.height] * 2)
    offset = box.new_tensor([win.x0 / win.width, win.y0 / win.height] * 2)
    return frontal.window(win.x0, win.y0, win.width, win.height), box * scale - offset


def reference_window(frontal: Cameras, reference: ReferenceView, tile: int) -> tuple[Cameras, ReferenceView]:
    """The frontal camera's window around the reference's face-region mask and the reference cropped to it
    (image, mask and photo -> render matrix in window pixels); the whole image when the mask is empty."""
    rows, cols = np.nonzero(reference.mask[..., 0].cpu().numpy() > 0)
    if rows.size == 0:
        return frontal, reference
    win = tile_window(cols.min(), rows.min(), cols.max() + 1, rows.max() + 1, frontal.width, frontal.height, tile)
    ys, xs = slice(win.y0, win.y0 + win.height), slice(win.x0, win.x0 + win.width)
    matrix = reference.matrix - np.array([[0.0, 0.0, win.x0], [0.0, 0.0, win.y0]])
    cropped = ReferenceView(reference.image[ys, xs], reference.mask[ys, xs], reference.background, matrix)
    return frontal.window(win.x0, win.y0, win.width, win.height), cropped
