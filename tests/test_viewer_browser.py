"""The viewer page in a real browser: headless Chromium (SwiftShader WebGL) renders a splat face served
by ``sie3d view``'s HTTP server; dlib must find an upright face in the screenshot.

The scene is the astronaut photo painted onto a plane of Gaussians in sie3d's world (y up, facing +z),
exported with ``save_ply`` (COLMAP y-down convention). Three pages: the ``.spz`` that the book and
``sie3d view`` serve (our encoder, Spark's decoder), the ``.ply`` read by Spark's own PLY loader and
turned by the page's ``up=-y``, and the same ``.ply`` with the wrong ``up=y`` (must come out upside
down, so the check can fail). Set ``SIE3D_SCREENSHOT_DIR`` to keep the screenshots.
"""

from __future__ import annotations

import os
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers_browser import Chromium, chromium_executable
from sie3d.avatar.ply import save_ply
from sie3d.commands.view import make_server, prepare_site
from sie3d.face.detect import detect_faces
from sie3d.render.splats import Splats
from sie3d.render.web_viewer import viewer_query
from sie3d.weights import is_available

CHROMIUM = chromium_executable()
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's `chromium` (apt-get install chromium; .ci/run "
                                                "installs it when missing)"),
    pytest.mark.skipif(not (is_available("viewer-three") and is_available("viewer-spark")),
                       reason="viewer scripts not cached: sie3d weights download --offline-set"),
]
READY = "document.body && (Number(document.body.dataset.frames || 0) >= 10 || document.body.dataset.error)"


def face_plane(n: int = 120, side: float = 2.0) -> Splats:
    """[n*n] flat Gaussians on z = 0 carrying the astronaut's head and shoulders, image top at +y."""
    import skimage.data
    from PIL import Image

    photo = Image.fromarray(skimage.data.astronaut()[0:300, 90:390]).resize((n, n), Image.BILINEAR)
    rgb = np.asarray(photo, dtype=np.float32).reshape(-1, 3) / 255.0
    rows, cols = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
    x = (cols.ravel() + 0.5) / n * side - side / 2
    y = side / 2 - (rows.ravel() + 0.5) / n * side
    means = torch.tensor(np.stack([x, y, np.zeros_like(x)], -1), dtype=torch.float32)
    s = 0.7 * side / n
    return Splats(means, torch.tensor([[1.0, 0.0, 0.0, 0.0]]).repeat(n * n, 1),
                  torch.tensor([[s, s, 0.1 * s]]).repeat(n * n, 1), torch.full((n * n,), 0.95), torch.from_numpy(rgb))


def upright_faces(image: np.ndarray) -> list:
    """dlib faces whose 5 points read eyes above nose above mouth (y grows downwards)."""
    faces = detect_faces(image, "dlib", landmarks=True)
    upright = []
    for face in faces:
        eyes, nose, mouth = face.landmarks[:2, 1].mean(), face.landmarks[2, 1], face.landmarks[3:, 1].mean()
        if eyes < nose < mouth:
            upright.append(face)
    return upright


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """A served viewer folder holding the run's .spz (staged by ``sie3d view``) and the raw .ply."""
    root = tmp_path_factory.mktemp("site")
    run = tmp_path_factory.mktemp("run")
    save_ply(face_plane(), run / "avatar.ply")
    page = prepare_site(run, root)
    shutil.copyfile(run / "avatar.ply", root / "avatars" / "raw.ply")
    server = make_server(root)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", page
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    chromium = Chromium(CHROMIUM, tmp_path_factory.mktemp("profile"), size=(512, 512))
    yield chromium
    chromium.close()


def _shoot(browser, url: str, name: str) -> np.ndarray:
    session = browser.open(url)
    browser.wait_for(session, READY, timeout=60)
    assert not browser.evaluate(session, "document.body.dataset.error || ''"), "the viewer reported an error"
    image = browser.screenshot(session)
    if os.environ.get("SIE3D_SCREENSHOT_DIR"):
        from PIL import Image

        Image.fromarray(image).save(Path(os.environ["SIE3D_SCREENSHOT_DIR"]) / f"viewer_{name}.png")
    return image


def test_served_spz_shows_an_upright_face(site, browser):
    base, page = site
    image = _shoot(browser, f"{base}/{page}", "spz")
    not_white = (image.astype(int).sum(-1) < 720).mean()
    assert not_white > 0.2 and image.std() > 20, f"blank canvas? non-white {not_white:.2f}, std {image.std():.1f}"
    faces = upright_faces(image)
    assert faces, "dlib found no upright face in the viewer's screenshot"
    box = faces[0].box
    assert abs((box[0] + box[2]) / 2 - image.shape[1] / 2) < image.shape[1] / 4  # frontal: the face near the middle


def test_ply_convention_in_spark(site, browser):
    base, _ = site
    right = _shoot(browser, f"{base}/index.html?{viewer_query('avatars/raw.ply', up='-y')}", "ply")
    assert upright_faces(right), "the COLMAP-convention .ply is not upright when the page turns it (up=-y)"
    wrong = _shoot(browser, f"{base}/index.html?{viewer_query('avatars/raw.ply', up='y')}", "ply_wrong_up")
    assert wrong.std() > 20 and not upright_faces(wrong), "y-down .ply shown as y-up must be upside down"
