"""End to end: `sie3d generate` on the astronaut with the quick preset (offline, CPU).

The expression is checked with dlib's 68 landmarks and face-api's expression network, two measures
the emotion loss never saw: "neutral" must flatten the photo's smile and read neutral, "surprise" must
open the mouth, raise the brows and read surprise; dlib must still judge the frontal render to be the
photo's person (descriptor distance < 0.6); YuNet must find a face at ±22.5° and at one of ±67.5°; the
back of the head must be nearer the photo's hair colour than its skin.
"""

import json

import imageio.v3 as iio
import pytest
from skimage.data import astronaut

from sie3d.avatar.ply import load_ply
from sie3d.cli import main
from sie3d.run_dir import read_summary

OUTPUTS = ("avatar.ply", "avatar.spz", "avatar.rig", "turntable.mp4", "turntable.gif", "views.png", "frontal.png", "metrics.jsonl",
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
    summary = read_summary(out)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "finished"
    assert summary.expression_match["emotion"] == expression  # how the CLI matched the text, recorded once
    final, start = summary.frontal, summary.frontal_photo_expression
    assert final.face_found and final.dlib_distance < 0.6
    before, after = start.landmarks, final.landmarks
    top = {judge: max(final.emotions[judge], key=final.emotions[judge].get) for judge in ("fer", "faceapi")}
    assert top == {"fer": expression, "faceapi": expression}, final
    if expression == "neutral":
        assert summary.photo.emotions["faceapi"]["happy"] > 0.9  # the photo smiles
        assert after["mouth_corner_lift"] < summary.photo.landmarks["mouth_corner_lift"] - 0.03
        assert after["mouth_open"] < summary.photo.landmarks["mouth_open"]
    else:
        assert after["mouth_open"] > before["mouth_open"] + 0.03
        assert after["brow_raise"] > before["brow_raise"]
    views = {v["azimuth"]: v for v in summary.views}
    assert all(views[a]["dlib"] and views[a]["yunet"] for a in (-22.5, 22.5))
    assert views[-67.5]["yunet"] or views[67.5]["yunet"]
    assert not any(views[a]["yunet"] for a in (-157.5, 157.5))  # no face on the back of the head
    back = summary.back_of_head
    assert back["to_hair"] < back["to_skin"]
