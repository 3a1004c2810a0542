"""End to end: `sie3d generate` on the astronaut with the quick preset (offline, CPU).

The expression is checked with dlib's 68 landmarks and face-api's expression network, two measures
the emotion loss never saw: "neutral" must flatten the photo's smile and read neutral, "surprise" must
open the mouth, raise the brows and read surprise; dlib must still judge the frontal render to be the
photo's person (descriptor distance < 0.6); YuNet must find a face at ±22.5° and at one of ±67.5°; the
back of the head must be nearer the photo's hair colour than its skin. Each avatar is generated once per
session (the ``quick_avatar`` fixture of conftest.py) and every property is its own test.
"""

import json

import pytest

from sie3d.avatar.ply import load_ply
from sie3d.run_dir import read_summary

OUTPUTS = ("avatar.ply", "avatar.spz", "avatar.rig", "turntable.mp4", "turntable.gif", "views.png", "frontal.png", "metrics.jsonl",
           "summary.json", "config.yaml", "manifest.json")
EXPRESSIONS = ["neutral", "surprise"]

pytestmark = [pytest.mark.slow, pytest.mark.parametrize("expression", EXPRESSIONS)]


def test_the_run_directory_is_complete(quick_avatar, expression):
    out = quick_avatar(expression)
    for name in OUTPUTS:
        assert (out / name).is_file(), name
    assert len(list((out / "views").glob("*.png"))) >= 4
    assert len(load_ply(out / "avatar.ply")) > 1000
    assert json.loads((out / "manifest.json").read_text())["status"] == "finished"
    assert read_summary(out).expression_match["emotion"] == expression  # how the CLI matched the text, recorded once


def test_the_frontal_render_keeps_the_identity(quick_avatar, expression):
    final = read_summary(quick_avatar(expression)).frontal
    assert final.face_found and final.dlib_distance < 0.6


def test_the_expression_changes_to_the_target(quick_avatar, expression):
    summary = read_summary(quick_avatar(expression))
    final, start = summary.frontal, summary.frontal_photo_expression
    before, after = start.landmarks, final.landmarks
    fer, held_out = final.emotions["fer"], final.emotions["faceapi"]
    assert max(fer, key=fer.get) == expression, final  # the loss's classifier: its target is the top class
    # the held-out judge (another lineage): towards the target, which is one of its two top classes (the
    # neutral astronaut reads fear 0.37 / neutral 0.32 since the hair is painted, book page 04 reports it)
    assert held_out[expression] > start.emotions["faceapi"][expression] + 0.2, (start, final)
    assert expression in sorted(held_out, key=held_out.get)[-2:], final
    if expression == "neutral":
        assert summary.photo.emotions["faceapi"]["happy"] > 0.9  # the photo smiles
        assert after["mouth_corner_lift"] < summary.photo.landmarks["mouth_corner_lift"] - 0.03
        assert after["mouth_open"] < summary.photo.landmarks["mouth_open"]
    else:
        assert after["mouth_open"] > before["mouth_open"] + 0.03
        assert after["brow_raise"] > before["brow_raise"]


def test_faces_are_found_in_the_front_views_only(quick_avatar, expression):
    views = {v["azimuth"]: v for v in read_summary(quick_avatar(expression)).views}
    assert all(views[a]["dlib"] and views[a]["yunet"] for a in (-22.5, 22.5))
    assert views[-67.5]["yunet"] or views[67.5]["yunet"]
    assert not any(views[a]["yunet"] for a in (-157.5, 157.5))  # no face on the back of the head


def test_the_back_of_the_head_has_the_hair_colour(quick_avatar, expression):
    back = read_summary(quick_avatar(expression)).back_of_head
    assert back["to_hair"] < back["to_skin"]
