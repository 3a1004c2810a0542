"""End to end: `sie3d generate` on the astronaut with the quick preset (offline, CPU).

The expression is checked with dlib's 68 landmarks, a measure the emotion loss never saw: "neutral"
must flatten the photo's smile, "surprise" must open the mouth and raise the brows; dlib must still
judge the frontal render to be the photo's person (descriptor distance < 0.6).
"""

import json

import imageio.v3 as iio
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
    if expression == "neutral":
        assert after["mouth_corner_lift"] < before["mouth_corner_lift"] - 0.03
        assert after["mouth_open"] < before["mouth_open"]
        assert final["emotion_fer"]["neutral"] > 10 * start["emotion_fer"]["neutral"]
    else:
        assert after["mouth_open"] > before["mouth_open"] + 0.08
        assert after["brow_raise"] > before["brow_raise"]
        assert max(final["emotion_fer"], key=final["emotion_fer"].get) == "surprise"


def test_generate_refuses_to_overwrite_and_bad_expression(tmp_path, photo, capsys):
    assert main(["generate", str(photo), "--expression", "smug", "--out", str(tmp_path / "x")]) == 1
    assert "unknown emotion 'smug'" in capsys.readouterr().err
    (tmp_path / "y/checkpoints").mkdir(parents=True)
    (tmp_path / "y/checkpoints/ckpt_000001.pt").write_bytes(b"")
    assert main(["generate", str(photo), "--out", str(tmp_path / "y")]) == 1
    assert "--resume" in capsys.readouterr().err
    assert main(["generate", str(tmp_path / "missing.png"), "--out", str(tmp_path / "z")]) == 1
