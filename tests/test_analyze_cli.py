"""``sie3d analyze``: real photo end to end, warnings, and one-line errors for bad input."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
import skimage.data
from PIL import Image

from sie3d.cli import main
from sie3d.weights import is_available

needs_fer = pytest.mark.skipif(not is_available("fer-emotion"),
                               reason="fer-emotion not cached: sie3d weights download --offline-set")


@pytest.fixture(scope="module")
def astronaut_png(tmp_path_factory):
    path = tmp_path_factory.mktemp("photos") / "astronaut.png"
    Image.fromarray(skimage.data.astronaut()).save(path)
    return path


def run_cli(capsys, *argv):
    code = main(["analyze", *map(str, argv)])
    out, err = capsys.readouterr()
    return code, out, err


@needs_fer
def test_json_report_on_the_astronaut(capsys, astronaut_png):
    code, out, err = run_cli(capsys, astronaut_png, "--json")
    assert code == 0
    report = json.loads(out)
    assert len(report["faces"]) == 2 and report["selected_face"] == 0
    assert report["faces"][0]["backend"] == "dlib" and len(report["faces"][0]["landmarks"]) == 5
    assert report["identity"]["dim"] in (128, 512) and report["identity"]["norm"] == pytest.approx(1.0)
    fer = report["emotion"]["fer"]
    assert fer["top"] == "happy" and sum(fer["probabilities"].values()) == pytest.approx(1.0, abs=1e-3)
    assert report["emotion"]["deepface"]["available"] or "sie3d weights download deepface-emotion" \
        in report["emotion"]["deepface"]["reason"]
    faceapi = report["emotion"]["faceapi"]  # the held-out judge, offline
    assert faceapi["available"] and faceapi["top"] == "happy" and faceapi["role"].startswith("held-out")
    held_out = report["identity_held_out"]
    assert held_out["encoder"] in ("sface", "arcface-metric") and held_out["encoder"] != report["identity"]["encoder"]
    assert held_out["norm"] == pytest.approx(1.0)
    assert report["expression_measures"]["mouth_corner_lift"] > 0
    assert any("2 faces found" in w for w in report["warnings"])
    assert err.count("sie3d analyze: warning: 2 faces found") == 1 and "Traceback" not in err


@needs_fer
def test_text_report_with_the_haar_detector(capsys, astronaut_png):
    code, out, err = run_cli(capsys, astronaut_png, "--detector", "haar")
    assert code == 0 and err == ""
    assert "1 found by haar" in out and "fer: happy" in out and "mouth_corner_lift" in out
    assert "faceapi: happy" in out and "identity  held-out: " in out and "identity  conditioning: " in out


@needs_fer
@pytest.mark.parametrize("kind, warning", [("grey", "greyscale"), ("rgba", "transparent pixels")])
def test_converted_photos_warn_on_one_line(capsys, tmp_path, kind, warning):
    image = skimage.data.astronaut()
    if kind == "grey":
        pil = Image.fromarray(image).convert("L")
    else:
        rgba = np.dstack([image, np.full(image.shape[:2], 255, np.uint8)])
        rgba[:10, :10, 3] = 0
        pil = Image.fromarray(rgba)
    pil.save(tmp_path / f"{kind}.png")
    code, out, err = run_cli(capsys, tmp_path / f"{kind}.png", "--detector", "haar")
    assert code == 0 and "emotion" in out
    lines = err.strip().splitlines()
    assert any(line.startswith("sie3d analyze: warning:") and warning in line for line in lines)


def write_case(tmp_path, case):
    path = tmp_path / f"{case}.png"
    if case == "text":
        path.write_text("hello")
    elif case == "truncated":
        buffer = io.BytesIO()
        Image.fromarray(skimage.data.astronaut()).save(buffer, "PNG")
        path.write_bytes(buffer.getvalue()[:5000])
    elif case == "tiny":
        Image.fromarray(np.zeros((40, 40, 3), np.uint8)).save(path)
    elif case == "no_face":
        Image.fromarray(np.full((200, 200, 3), 120, np.uint8)).save(path)
    return path


@pytest.mark.parametrize("case, message", [
    ("missing", "photo not found"),
    ("text", "not an image file"),
    ("truncated", "truncated or corrupt"),
    ("tiny", "a face needs at least 64 px"),
    ("no_face", "no face found"),
])
def test_bad_input_is_one_error_line_with_exit_1(capsys, tmp_path, case, message):
    code, out, err = run_cli(capsys, write_case(tmp_path, case))
    assert code == 1 and out == ""
    assert err.count("\n") == 1 and err.startswith("sie3d analyze: error:") and message in err


def test_scrfd_without_weights_says_how_to_fetch_them(capsys, astronaut_png, sie3d_home):
    pytest.importorskip("onnxruntime")
    code, _, err = run_cli(capsys, astronaut_png, "--detector", "scrfd")
    assert code == 1 and "sie3d weights download antelopev2" in err and err.count("\n") == 1


def test_unexpected_failures_are_still_one_line(capsys, astronaut_png, monkeypatch):
    import sie3d.face.detect as detect

    def broken(*args, **kwargs):
        raise RuntimeError("dlib exploded")

    monkeypatch.setattr(detect, "detect_faces", broken)
    code, _, err = run_cli(capsys, astronaut_png)
    assert code == 1 and err == "sie3d analyze: error: RuntimeError: dlib exploded\n"
