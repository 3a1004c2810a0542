"""Ablation deltas, the resumable ablation grid (with a fake generator, then one real run), the paper-table
helpers."""

import json

import matplotlib
import pytest
import torch
from skimage.data import astronaut

from sie3d.cli import main
from sie3d.config import load_config
from sie3d.evaluation.ablations import (
    ABLATIONS,
    ablation_label,
    is_finished,
    paper_rows,
    run_ablation_grid,
    run_ablations,
)
from sie3d.evaluation.paper_tables import (
    TABLE1,
    TABLE2,
    OurRow,
    Provenance,
    comparison_bar_plot,
    comparison_markdown,
    markdown_table,
)
from sie3d.render.media import save_image
from sie3d.run_dir import RunDir, read_summary

matplotlib.use("Agg")

#: what each delta must change (section, key, value) and nothing else
EXPECTED_DELTAS = {
    "no_semantic_embedding": ("conditioning", "semantic_embedding", False),
    "no_emotion_loss": ("loss", "lambda_emotion", 0.0),
    "sds": ("guidance", "method", "sds"),
    "released_code_conditioning": ("conditioning", "mode", "released-code"),
}


def _flatten(tree, prefix=""):
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict) and key not in ("view_prompts",):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


@pytest.mark.parametrize("preset", ["quick.yaml", "paper.yaml"])
def test_each_delta_changes_exactly_its_key(repo_root, preset):
    base = _flatten(load_config(repo_root / "params" / preset).to_dict())
    assert ABLATIONS[0][0] == "full" and ABLATIONS[0][1] is None
    assert {name for name, _, _ in ABLATIONS[1:]} == set(EXPECTED_DELTAS)
    for name, delta, _ in ABLATIONS[1:]:
        changed = _flatten(load_config(repo_root / "params" / preset, delta).to_dict())
        diff = {k for k in base if base[k] != changed[k]}
        section, key, value = EXPECTED_DELTAS[name]
        assert diff == {f"{section}.{key}"}, name
        assert changed[f"{section}.{key}"] == value


def _fake_generator(calls, finish=True):
    def generate(config, photo, run_dir, info):
        calls.append((info["ablation"], info["identity"], config.conditioning.expression, photo.name))
        run = RunDir.create(run_dir, config, extra=info)
        if finish:
            run.finish()

    return generate


def _fake_evaluator(calls):
    def evaluate(run_dir):
        calls.append(run_dir)
        (run_dir / "metrics.json").write_text(json.dumps({"run": str(run_dir)}))

    return evaluate


def test_grid_generates_everything_once_then_skips_finished_runs(tmp_path, repo_root):
    photos = [tmp_path / "alice.png", tmp_path / "bob.jpg"]
    preset = repo_root / "params/quick.yaml"
    ablations = ABLATIONS[:3]
    generated, evaluated = [], []
    grid = run_ablation_grid(photos, ["neutral", "happy"], preset, tmp_path / "grid",
                             _fake_generator(generated), _fake_evaluator(evaluated), ablations=ablations)
    assert len(grid) == len(generated) == len(evaluated) == 3 * 2 * 2
    assert {g.status for g in grid} == {"generated"}
    assert ("no_emotion_loss", "bob", "happy", "bob.jpg") in generated
    run = tmp_path / "grid" / "no_emotion_loss" / "bob__happy"
    assert is_finished(run)
    assert load_config(run / "config.yaml").loss.lambda_emotion == 0.0
    assert json.loads((run / "manifest.json").read_text())["ablation"] == "no_emotion_loss"

    # second pass: nothing to do
    generated.clear()
    evaluated.clear()
    grid = run_ablation_grid(photos, ["neutral", "happy"], preset, tmp_path / "grid",
                             _fake_generator(generated), _fake_evaluator(evaluated), ablations=ablations)
    assert generated == [] and evaluated == [] and {g.status for g in grid} == {"skipped"}

    # an unevaluated run is only evaluated; a crashed one (status "running") is generated again
    (tmp_path / "grid/full/alice__happy/metrics.json").unlink()
    manifest = tmp_path / "grid/no_semantic_embedding/bob__neutral/manifest.json"
    data = json.loads(manifest.read_text())
    data["status"] = "running"
    manifest.write_text(json.dumps(data))
    grid = run_ablation_grid(photos, ["neutral", "happy"], preset, tmp_path / "grid",
                             _fake_generator(generated), _fake_evaluator(evaluated), ablations=ablations)
    assert generated == [("no_semantic_embedding", "bob", "neutral", "bob.jpg")]
    assert sorted(p.name for p in evaluated) == ["alice__happy", "bob__neutral"]
    statuses = {(g.ablation, g.identity, g.expression): g.status for g in grid}
    assert statuses[("full", "alice", "happy")] == "evaluated"
    assert statuses[("no_semantic_embedding", "bob", "neutral")] == "generated"
    assert list(statuses.values()).count("skipped") == 10


def test_grid_errors(tmp_path, repo_root):
    preset = repo_root / "params/quick.yaml"
    with pytest.raises(ValueError, match="distinct file names"):
        run_ablation_grid([tmp_path / "a/x.png", tmp_path / "b/x.png"], ["neutral"], preset, tmp_path,
                          _fake_generator([]), _fake_evaluator([]))
    with pytest.raises(RuntimeError, match="not 'finished'"):
        run_ablation_grid([tmp_path / "x.png"], ["neutral"], preset, tmp_path / "grid",
                          _fake_generator([], finish=False), _fake_evaluator([]), ablations=ABLATIONS[:1])
    with pytest.raises(RuntimeError, match="did not write metrics.json"):
        run_ablation_grid([tmp_path / "y.png"], ["neutral"], preset, tmp_path / "grid2",
                          _fake_generator([]), lambda run_dir: None, ablations=ABLATIONS[:1])
    with pytest.raises(KeyError, match="unknown ablation"):
        ablation_label("no_ism")


def test_grid_refuses_finished_runs_made_with_other_params(tmp_path, repo_root):
    preset = repo_root / "params/quick.yaml"
    photos = [tmp_path / "x.png"]
    run_ablation_grid(photos, ["neutral"], preset, tmp_path / "grid", _fake_generator([]), _fake_evaluator([]),
                      ablations=ABLATIONS[:1])
    generated = []
    with pytest.raises(ValueError, match="generated with other params .* delete it or choose another"):
        run_ablation_grid(photos, ["neutral"], preset, tmp_path / "grid", _fake_generator(generated),
                          _fake_evaluator([]), ablations=ABLATIONS[:1], overrides=["train.iterations=7"])
    assert generated == []


def test_run_ablations_checks_every_photo_before_any_run(tmp_path, repo_root):
    present = save_image(astronaut()[:64, :64], tmp_path / "present.png")
    with pytest.raises(FileNotFoundError, match="missing.png"):
        run_ablations([present, tmp_path / "missing.png"], ["neutral"], repo_root / "params/quick.yaml",
                      tmp_path / "grid")
    assert not (tmp_path / "grid").exists()


# --------------------------------------------------------------------------- the real wiring

TINY = ["render.resolution=32", "render.frontal_resolution=128", "eval.turntable_frames=2"]


@pytest.fixture
def one_torch_thread():
    """The avatar is small: on a shared 2-core CPU one thread is several times faster than two."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.mark.slow  # 18 s alone on 2 cores, 50 s when the cores are shared
@pytest.mark.filterwarnings("ignore::sie3d.face.detect.FaceWarning")  # the astronaut's suit: a 2nd weak "face"
def test_run_ablations_generates_evaluates_and_reuses_real_runs(tmp_path, repo_root, capsys,
                                                                 one_torch_thread):
    """One real quick-preset ablation cell (2 iterations), evaluated offline; then reused by the CLI."""
    photo = save_image(astronaut(), tmp_path / "photos" / "astronaut.png")
    out = tmp_path / "grid"
    lines = []
    study = run_ablations([photo], ["neutral"], repo_root / "params/quick.yaml", out, iterations=2,
                          ablations=[a for a in ABLATIONS if a[0] == "no_emotion_loss"], overrides=TINY,
                          log=lines.append)
    run_dir = out / "no_emotion_loss" / "astronaut__neutral"
    assert [(r.ablation, r.status, r.run_dir) for r in study.runs] == [("no_emotion_loss", "generated", run_dir)]
    assert study.run_dir("no_emotion_loss", "astronaut", "neutral") == run_dir
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["status"] == "finished" and manifest["ablation"] == "no_emotion_loss"
    config = load_config(run_dir / "config.yaml")
    assert config.loss.lambda_emotion == 0.0 and config.train.iterations == 2 and config.render.resolution == 32
    assert read_summary(run_dir).iterations == 2

    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["group"] == "no_emotion_loss" and metrics["n_renders"] == 1 + config.eval.n_views
    assert metrics["identity"]["model"] == "sface" and metrics["emotion"]["loss"]["classifier"] == "fer"
    assert metrics["identity_conditioning"]["model"] == "dlib" and metrics["emotion"]["held_out"]["classifier"] == "faceapi"
    assert study.evaluation_dir == out / "evaluation"
    assert [g["group"] for g in study.evaluation["groups"]] == ["no_emotion_loss"]
    assert "w/o perceptual expression loss" in [r.method for r in paper_rows(study.evaluation)[0]]
    assert (out / "evaluation" / "metrics.md").is_file()
    assert any("generating no_emotion_loss/astronaut__neutral" in line for line in lines)

    # the CLI finds the finished run and only rebuilds the tables
    assert main(["ablations", str(photo), "--out", str(out), "--only", "no_emotion_loss", "--iterations", "2",
                 "--params", str(repo_root / "params/quick.yaml"), *[f"--set={o}" for o in TINY]]) == 0
    captured = capsys.readouterr()
    assert "no_emotion_loss/astronaut__neutral: skipped" in captured.err
    assert "# Evaluation of 1 run(s)" in captured.out
    # asking for other params is an error, not a silent reuse
    assert main(["ablations", str(photo), "--out", str(out), "--only", "no_emotion_loss", "--iterations", "3",
                 "--params", str(repo_root / "params/quick.yaml"), *[f"--set={o}" for o in TINY]]) == 1
    assert "generated with other params" in capsys.readouterr().err

    # a run that stopped before finishing continues from its checkpoint instead of failing on the old files
    data = json.loads((run_dir / "manifest.json").read_text())
    data["status"] = "interrupted"
    (run_dir / "manifest.json").write_text(json.dumps(data))
    lines.clear()
    study = run_ablations([photo], ["neutral"], repo_root / "params/quick.yaml", out, iterations=2,
                          ablations=[a for a in ABLATIONS if a[0] == "no_emotion_loss"], overrides=TINY,
                          log=lines.append)
    assert [r.status for r in study.runs] == ["generated"]
    assert any("(resuming)" in line for line in lines) and any("resumed from" in line for line in lines)
    assert json.loads((run_dir / "manifest.json").read_text())["status"] == "finished"


# --------------------------------------------------------------------------- paper tables


def test_paper_tables_are_consistent():
    sie3d, full = TABLE1[-1], TABLE2[0]
    assert (sie3d.fid, sie3d.id, sie3d.nps) == (full.fid, full.id, full.nps)
    assert [row.method for row in TABLE2] == [label for _, _, label in ABLATIONS[:3]]


def test_markdown_table_and_errors():
    assert markdown_table(["a", "b"], [[1, "x|y"]]) == "| a | b |\n| --- | --- |\n| 1 | x\\|y |"
    with pytest.raises(ValueError, match="one cell per header"):
        markdown_table(["a"], [[1, 2]])


def test_comparison_places_ours_beside_the_paper_and_labels_substitutes():
    provenance = Provenance(preset="quick", frechet_label="Fréchet distance in dlib-descriptor space (not FID)",
                            identity_model="dlib", loss_classifier="fer", held_out_classifier="deepface")
    ours = [OurRow("full", fid=0.1234, id=0.91, nps_loss=0.5, nps_held_out=None, n_runs=2),
            OurRow("SDS instead of ISM", fid=0.2, id=0.8, nps_loss=1.5, nps_held_out=None, n_runs=2)]
    text = comparison_markdown(ours, provenance)
    lines = text.splitlines()
    full_paper = next(i for i, line in enumerate(lines) if line.startswith("| full | paper"))
    assert lines[full_paper + 1].startswith("| full | ours (quick) | — | 0.1234 | 0.9100 | 0.5000 | n/a | 2 |")
    assert "| 227.11 |" in lines[full_paper]
    assert "Fréchet distance in dlib-descriptor space (not FID) ↓" in text and "not comparable" in text
    assert "| w/o semantic embedding | paper | 238.43 |" in text
    assert text.index("SDS instead of ISM") > text.index("w/o perceptual expression loss")
    inception = Provenance("paper", "FID (Inception-v3 pool features, clean-fid 'clean' resize)", "arcface",
                           "deepface", "fer")
    text = comparison_markdown([OurRow("full", fid=250.0, id=0.4, nps_loss=0.3, nps_held_out=0.9, n_runs=1)],
                               inception, paper=TABLE1, title="Table 1")
    assert "| full | ours (paper) | 250.00 | 0.4000 | 0.3000 | 0.9000 | 1 |" in text
    assert "FID ↓ (paper only)" not in text and "| SIE3D | paper | 227.11 |" in text

    fig = comparison_bar_plot(ours, provenance)
    assert len(fig.axes) == 6
    titles = [ax.get_title() for ax in fig.axes]
    assert any("not FID" in t for t in titles) and any("dlib" in t for t in titles)
    assert len(fig.axes[5].patches) == 2 * 4  # loss and held-out NPS bars for 4 methods
    assert [t.get_text() for t in fig.axes[3].texts] == []
    fig = comparison_bar_plot([OurRow("full", id=0.9, nps_loss=1.0)], provenance)
    assert [t.get_text() for t in fig.axes[3].texts] == ["not measured"]  # no distance: said, not an empty axis
    assert [t.get_text() for t in fig.axes[5].texts] == []
    assert any("held out: deepface" in t.get_text() for t in fig.axes[5].get_legend().get_texts())
