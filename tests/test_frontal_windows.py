"""Windows of the frontal render: a window's render is that region of the full render, and the emotion
and reference-view losses read the same values from their window as from the whole image."""

import numpy as np
import pytest
import torch

from sie3d.avatar.reference_view import ReferenceView, reference_view_loss
from sie3d.face.emotion import face_crop
from sie3d.render.cameras import orbit_cameras
from sie3d.render.renderer import render
from sie3d.render.splats import random_splats
from sie3d.train.frontal_windows import emotion_window, reference_window, tile_window


def scene(size=64):
    """Gaussians of about half a pixel, as the avatar's at 256² (the Jacobian clamp 1.3x the window's
    frustum, about 5 pixels past a 32-pixel window, is then out of reach of every one that touches it)."""
    splats = random_splats(3000, torch.Generator().manual_seed(0), center=(0.0, 0.0, 0.0), extent=0.8,
                           log_scale_range=(-5.5, -5.0))
    return splats, orbit_cameras(3.0, 90.0, 0.0, 0.6, size)


@pytest.mark.parametrize("backend", ["torch", "compiled"])
def test_window_render_is_that_region_of_the_full_render(backend):
    splats, camera = scene()
    full = render(splats, camera, torch.ones(3), backend=backend)
    part = render(splats, camera.window(16, 32, 32, 32), torch.ones(3), backend=backend)
    assert part.rgb.shape == (1, 32, 32, 3) and float(part.alpha.std()) > 0.05  # a window with content
    torch.testing.assert_close(part.rgb, full.rgb[:, 32:64, 16:48], atol=1e-5, rtol=0)
    torch.testing.assert_close(part.alpha, full.alpha[:, 32:64, 16:48], atol=1e-5, rtol=0)


def test_window_outside_the_image_is_refused():
    _, camera = scene()
    with pytest.raises(ValueError, match="not inside"):
        camera.window(48, 0, 32, 16)


def test_tile_window_against_brute_force():
    rng = np.random.default_rng(0)
    for _ in range(200):
        lo = rng.uniform(-20, 90, 2)
        hi = lo + rng.uniform(1, 60, 2)
        try:
            win = tile_window(lo[0], lo[1], hi[0], hi[1], 80, 64, 16)
        except ValueError:  # the range misses the image: no pixel of it is inside
            assert hi[0] + 1 <= 0 or hi[1] + 1 <= 0 or lo[0] - 1 >= 80 or lo[1] - 1 >= 64
            continue
        assert win.x0 % 16 == 0 and win.y0 % 16 == 0
        assert win.x0 + win.width in (80, *range(16, 80, 16)) and win.y0 + win.height in (64, *range(16, 64, 16))
        # every pixel the range touches, plus one around it, that lies in the image is in the window
        xs = [x for x in range(80) if lo[0] - 1 < x + 1 and x < hi[0] + 1]
        ys = [y for y in range(64) if lo[1] - 1 < y + 1 and y < hi[1] + 1]
        assert all(win.x0 <= x < win.x0 + win.width for x in xs)
        assert all(win.y0 <= y < win.y0 + win.height for y in ys)
        # and the window is the smallest tile-aligned one that does
        assert win.x0 + 16 > min(xs) and win.y0 + 16 > min(ys)


@pytest.mark.parametrize("box", [[0.3, 0.2, 0.7, 0.65], [-0.1, 0.05, 0.55, 0.7], [0.45, 0.5, 1.2, 1.1]])
def test_emotion_crop_reads_the_same_from_its_window(box):
    image = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    _, camera = scene()
    box = torch.tensor(box)
    window, inner = emotion_window(camera, box, 16)
    x0, y0 = int(camera.Ks[0, 0, 2] - window.Ks[0, 0, 2]), int(camera.Ks[0, 1, 2] - window.Ks[0, 1, 2])
    part = image[:, :, y0:y0 + window.height, x0:x0 + window.width]
    torch.testing.assert_close(face_crop(part, inner, 48), face_crop(image, box, 48), atol=1e-5, rtol=0)


def test_reference_loss_reads_the_same_from_its_window():
    generator = torch.Generator().manual_seed(2)
    _, camera = scene()
    mask = torch.zeros(64, 64, 1)
    mask[20:41, 9:30] = 1.0
    reference = ReferenceView(torch.rand(64, 64, 3, generator=generator), mask, torch.ones(3),
                              np.array([[1.0, 0.0, 5.0], [0.0, 1.0, 7.0]]))
    window, cropped = reference_window(camera, reference, 16)
    assert (window.width, window.height) == (32, 32)  # columns 9..29 and rows 20..40, one pixel around, on the tile grid
    assert cropped.mask.sum() == mask.sum()
    np.testing.assert_allclose(cropped.matrix, [[1.0, 0.0, 5.0], [0.0, 1.0, -9.0]])
    rgb = torch.rand(64, 64, 3, generator=generator)
    torch.testing.assert_close(reference_view_loss(rgb[16:48, 0:32], cropped), reference_view_loss(rgb, reference))
