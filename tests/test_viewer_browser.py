"""The viewer in a real browser: a tiny book (one notebook calling ``show_avatar`` under some maths)
is built with ``build_book``; its HTML must load nothing from another host; headless Chromium
(SwiftShader WebGL) opens the built page served by ``sie3d view``'s HTTP server, MathJax must typeset
from the book's own files, and dlib must find an upright face in the embedded viewer's screenshot.

The scene is the astronaut photo painted onto a plane of Gaussians in sie3d's world (y up, facing +z),
exported with ``save_ply`` (COLMAP y-down convention). Pages: the book's iframe (the run's ``.spz``:
our encoder, Spark's decoder), the ``.ply`` read by Spark's own PLY loader and turned by the page's
``up=-y``, and the same ``.ply`` with the wrong ``up=y`` (must come out upside down, so the check can
fail). Set ``SIE3D_SCREENSHOT_DIR`` to keep the screenshots.
"""

from __future__ import annotations

import os
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers_book import parameters_cell, scratch_book_repo
from helpers_browser import Chromium, chromium_executable

from sie3d.avatar.ply import save_ply
from sie3d.book import build_book, external_loads
from sie3d.commands.view import make_server
from sie3d.face.detect import detect_faces
from sie3d.render.splats import Splats
from sie3d.render.web_viewer import viewer_query
from sie3d.weights import is_available

REPO_ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = chromium_executable()
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not all(is_available(m) for m in ("viewer-three", "viewer-spark", "mathjax")),
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


VIEWER_NOTEBOOK = """# %% [markdown]
# # Viewer page
#
# Euler: $e^{{i\\pi}} + 1 = 0$

""" + parameters_cell("") + """
# %%
from sie3d.avatar.web import show_avatar
show_avatar({run!r}, name="face")
"""
@pytest.fixture(scope="module")
def built_book(tmp_path_factory):
    """A scratch repository whose one notebook shows a run's avatar; the HTML book built from it."""
    root = tmp_path_factory.mktemp("repo")
    run = root / "runs" / "face_run"
    save_ply(face_plane(), run / "avatar.ply")
    scratch_book_repo(root, REPO_ROOT, "_extra")
    (root / "notebooks" / "00_viewer.py").write_text(VIEWER_NOTEBOOK.format(run=str(run)))
    result = build_book([root / "params/quick.yaml"], repo_root=root, log=lambda *_: None)
    assert result.ok, result.build_error or [n.error for n in result.notebooks]
    return root / "book" / "_build" / "html", run


@pytest.fixture(scope="module")
def site(built_book):
    """The built book served over HTTP, with the run's raw .ply beside the viewer's avatars."""
    html, run = built_book
    shutil.copyfile(run / "avatar.ply", html / "sie3d-viewer" / "avatars" / "raw.ply")
    server = make_server(html)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    if CHROMIUM is None:
        pytest.skip("needs Debian's `chromium` on PATH (apt-get install chromium; .ci/run installs it when missing)")
    chromium = Chromium(CHROMIUM, tmp_path_factory.mktemp("profile"), size=(900, 1400))
    yield chromium
    chromium.close()


def _save(image: np.ndarray, name: str) -> None:
    if os.environ.get("SIE3D_SCREENSHOT_DIR"):
        from PIL import Image

        Image.fromarray(image).save(Path(os.environ["SIE3D_SCREENSHOT_DIR"]) / f"viewer_{name}.png")


def _shoot(browser, url: str, name: str) -> np.ndarray:
    session = browser.open(url, size=(512, 512))
    browser.wait_for(session, READY, timeout=60)
    assert not browser.evaluate(session, "document.body.dataset.error || ''"), "the viewer reported an error"
    image = browser.screenshot(session)
    _save(image, name)
    return image


def test_built_pages_load_nothing_from_another_host(built_book):
    html, _ = built_book
    assert len(list(html.rglob("*.html"))) >= 3 and external_loads(html) == {}  # build_book checks it too
    page = (html / "executed" / "00_viewer.html").read_text()
    assert "mathjax/es5/tex-mml-chtml.js" in page and (html / "mathjax/es5/tex-mml-chtml.js").is_file()
    assert '<iframe src="../sie3d-viewer/index.html?src=avatars%2Fface.spz' in page
    assert (html / "sie3d-viewer/avatars/face.spz").is_file() and (html / "sie3d-viewer/vendor/spark").is_dir()


def test_book_page_typesets_maths_and_shows_an_upright_face(site, browser):
    session = browser.open(f"{site}/executed/00_viewer.html")
    browser.wait_for(session, "!!document.querySelector('mjx-container')", timeout=60)  # MathJax, served locally
    browser.evaluate(session, "document.querySelector('iframe').scrollIntoView()")
    frame = "document.querySelector('iframe').contentDocument"
    browser.wait_for(session, READY.replace("document.body", f"{frame}.body"), timeout=60)
    assert not browser.evaluate(session, f"{frame}.body.dataset.error || ''"), "the viewer reported an error"
    rect = browser.evaluate(session, "(r => [r.left, r.top, r.right, r.bottom])("
                                     "document.querySelector('iframe').getBoundingClientRect())")
    x0, y0, x1, y1 = (round(v) for v in rect)
    image = np.ascontiguousarray(browser.screenshot(session)[max(y0, 0):y1, max(x0, 0):x1])
    _save(image, "book_spz")
    not_white = (image.astype(int).sum(-1) < 720).mean()
    assert not_white > 0.1 and image.std() > 20, f"blank canvas? non-white {not_white:.2f}, std {image.std():.1f}"
    faces = upright_faces(image)
    assert faces, "dlib found no upright face in the book's viewer"
    box = faces[0].box
    assert abs((box[0] + box[2]) / 2 - image.shape[1] / 2) < image.shape[1] / 4  # frontal: the face near the middle


def test_ply_convention_in_spark(site, browser):
    right = _shoot(browser, f"{site}/sie3d-viewer/index.html?{viewer_query('avatars/raw.ply', up='-y')}", "ply")
    assert upright_faces(right), "the COLMAP-convention .ply is not upright when the page turns it (up=-y)"
    wrong = _shoot(browser, f"{site}/sie3d-viewer/index.html?{viewer_query('avatars/raw.ply', up='y')}",
                   "ply_wrong_up")
    assert wrong.std() > 20 and not upright_faces(wrong), "y-down .ply shown as y-up must be upside down"


#: SuperSplat's viewer turns a .ply 180 degrees about z, so a COLMAP-convention face looks along its -z
SUPERSPLAT_SETTINGS = {
    "version": 2, "tonemapping": "linear", "highPrecisionRendering": False, "background": {"color": [1, 1, 1]},
    "postEffectSettings": {
        "sharpness": {"enabled": False, "amount": 0}, "bloom": {"enabled": False, "intensity": 0.1, "blurLevel": 2},
        "grading": {"enabled": False, "brightness": 1, "contrast": 1, "saturation": 1, "tint": [1, 1, 1]},
        "vignette": {"enabled": False, "intensity": 0.5, "inner": 0.3, "outer": 0.75, "curvature": 1},
        "fringing": {"enabled": False, "intensity": 0.5}},
    "animTracks": [], "cameras": [{"initial": {"position": [0, 0, -4.5], "target": [0, 0, 0], "fov": 40}}],
    "annotations": [], "startMode": "default"}


def test_supersplat_viewer_shows_the_ply_upright(built_book, browser, tmp_path):
    """The export convention checked by a viewer we did not write: the SuperSplat viewer page that
    ``@playcanvas/splat-transform`` writes (``npm install @playcanvas/splat-transform``; point
    ``SIE3D_SPLAT_TRANSFORM`` at its ``splat-transform`` executable, or put it on PATH)."""
    import json
    import subprocess
    import time

    exe = os.environ.get("SIE3D_SPLAT_TRANSFORM") or shutil.which("splat-transform")
    if not exe:
        pytest.skip("needs @playcanvas/splat-transform (set SIE3D_SPLAT_TRANSFORM to its executable)")
    _, run = built_book
    settings = tmp_path / "settings.json"
    settings.write_text(json.dumps(SUPERSPLAT_SETTINGS))
    page = tmp_path / "supersplat.html"
    made = subprocess.run([exe, "-g", "cpu", "-w", str(run / "avatar.ply"), "--viewer-settings", str(settings),
                           str(page)], capture_output=True, text=True, timeout=120)
    assert made.returncode == 0, made.stdout[-2000:] + made.stderr[-2000:]
    session = browser.open(page.as_uri(), size=(512, 512))
    browser.wait_for(session, "document.readyState === 'complete'", timeout=30)
    deadline = time.monotonic() + 60
    while (browser.screenshot(session).astype(int).sum(-1) < 600).mean() < 0.05 and time.monotonic() < deadline:
        time.sleep(0.25)
    for key, code, vk in (("Escape", "Escape", 27), ("h", "KeyH", 72)):  # stop the intro orbit, hide the help
        browser.send("Input.dispatchKeyEvent", session, type="keyDown", key=key, code=code, windowsVirtualKeyCode=vk)
        browser.send("Input.dispatchKeyEvent", session, type="keyUp", key=key, code=code, windowsVirtualKeyCode=vk)
    time.sleep(2)
    image = browser.screenshot(session)
    _save(image, "supersplat")
    assert upright_faces(image), "dlib found no upright face in SuperSplat's view of our .ply"
