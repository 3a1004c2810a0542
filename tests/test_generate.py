"""End to end: `sie3d generate` on the astronaut with the quick preset (offline, CPU).

The expression is checked with dlib's 68 landmarks and face-api's expression network, two measures
the emotion loss never saw: "neutral" must flatten the photo's smile and read neutral, "surprise" must
open the mouth, raise the brows and read surprise; dlib must still judge the frontal render to be the
photo's person (descriptor distance < 0.6); YuNet must find a face at ±22.5° and at one of ±67.5°; the
back of the head must be nearer the photo's hair colour than its skin.
"""

import json

import imageio.v3 as iio
import numpy as np
import pytest
from skimage.data import astronaut

from sie3d.avatar.ply import load_ply
from sie3d.cli import main

OUTPUTS = ("avatar.ply", "turntable.mp4", "turntable.gif", "views.png", "frontal.png", "metrics.jsonl",
           "summary.json", "config.yaml", "manifest.json")


@pytest.fixture(scope="module")
def photo(tmp_path_factory):
    path = tmp_path_factory.mktemp("photo") / "astronaut.png"
    iio.imwrite(path, astronaut())
    return path


@pytest.mark.slow
@pytest.mark.parametrize("expression", ["neutral", "surprise"])
def test_generate_changes_the_expression_and_keeps_the_identity(tmp_path, photo, repo_root, expression):
    out = tmp_path / expression
    code = main(["generate", str(photo), "--expression", expression, "--out", str(out),
                 "--params", str(repo_root / "params/quick.yaml")])
    assert code == 0
    for name in OUTPUTS:
        assert (out / name).is_file(), name
    assert len(list((out / "views").glob("*.png"))) >= 4
    assert len(load_ply(out / "avatar.ply")) > 1000
    summary = json.loads((out / "summary.json").read_text())
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "finished"
    final, start = summary["frontal"], summary["frontal_photo_expression"]
    assert final["face_found"] and final["dlib_distance"] < 0.6
    before, after = start["landmarks"], final["landmarks"]
    top = {judge: max(final[judge], key=final[judge].get) for judge in ("emotion_fer", "emotion_faceapi")}
    assert top == {"emotion_fer": expression, "emotion_faceapi": expression}, final
    if expression == "neutral":
        assert summary["photo"]["emotion_faceapi"]["happy"] > 0.9  # the photo smiles
        assert after["mouth_corner_lift"] < summary["photo"]["landmarks"]["mouth_corner_lift"] - 0.03
        assert after["mouth_open"] < summary["photo"]["landmarks"]["mouth_open"]
    else:
        assert after["mouth_open"] > before["mouth_open"] + 0.03
        assert after["brow_raise"] > before["brow_raise"]
    views = {v["azimuth"]: v for v in summary["views"]}
    assert all(views[a]["dlib"] and views[a]["yunet"] for a in (-22.5, 22.5))
    assert views[-67.5]["yunet"] or views[67.5]["yunet"]
    assert not any(views[a]["yunet"] for a in (-157.5, 157.5))  # no face on the back of the head
    back = summary["back_of_head"]
    assert back["to_hair"] < back["to_skin"]


def test_back_of_head_colour_reads_the_top_of_the_silhouette():
    from sie3d.generate import back_of_head_colour

    image = np.full((100, 60, 3), 255, np.uint8)
    image[10:50, 10:50] = (90, 60, 30)  # hair over the upper part of the head
    image[50:90, 20:40] = (220, 180, 160)  # neck and skin below
    hair, skin = np.array([90, 60, 30]) / 255, np.array([220, 180, 160]) / 255
    back = back_of_head_colour(image, {"hair": hair.tolist(), "skin": skin.tolist()})
    assert np.allclose(back["colour"], hair) and back["to_hair"] < 1e-6
    assert back["to_skin"] == pytest.approx(np.linalg.norm([130, 120, 130]))
    assert back_of_head_colour(image, {})["to_hair"] is None  # no person colours: nothing to compare
    assert back_of_head_colour(np.full((10, 10, 3), 255, np.uint8), {})["colour"] is None  # nothing rendered


def test_view_faces_finds_the_photo_face_and_nothing_on_a_blank_view():
    from sie3d.generate import view_faces

    views = np.stack([astronaut()[:256, 100:356], np.full((256, 256, 3), 255, np.uint8)])
    face, blank = view_faces(views, [-22.5, 180.0])
    assert face["azimuth"] == -22.5 and face["dlib"] and face["yunet"] > 0.8
    assert blank == {"azimuth": 180.0, "dlib": False, "yunet": None}
