"""Expression control: free text -> class, intensity target of the emotion loss, sweep naming, animate."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import imageio.v3 as iio
import pytest
import torch

from sie3d.cli import main
from sie3d.commands._common import UserError
from sie3d.commands.generate import parse_intensities, sweep_record, sweep_run_name
from sie3d.face.emotion import emotion_loss
from sie3d.face.expression_text import UnknownExpression, emotion_class, intensity_target, match_words
from sie3d.run_dir import Summary, read_summary, write_summary
from sie3d.vocabulary import EMOTIONS
from sie3d.weights import is_available


@pytest.mark.parametrize("text, emotion", [
    ("surprised", "surprise"), ("furious", "angry"), ("smiling broadly", "happy"), ("Grinning", "happy"),
    ("happily", "happy"), ("terrified", "fear"), ("crying softly", "sad"), ("sobbing", "sad"),
    ("disgusted", "disgust"), ("stunned", "surprise"), ("calm and relaxed", "neutral"), ("angrily", "angry"),
    ("worried", "fear"), ("without a smile, frowning", "sad"), ("joyful", "happy"), ("neutral", "neutral"),
])
def test_word_forms_and_synonyms_map_to_their_class(text, emotion):
    match = match_words(text)
    assert (match.emotion, match.score, match.method) == (emotion, 1.0, "word list")
    assert match.text == text


def test_score_is_the_share_of_agreeing_words():
    match = match_words("smiling and laughing but a bit sad")
    assert match.emotion == "happy"
    assert match.score == pytest.approx(2 / 3)
    assert match.evidence == ("smiling->happy", "laughing->happy", "sad->sad")


@pytest.mark.parametrize("text, fragment", [("smug", "none of its words"), ("not happy", "none of its words"),
                                            ("happy and sad", "happy and sad equally"),
                                            ("isn't smiling", "none of its words")])
def test_unmapped_text_is_a_one_line_error_listing_the_classes(text, fragment):
    with pytest.raises(UnknownExpression) as info:
        match_words(text)
    message = str(info.value)
    assert "\n" not in message and fragment in message and f"unknown emotion {text!r}" in message
    assert all(e in message for e in EMOTIONS)


def test_cli_rejects_unmapped_text_before_any_work(tmp_path, capsys):
    assert main(["generate", str(tmp_path / "missing.png"), "--expression", "smug", "--out", str(tmp_path / "x")]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "unknown emotion 'smug'" in err and "surprise" in err
    assert not (tmp_path / "x").exists()


def test_emotion_class_prefers_the_recorded_class():
    assert emotion_class(SimpleNamespace(expression="smiling broadly", expression_class="")) == "happy"
    assert emotion_class(SimpleNamespace(expression="a face like thunder", expression_class="angry")) == "angry"
    with pytest.raises(UnknownExpression):
        emotion_class(SimpleNamespace(expression="x", expression_class="joy"))


def test_intensity_target_hand_values():
    happy, neutral = EMOTIONS.index("happy"), EMOTIONS.index("neutral")
    expected = torch.zeros(7)
    expected[happy], expected[neutral] = 0.25, 0.75
    assert torch.equal(intensity_target("happy", 0.25), expected)
    assert torch.equal(intensity_target("happy", 1.0), torch.eye(7)[happy])
    assert torch.equal(intensity_target("happy", 0.0), torch.eye(7)[neutral])
    assert torch.equal(intensity_target("neutral", 0.3), torch.eye(7)[neutral])
    with pytest.raises(ValueError):
        intensity_target("happy", 1.5)


def test_emotion_loss_with_the_intensity_target_is_smallest_at_p_equal_eta():
    q = intensity_target("surprise", 0.6)
    p = torch.tensor([[0.05, 0.05, 0.1, 0.1, 0.1, 0.4, 0.2]])
    by_hand = -(0.6 * torch.log(torch.tensor(0.4)) + 0.4 * torch.log(torch.tensor(0.2)))
    assert float(emotion_loss(p, q[None])) == pytest.approx(float(by_hand), rel=1e-6)
    # cross-entropy over logits: zero gradient exactly where softmax(logits) = q (on its support)
    logits = torch.log(q.clamp_min(1e-12)).requires_grad_(True)
    emotion_loss(logits[None], q[None], logits=True).backward()
    assert float(logits.grad.abs().max()) < 1e-6
    other = torch.log(intensity_target("surprise", 0.9).clamp_min(1e-12))
    assert float(emotion_loss(other[None], q[None], logits=True)) > float(emotion_loss(logits[None].detach(), q[None],
                                                                                      logits=True))


def test_intensities_and_sweep_directory_names():
    assert parse_intensities("0,0.25,0.5,0.75,1") == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert parse_intensities(None) is None
    assert [sweep_run_name(v) for v in (0.0, 0.25, 1.0)] == ["eta_0.00", "eta_0.25", "eta_1.00"]
    for bad in ("0,2", "a,b", "", "0.5,0.5"):
        with pytest.raises(UserError):
            parse_intensities(bad)


def test_sweep_record_reads_the_target_class_of_every_classifier(tmp_path):
    summary = Summary.from_dict({"frontal": {"face_found": True, "landmarks": {"mouth_open": 0.1},
                                             "emotion_fer": dict(zip(EMOTIONS, [0, 0, 0, 0.7, 0, 0, 0.3])),
                                             "emotion_faceapi": dict(zip(EMOTIONS, [0, 0, 0, 0.4, 0, 0, 0.6]))},
                                 "classifiers_missing": {"deepface": "not cached"}})
    record = sweep_record(0.5, tmp_path, summary, "happy")
    assert record["p_target"] == {"fer": 0.7, "faceapi": 0.4}
    assert record["classifiers_missing"] == ["deepface"] and record["eta"] == 0.5


@pytest.mark.skipif(not is_available("clip-bpe-vocab"), reason="clip-bpe-vocab not cached")
def test_clip_nearest_class_pools_the_end_of_text_token():
    from sie3d.diffusion.expression_match import nearest_class, pooled_text_features
    from sie3d.diffusion.tiny_networks import tiny_text_encoder
    from sie3d.diffusion.tokenizer import load_clip_tokenizer

    tokenizer = load_clip_tokenizer()
    torch.manual_seed(0)
    encoder = tiny_text_encoder().eval()
    prompts = ["happy expression", "a very surprised expression"]
    features = pooled_text_features(tokenizer, encoder, prompts)
    for i, prompt in enumerate(prompts):  # independent: the hidden state right after the last text token
        ids = tokenizer(prompt, return_tensors="pt").input_ids  # [1, n] with BOS and EOS, unpadded
        with torch.no_grad():
            hidden = encoder(input_ids=ids).last_hidden_state[0, -1]
        assert torch.allclose(features[i], hidden / hidden.norm(), atol=1e-5)
    near = nearest_class(tokenizer, encoder, "sad", EMOTIONS)
    assert near.emotion == "sad" and near.similarities["sad"] == pytest.approx(1.0, abs=1e-5)
    sims = torch.tensor([near.similarities[e] for e in EMOTIONS])
    assert near.probability == pytest.approx(float(torch.softmax(100 * sims, 0).max()), rel=1e-5)


# --------------------------------------------------------------------------- animate


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A run directory as sie3d generate leaves it (config.yaml + a checkpoint), without the optimisation."""
    from sie3d.avatar.gaussians import MeshGaussians
    from sie3d.avatar.template_files import load_template
    from sie3d.config import load_config, save_config
    from sie3d.train.checkpoint import checkpoint_path, save_checkpoint

    run = tmp_path_factory.mktemp("run")
    config = load_config(Path(__file__).resolve().parents[1] / "params/quick.yaml")
    save_config(config, run / "config.yaml")
    template = load_template(config.models)
    gaussians = MeshGaussians(template, config.gaussians)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():  # a trained-looking avatar: moved offsets and colours
        gaussians.params["xyz"].add_(0.1 * torch.randn(gaussians.params["xyz"].shape, generator=generator))
        gaussians.params["color"].add_(torch.randn(gaussians.params["color"].shape, generator=generator))
    expression = template.expression_coefficients(smile=0.7)
    save_checkpoint(checkpoint_path(run, 60), {"iteration": 60, "gaussians": gaussians.state_dict(),
                                                "expression": expression, "template_vertices": template.vertices})
    return run, template, gaussians, expression


def _deformed_by_hand(template, named: dict[str, float]) -> torch.Tensor:
    vertices = template.vertices.clone().double()
    for name, weight in named.items():
        vertices += weight * template.expression_basis[template.expression_names.index(name)].double()
    return vertices.float()


def test_animate_writes_frames_and_poses_to_the_target(tiny_run, tmp_path):
    from sie3d.avatar.ply import load_ply
    from sie3d.avatar.template import EXPRESSION_PROTOTYPES

    run, template, gaussians, start = tiny_run
    surprise = EXPRESSION_PROTOTYPES["surprise"]  # training's table: brow_raise 1, eyes_wide 0.6, mouth_open 0.8
    out = tmp_path / "anim.mp4"
    assert main(["animate", str(run), "--to", "surprise:0.5", "--frames", "5", "--ply-every", "2",
                 "--resolution", "32", "--orbit", "20", "--out", str(out)]) == 0
    assert iio.imread(out).shape[:3] == (5, 32, 32)
    plys = sorted(p.name for p in (tmp_path / "anim_ply").glob("*.ply"))
    assert plys == ["frame_0000.ply", "frame_0002.ply", "frame_0004.ply"]
    # last frame: the template deformed by 0.5 x the surprise prototype
    target = _deformed_by_hand(template, {name: 0.5 * weight for name, weight in surprise.items()})
    expected = gaussians.to_world(target)
    assert torch.allclose(load_ply(tmp_path / "anim_ply/frame_0004.ply").means, expected.means, atol=1e-5)
    # first frame: the avatar at its own coefficients (smile 0.7)
    first = gaussians.to_world(_deformed_by_hand(template, {"smile": 0.7}))
    assert torch.allclose(load_ply(tmp_path / "anim_ply/frame_0000.ply").means, first.means, atol=1e-5)
    # midway (frame 2 of 5): half of each
    middle = gaussians.to_world(_deformed_by_hand(template, {"smile": 0.35, **{name: 0.25 * weight for name, weight
                                                                               in surprise.items()}}))
    assert torch.allclose(load_ply(tmp_path / "anim_ply/frame_0002.ply").means, middle.means, atol=1e-5)


def test_animate_components_and_errors(tiny_run, tmp_path, capsys):
    from sie3d.avatar.animate import target_coefficients

    run, template, _, _ = tiny_run
    coeffs, text = target_coefficients("smile:0.6,brow_raise", template)
    assert torch.equal(coeffs, template.expression_coefficients(smile=0.6, brow_raise=1.0))
    coeffs, text = target_coefficients("smiling broadly:2", template)
    assert float(coeffs[template.expression_names.index("smile")]) == 2.0 and "happy" in text
    assert main(["animate", str(run), "--to", "smug", "--out", str(tmp_path / "a.mp4")]) == 1
    err = capsys.readouterr().err
    assert "unknown emotion 'smug'" in err and "brow_raise" in err and err.count("\n") == 1
    assert main(["animate", str(tmp_path), "--to", "happy", "--out", str(tmp_path / "a.mp4")]) == 1
    assert "config.yaml" in capsys.readouterr().err
    # a single frame is the target pose itself
    assert main(["animate", str(run), "--to", "neutral", "--frames", "1", "--resolution", "16",
                              "--out", str(tmp_path / "one.gif")]) == 0
    assert iio.imread(tmp_path / "one.gif").shape[0] == 1


def test_bake_writes_upright_static_expressions_and_write_rig_the_rig(tiny_run, tmp_path):
    from sie3d.avatar.ply import load_ply, ply_convention, read_ply
    from sie3d.avatar.rig import read_rig
    from sie3d.avatar.spz import load_spz
    from sie3d.avatar.template import EXPRESSION_PROTOTYPES

    run, template, gaussians, own = tiny_run
    out = tmp_path / "baked"
    assert main(["animate", str(run), "--bake", "neutral,happy,surprise:0.5", "--bake-dir", str(out),
                 "--write-rig", str(tmp_path / "a.rig")]) == 0
    assert sorted(p.name for p in out.iterdir()) == sorted(f"avatar_{n}.{ext}" for n in ("neutral", "happy",
                                                                                       "surprise_0.5")
                                                            for ext in ("spz", "ply"))
    for name, named in (("neutral", {}), ("surprise_0.5", {k: 0.5 * w for k, w in EXPRESSION_PROTOTYPES["surprise"].items()})):
        expected = gaussians.to_world(_deformed_by_hand(template, named)).detach()
        # .spz: sie3d's y-up world as is (SPZ's RUB axes), to its 1/4096 fixed point
        assert (load_spz(out / f"avatar_{name}.spz").means - expected.means).abs().max() <= 0.5 / 4096 + 1e-5
        ply = out / f"avatar_{name}.ply"
        assert ply_convention(ply) == "colmap"
        assert torch.allclose(load_ply(ply).means, expected.means, atol=1e-5)
        # upright in a y-down viewer: the crown (top in sie3d's world) has the smallest y in the file
        raw_y = torch.from_numpy(read_ply(ply)["vertex"]["y"].copy())
        assert int(raw_y.argmin()) == int(expected.means[:, 1].argmax())
    # the rig of a run that predates avatar.rig poses like the trainer
    rig = read_rig(tmp_path / "a.rig")
    error = (rig.pose().means - gaussians.to_world(template.deform(own)).detach().means).norm(dim=-1).max()
    assert error <= 1e-3 * rig.header["head_size"]
    assert main(["animate", str(run), "--bake", "smug", "--bake-dir", str(out)]) == 1
    assert main(["animate", str(run)]) == 1  # nothing asked


def test_an_older_person_fitted_run_needs_its_photo(tiny_run, tmp_path):
    """Checkpoints without template_vertices redo the person fit from inputs/photo_0.png."""
    import shutil

    from sie3d.train.checkpoint import checkpoint_path, load_checkpoint, save_checkpoint
    from sie3d.train.finished import load_finished_avatar

    run, *_ = tiny_run
    old = tmp_path / "old"
    shutil.copytree(run, old)
    path = checkpoint_path(old, 60)
    state = load_checkpoint(path)
    del state["template_vertices"]
    save_checkpoint(path, state)
    with pytest.raises(FileNotFoundError, match="photo_0.png"):
        load_finished_avatar(old)


def test_intensity_sweep_makes_one_run_per_eta_a_strip_a_video_and_a_table(tmp_path, monkeypatch, repo_root):
    import numpy as np

    import sie3d.generate

    calls = []

    def fake_generate(photos, config, out_dir, **kwargs):  # what generate leaves, without the optimisation
        eta = config.conditioning.eta_expr
        calls.append((eta, config.conditioning.expression, config.conditioning.expression_class))
        out_dir.mkdir(parents=True, exist_ok=True)  # the engine made it for the run's batch.log
        iio.imwrite(out_dir / "frontal.png", np.full((32, 32, 3), int(200 * eta), np.uint8))
        (out_dir / "manifest.json").write_text(json.dumps({"status": "finished",
                                                           "params_hash": config.params_hash()}))
        probs = dict(zip(EMOTIONS, [0, 0, 0, eta, 0, 0, 1 - eta]))
        summary = Summary.from_dict({"frontal": {"face_found": True, "emotion_fer": probs}, "classifiers_missing": {},
                                     "expression_match": kwargs["extra_manifest"]["expression_match"]})
        write_summary(out_dir, summary)
        return summary

    monkeypatch.setattr(sie3d.generate, "generate", fake_generate)
    out = tmp_path / "sweep"
    argv = ["generate", "photo.png", "--expression", "smiling broadly", "--intensity", "0,0.25,0.5,0.75,1",
            "--params", str(repo_root / "params/quick.yaml"), "--out", str(out)]
    assert main(argv) == 0
    etas = [0.0, 0.25, 0.5, 0.75, 1.0]
    assert calls == [(eta, "smiling broadly", "happy") for eta in etas]
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == [sweep_run_name(e) for e in etas]
    table = json.loads((out / "sweep.json").read_text())
    assert [r["eta"] for r in table["runs"]] == etas and table["emotion"] == "happy"
    assert [r["p_target"]["fer"] for r in table["runs"]] == etas
    assert read_summary(out / "eta_0.25").expression_match["emotion"] == "happy"
    assert iio.imread(out / "sweep.png").shape[:2] == (32, 5 * 32)
    assert iio.imread(out / "sweep.mp4").shape[0] == 5 * 8 + 4 * 6  # held 8 frames, cross-faded over 6
    calls.clear()
    assert main(argv) == 0 and calls == []  # finished runs with the same params are reused
