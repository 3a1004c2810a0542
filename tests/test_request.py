"""The one request resolver (sie3d.request): word list, negation, CLIP fallback, refusals; and that the
batch manifest, `sie3d ablations` and `sie3d generate` all go through it."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

import sie3d.diffusion.expression_match as expression_match
from sie3d.batch.manifest import ManifestError, load_manifest
from sie3d.cli import main
from sie3d.config import load_config
from sie3d.diffusion.expression_match import TextSimilarityMatch
from sie3d.vocabulary import EMOTIONS
from sie3d.face.expression_text import NegatedExpression, UnknownExpression
from sie3d.request import MIN_CLIP_PROBABILITY, resolve_request
from sie3d.weights import ModelNotAvailable


@pytest.fixture
def quick(repo_root):
    return load_config(repo_root / "params/quick.yaml")


@pytest.fixture
def real_prior(repo_root):
    return load_config(repo_root / "params/quick.yaml", overrides=["models.prior=arc2face"])


@pytest.fixture
def fake_clip(monkeypatch):
    """CLIP's nearest class without the encoder: ``angry`` at the probability in ``fake_clip["p"]``."""
    state = {"p": 0.9, "loads": 0, "texts": []}

    def load():
        state["loads"] += 1
        return "tokenizer", "encoder"

    def nearest(tokenizer, encoder, text, classes, template):
        state["texts"].append(template.format(text))
        return TextSimilarityMatch("angry", state["p"], {c: (0.9 if c == "angry" else 0.1) for c in classes})

    monkeypatch.setattr(expression_match, "load_sd15_text_encoder", load)
    monkeypatch.setattr(expression_match, "nearest_class", nearest)
    return state


def test_word_list_request_and_its_config(quick):
    request = resolve_request("smiling broadly", 0.5, "wearing glasses", quick)
    assert (request.emotion, request.method, request.score) == ("happy", "word list", 1.0)
    assert request.match.evidence == ("smiling->happy",) and (request.intensity, request.accessory) == (0.5, "wearing glasses")
    cond = request.apply(quick).conditioning
    assert (cond.expression, cond.expression_class, cond.eta_expr, cond.accessory) == (
        "smiling broadly", "happy", 0.5, "wearing glasses")
    kept = resolve_request("surprised").apply(quick).conditioning  # η and accessory: the config's
    assert (kept.expression_class, kept.eta_expr, kept.accessory) == ("surprise", quick.conditioning.eta_expr,
                                                                      quick.conditioning.accessory)
    bearded = replace(quick, conditioning=replace(quick.conditioning, accessory="with beard"))
    assert resolve_request("calm", accessory="").apply(bearded).conditioning.accessory == ""  # "": none
    assert "η 0.5" in request.describe() and "'smiling broadly' -> happy" in request.describe()
    assert request.as_dict()["expression_match"]["emotion"] == "happy"


def test_negated_words_do_not_vote(quick):
    assert resolve_request("without a smile, frowning", config=quick).emotion == "sad"
    with pytest.raises(NegatedExpression, match="it negates an emotion"):
        resolve_request("not happy", config=quick)


@pytest.mark.parametrize("text", ["smug", "not happy", "happy and sad"])
def test_refusals_are_one_line_listing_the_classes(quick, text):
    with pytest.raises(UnknownExpression) as info:
        resolve_request(text, config=quick)
    assert "\n" not in str(info.value) and all(e in str(info.value) for e in EMOTIONS)


@pytest.mark.parametrize("eta", [1.5, -0.1, "high"])
def test_intensity_outside_zero_one_is_refused(eta):
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        resolve_request("happy", eta)


def test_clip_fallback_only_with_the_real_prior(quick, real_prior, fake_clip):
    request = resolve_request("a face like thunder", config=real_prior)
    assert (request.emotion, request.method, request.score) == ("angry", "clip text similarity", 0.9)
    assert "angry:0.900" in request.match.evidence and fake_clip["texts"] == ["a face like thunder expression"]
    assert request.apply(real_prior).conditioning.expression_class == "angry"
    assert resolve_request("grinning", config=real_prior).method == "word list"  # the list first
    with pytest.raises(UnknownExpression, match="none of its words"):  # the tiny prior: word list only
        resolve_request("a face like thunder", config=quick)
    with pytest.raises(UnknownExpression, match="none of its words"):  # no config: word list only
        resolve_request("a face like thunder")
    with pytest.raises(NegatedExpression):  # CLIP does not read negation: never asked
        resolve_request("not happy at all", config=real_prior)
    assert fake_clip["texts"] == ["a face like thunder expression"]
    assert fake_clip["loads"] == 1


def test_clip_below_the_threshold_or_unavailable_is_refused(real_prior, fake_clip, monkeypatch):
    fake_clip["p"] = MIN_CLIP_PROBABILITY - 0.1
    with pytest.raises(UnknownExpression, match="CLIP text similarity: nearest angry, p=0.40") as info:
        resolve_request("a face like thunder", config=real_prior)
    assert "\n" not in str(info.value) and "surprise" in str(info.value)

    def missing():
        raise ModelNotAvailable("sd15-text-encoder is not cached")

    monkeypatch.setattr(expression_match, "load_sd15_text_encoder", missing)
    with pytest.raises(UnknownExpression, match="none of its words"):
        resolve_request("a face like thunder", config=real_prior)


def _manifest(tmp_path, repo_root, **entries):
    (tmp_path / "alice.png").write_bytes(b"")
    path = tmp_path / "batch.yaml"
    path.write_text(json.dumps({"params": str(repo_root / "params/quick.yaml"), "photos": [str(tmp_path / "alice.png")],
                                "out": str(tmp_path / "out"), **entries}))
    return path


def test_the_batch_manifest_resolves_with_the_same_function(tmp_path, repo_root, fake_clip):
    (run,) = load_manifest(_manifest(tmp_path, repo_root, expressions=["smiling broadly"], intensities=[0.5])).runs()
    assert run.request == resolve_request("smiling broadly", 0.5)
    assert run.config().conditioning.expression_class == "happy"
    assert run.info()["expression_match"]["method"] == "word list"
    # the CLIP fallback too, where the prior is the real one (the encoder loaded once for all texts)
    path = _manifest(tmp_path, repo_root, expressions=["a face like thunder", "a stormy look"],
                     overrides=["models.prior=arc2face"])
    runs = load_manifest(path).runs()
    assert [r.request.method for r in runs] == ["clip text similarity"] * 2 and fake_clip["loads"] == 1
    assert runs[0].config().conditioning.expression_class == "angry"
    with pytest.raises(ManifestError, match="expressions: unknown emotion 'smug'"):
        load_manifest(_manifest(tmp_path, repo_root, expressions=["smug"]))


def test_the_cli_commands_refuse_with_the_resolver_message(tmp_path, repo_root, capsys):
    (tmp_path / "x.png").write_bytes(b"")
    assert main(["ablations", str(tmp_path / "x.png"), "--out", str(tmp_path / "grid"), "--expressions", "smug",
                 "--params", str(repo_root / "params/quick.yaml")]) == 1
    ablations = capsys.readouterr().err.strip()
    assert main(["generate", str(tmp_path / "x.png"), "--expression", "smug", "--out", str(tmp_path / "run")]) == 1
    generate = capsys.readouterr().err.strip()
    for err in (ablations, generate):
        assert "\n" not in err and "unknown emotion 'smug'" in err and "surprise" in err
    assert not (tmp_path / "grid").exists() and not (tmp_path / "run").exists()
