"""The viewer in a real browser: headless Chromium (SwiftShader WebGL, on the CPU) and dlib.

A tiny book (one notebook calling ``show_avatar`` on a quick-preset avatar's run, under some maths) is
built with ``build_book``; its HTML must load nothing from another host. The page is opened over HTTP
(``sie3d view``'s server) and from disk (``file://``, how most readers open a built book; Chromium refuses
module scripts and fetch() there): dlib must find an upright face in the viewer, and the live rig must
answer its sliders: ``sie3dSet({surprise: 1})`` opens the mouth, dlib's 68-landmark inner-lip gap on the
canvas growing by at least half of the subject photo's own gap (both in inter-ocular distances,
:func:`sie3d.face.landmarks.expression_measures`), and setting it back to 0 closes it; the page's own pose
(JavaScript) matches the package's rig reader. The frame time the
page measures (re-pose + sort + draw after a slider change) is printed and recorded as a test property.
Static splats (a ``.ply`` or ``.spz``, shown without sliders) must come out upright from a y-down ``.ply``
and upside down when its header lies (so the check can fail); without WebGL 2 the page shows the turntable.
Set ``SIE3D_SCREENSHOT_DIR`` to keep the screenshots.
"""

from __future__ import annotations

import os
import shutil
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers_book import parameters_cell, scratch_book_repo
from helpers_browser import Chromium, chromium_executable

from sie3d.avatar.gaussians import quat_multiply
from sie3d.avatar.ply import save_ply
from sie3d.avatar.rig import read_rig
from sie3d.avatar.web import stage_avatar
from sie3d.book import build_book, external_loads
from sie3d.commands.view import make_server
from sie3d.face.detect import detect_faces
from sie3d.face.landmarks import expression_measures, landmarks_68
from sie3d.render.rasterize import covariance_3d
from sie3d.render.splats import Splats
from sie3d.weights import is_available

REPO_ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = chromium_executable()
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not is_available("mathjax"), reason="MathJax not cached: sie3d weights download --offline-set"),
]
READY = "document.body && (document.title.endsWith('ready') || document.body.dataset.error)"


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


def mouth_open(image: np.ndarray) -> float:
    """dlib's 68-landmark inner-lip gap, in inter-ocular distances."""
    return expression_measures(landmarks_68(image, source="dlib"))["mouth_open"]


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
def built_book(tmp_path_factory, quick_rig_run):
    """A scratch repository whose one notebook shows the quick avatar's live rig; the HTML book built from it,
    with a static y-down .ply of a photo plane staged beside (``plane``) and the same data mislabelled y-up."""
    root = tmp_path_factory.mktemp("repo")
    scratch_book_repo(root, REPO_ROOT, "_extra")
    (root / "notebooks" / "00_viewer.py").write_text(VIEWER_NOTEBOOK.format(run=str(quick_rig_run)))
    result = build_book([root / "params/quick.yaml"], repo_root=root, log=lambda *_: None)
    assert result.ok, result.build_error or [n.error for n in result.notebooks]
    html = root / "book" / "_build" / "html"
    plane = face_plane()
    save_ply(plane, root / "plane.ply")  # COLMAP convention (y down) on disk, said in its header
    turn = torch.tensor([0.0, 1.0, 0.0, 0.0]).expand(len(plane), 4)  # 180 degrees about x: the y-down data
    flipped = Splats(plane.means * torch.tensor([1.0, -1.0, -1.0]), quat_multiply(turn, plane.quats), plane.scales,
                     plane.opacities, plane.colors)
    save_ply(flipped, root / "mislabelled.ply", convention="y-up")  # y-down data, header says y-up
    queries = {name: stage_avatar(root / f"{name}.ply", html / "sie3d-viewer", name)
               for name in ("plane", "mislabelled")}
    return html, queries


@pytest.fixture(scope="module")
def site(built_book):
    """The built book served over HTTP by ``sie3d view``'s server."""
    html, _ = built_book
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


def _open_viewer(browser, url: str) -> str:
    session = browser.open(url, size=(700, 512))
    browser.wait_for(session, READY, timeout=120)
    assert not browser.evaluate(session, "document.body.dataset.error || ''"), "the viewer reported an error"
    return session


def _base(where: str, built_book, site) -> str:
    html, _ = built_book
    return f"{site}/sie3d-viewer" if where == "http" else (html / "sie3d-viewer").as_uri()


def test_built_pages_load_nothing_from_another_host(built_book):
    html, _ = built_book
    assert len(list(html.rglob("*.html"))) >= 3 and external_loads(html) == {}  # build_book checks it too
    page = (html / "executed" / "00_viewer.html").read_text()
    assert "mathjax/es5/tex-mml-chtml.js" in page and (html / "mathjax/es5/tex-mml-chtml.js").is_file()
    assert '<iframe src="../sie3d-viewer/index.html?src=avatars%2Fface.rig.js' in page
    assert (html / "sie3d-viewer/avatars/face.rig.js").is_file() and (html / "sie3d-viewer/viewer.js").is_file()


def _iframe_image(browser, session) -> np.ndarray:
    rect = browser.evaluate(session, "(r => [r.left, r.top, r.right, r.bottom])("
                                     "document.querySelector('iframe').getBoundingClientRect())")
    x0, y0, x1, y1 = (round(v) for v in rect)
    return np.ascontiguousarray(browser.screenshot(session)[max(y0, 0):y1, max(x0, 0):x1])


def _assert_upright_face(image: np.ndarray, what: str) -> None:
    not_white = (image.astype(int).sum(-1) < 720).mean()
    assert not_white > 0.05 and image.std() > 20, f"blank canvas? non-white {not_white:.2f}, std {image.std():.1f}"
    faces = upright_faces(image)
    assert faces, f"dlib found no upright face in {what}"
    box = faces[0].box
    assert abs((box[0] + box[2]) / 2 - image.shape[1] / 2) < image.shape[1] / 3  # frontal: the face near the middle


def test_book_page_over_http_typesets_maths_and_shows_an_upright_face(site, browser):
    session = browser.open(f"{site}/executed/00_viewer.html")
    browser.wait_for(session, "!!document.querySelector('mjx-container')", timeout=60)  # MathJax, served locally
    browser.evaluate(session, "document.querySelector('iframe').scrollIntoView()")
    frame = "document.querySelector('iframe').contentDocument"
    browser.wait_for(session, READY.replace("document.body", f"{frame}.body").replace("document.title",
                                                                                        f"{frame}.title"), timeout=120)
    assert not browser.evaluate(session, f"{frame}.body.dataset.error || ''"), "the viewer reported an error"
    time.sleep(0.5)
    image = _iframe_image(browser, session)
    _save(image, "book_http")
    _assert_upright_face(image, "the book's viewer over HTTP")


def test_book_page_from_disk_shows_an_upright_face(built_book, browser):
    """file:// documents may not read each other's DOM, so the iframe is watched on screen."""
    html, _ = built_book
    session = browser.open((html / "executed" / "00_viewer.html").as_uri())
    browser.wait_for(session, "!!document.querySelector('iframe')", timeout=60)
    browser.evaluate(session, "document.querySelector('iframe').scrollIntoView()")
    deadline, image = time.monotonic() + 120, None
    while time.monotonic() < deadline:
        image = _iframe_image(browser, session)
        if (image.astype(int).sum(-1) < 600).mean() > 0.05 and upright_faces(image):
            break
        time.sleep(1.0)
    _save(image, "book_file")
    _assert_upright_face(image, "the book's viewer opened from disk")


def _assert_page_pose_is_the_rigs(browser, session, run: Path, step: int = 97) -> None:
    """The page's JavaScript pose at the sliders' c = own + 1·surprise's prototype against the package's
    reader (``Rig.pose``, itself checked against the trainer's ``MeshGaussians.to_world``): every step-th
    splat's mean within 1e-5 of the head size, covariance within 1e-3 of its largest entry."""
    rig = read_rig(run / "avatar.rig")
    posed = rig.pose(rig.coefficients + rig.emotion_coefficients("surprise"))
    page = browser.evaluate(session, f"sie3dSplats({step})")
    means, covs = (torch.tensor(page[k], dtype=torch.float64) for k in ("means", "covs"))
    expected_means = posed.means[::step].double()
    sigma = covariance_3d(posed.quats[::step], posed.scales[::step]).double()
    rows, cols = torch.triu_indices(3, 3)
    expected_covs = sigma[:, rows, cols]  # xx, xy, xz, yy, yz, zz
    assert means.shape == (len(expected_means) * 3,) and covs.shape == (len(expected_covs) * 6,)
    assert (means.view(-1, 3) - expected_means).abs().max() < 1e-5 * rig.header["head_size"]
    scale = expected_covs.abs().amax(-1, keepdim=True)
    assert ((covs.view(-1, 6) - expected_covs).abs() / scale).max() < 1e-3


@pytest.mark.parametrize("where", ["file", "http"])
def test_the_surprise_slider_opens_the_mouth_and_closes_it_again(where, built_book, site, browser, record_property,
                                                                 quick_rig_run):
    import skimage.data

    query = "src=avatars%2Fface.rig.js"
    session = _open_viewer(browser, f"{_base(where, built_book, site)}/index.html?{query}")
    own = browser.canvas(session, "#canvas")
    _save(own, f"rig_{where}_own")
    _assert_upright_face(own, f"the live rig ({where})")
    photo_gap = mouth_open(skimage.data.astronaut())
    gaps = {"own": mouth_open(own)}
    for value in (1, 0):
        browser.evaluate(session, f"sie3dSet({{surprise: {value}}})")
        image = browser.canvas(session, "#canvas")
        _save(image, f"rig_{where}_surprise{value}")
        gaps[value] = mouth_open(image)
        if value == 1:
            _assert_page_pose_is_the_rigs(browser, session, quick_rig_run)
    frame_ms = float(browser.evaluate(session, "document.body.dataset.frameMs"))
    record_property("frame_ms", frame_ms)
    print(f"[{where}] mouth opening (inter-ocular distances): photo {photo_gap:.3f}, canvas {gaps}; "
          f"frame time {frame_ms:.0f} ms (re-pose {browser.evaluate(session, 'document.body.dataset.poseMs')} ms)")
    assert gaps[1] - gaps["own"] >= 0.5 * photo_gap, gaps
    assert abs(gaps[0] - gaps["own"]) < 0.25 * photo_gap, gaps
    assert frame_ms > 0


@pytest.mark.parametrize("where", ["file", "http"])
def test_static_splats_are_upright_only_in_their_convention(where, built_book, site, browser):
    _, queries = built_book
    right = browser.canvas(_open_viewer(browser, f"{_base(where, built_book, site)}/index.html?{queries['plane']}"))
    _save(right, f"ply_{where}")
    assert upright_faces(right), "the COLMAP-convention .ply is not upright"
    wrong = browser.canvas(_open_viewer(browser, f"{_base(where, built_book, site)}/index.html?"
                                                 f"{queries['mislabelled']}"))
    _save(wrong, f"ply_wrong_{where}")
    assert wrong.std() > 20 and not upright_faces(wrong), "y-down data labelled y-up must come out upside down"


def test_without_webgl2_the_page_shows_the_turntable(built_book, browser):
    html, _ = built_book
    page = (html / "sie3d-viewer" / "index.html").as_uri()
    session = browser.open(f"{page}?src=avatars%2Fface.rig.js&turntable=avatars%2Fface.gif", size=(700, 512),
                           before_load="HTMLCanvasElement.prototype.getContext = function () { return null; };")
    browser.wait_for(session, READY, timeout=30)
    assert browser.evaluate(session, "document.body.dataset.error") == "no WebGL 2"
    browser.wait_for(session, "document.getElementById('turntable').naturalWidth > 0", timeout=10)
    assert browser.evaluate(session, "getComputedStyle(document.getElementById('fallback')).display") == "block"


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
    html, _ = built_book
    settings = tmp_path / "settings.json"
    settings.write_text(json.dumps(SUPERSPLAT_SETTINGS))
    page = tmp_path / "supersplat.html"
    made = subprocess.run([exe, "-g", "cpu", "-w", str(html.parents[2] / "plane.ply"), "--viewer-settings", str(settings),
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
