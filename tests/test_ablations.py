"""Ablation deltas, the resumable ablation grid on the batch engine, serially in process (with a fake
generator, then one real run), the paper-table helpers."""

import json

import matplotlib
import pytest
import torch
from skimage.data import astronaut

from sie3d.cli import main
from sie3d.config import load_config
from sie3d.batch.engine import EVALUATION_DIR, BatchError, evaluate_grid, run_batch
from sie3d.batch.manifest import ManifestError, ablation_spec
from sie3d.evaluation.ablations import ABLATIONS, ablation_label, paper_rows
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
from sie3d.run_dir import SUMMARY_FILE, RunDir, is_finished, read_summary

matplotlib.use("Agg")

#: what each delta must change (section, key, value) and nothing else
EXPECTED_DELTAS = {
    "no_semantic_embedding": ("conditioning", "semantic_embedding", False),
    "no_emotion_loss": ("loss", "lambda_emotion", 0.0),
    "sds": ("guidance", "method", "sds"),
    "released_code_conditioning": ("conditioning", "mode", "released-code"),
    "no_expression_prior": ("loss", "lambda_expression_prior", 0.0),
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
        # a delta to what the preset already has (paper.yaml has no prototype floor) changes nothing
        assert diff == (set() if base[f"{section}.{key}"] == value else {f"{section}.{key}"}), name
        assert changed[f"{section}.{key}"] == value


def _fake_generator(calls, finish=True):
    """Stands in for sie3d.generate.generate as the engine's run function: a manifest and a summary."""
    def generate(run, config, resume, models, log):
        calls.append((run.ablation, run.person.name, config.conditioning.expression, run.person.photos[0].name))
        run_dir = RunDir.create(run.run_dir, config, extra=run.info())
        if finish:
            (run.run_dir / SUMMARY_FILE).write_text("{}")
            run_dir.finish()

    return generate


def _fake_evaluator(calls):
    def evaluate(run_dirs, out_dir):
        calls.extend(run_dirs)
        for run_dir in run_dirs:
            (run_dir / "metrics.json").write_text(json.dumps({"run": str(run_dir)}))

    return evaluate


def _photos(tmp_path, *names):
    for name in names:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"not decoded by the fake generator")
    return [tmp_path / name for name in names]


def _grid(photos, expressions, preset, out, generate_fn, evaluate_fn, ablations, overrides=()):
    spec = ablation_spec(photos, expressions, [preset], out, ablations, overrides)
    return run_batch(spec.runs(), spec.out, run_fn=generate_fn, evaluate_fn=evaluate_fn, progress=False,
                     log=lambda line: None, serial=True)


def test_grid_generates_everything_once_then_skips_finished_runs(tmp_path, repo_root):
    photos = _photos(tmp_path, "alice.png", "bob.jpg")
    preset = repo_root / "params/quick.yaml"
    ablations = [name for name, _, _ in ABLATIONS[:3]]
    generated, evaluated = [], []
    grid = _grid(photos, ["neutral", "happy"], preset, tmp_path / "grid", _fake_generator(generated),
                 _fake_evaluator(evaluated), ablations)
    assert len(grid.outcomes) == len(generated) == len(evaluated) == 3 * 2 * 2
    assert {g.status for g in grid.outcomes} == {"generated"}
    assert ("no_emotion_loss", "bob", "happy", "bob.jpg") in generated
    run = tmp_path / "grid" / "no_emotion_loss" / "bob__happy"
    assert is_finished(run) and (run / "metrics.json").is_file()
    assert load_config(run / "config.yaml").loss.lambda_emotion == 0.0
    assert json.loads((run / "manifest.json").read_text())["ablation"] == "no_emotion_loss"

    # second pass: nothing to generate (the evaluation is redone over every finished run)
    generated.clear()
    evaluated.clear()
    grid = _grid(photos, ["neutral", "happy"], preset, tmp_path / "grid", _fake_generator(generated),
                 _fake_evaluator(evaluated), ablations)
    assert generated == [] and {g.status for g in grid.outcomes} == {"skipped"} and len(evaluated) == 12

    # a crashed run (status "running") is generated again
    manifest = tmp_path / "grid/no_semantic_embedding/bob__neutral/manifest.json"
    data = json.loads(manifest.read_text())
    data["status"] = "running"
    manifest.write_text(json.dumps(data))
    grid = _grid(photos, ["neutral", "happy"], preset, tmp_path / "grid", _fake_generator(generated),
                 _fake_evaluator(evaluated), ablations)
    assert generated == [("no_semantic_embedding", "bob", "neutral", "bob.jpg")]
    statuses = {o.name: o.status for o in grid.outcomes}
    assert statuses["no_semantic_embedding/bob__neutral"] == "generated"
    assert list(statuses.values()).count("skipped") == 11


def test_grid_errors(tmp_path, repo_root):
    preset = repo_root / "params/quick.yaml"
    with pytest.raises(ManifestError, match="distinct names"):
        ablation_spec(_photos(tmp_path, "a/x.png", "b/x.png"), ["neutral"], [preset], tmp_path)
    with pytest.raises(ManifestError, match="unknown ablation"):
        ablation_spec(_photos(tmp_path, "x.png"), ["neutral"], [preset], tmp_path, ["no_ism"])
    grid = _grid(_photos(tmp_path, "x.png"), ["neutral"], preset, tmp_path / "grid", _fake_generator([], finish=False),
                 _fake_evaluator([]), ["full"])
    assert [o.status for o in grid.outcomes] == ["failed"] and "not 'finished'" in grid.failed[0].error
    with pytest.raises(KeyError, match="unknown ablation"):
        ablation_label("no_ism")


def test_grid_refuses_finished_runs_made_with_other_params(tmp_path, repo_root):
    preset = repo_root / "params/quick.yaml"
    photos = _photos(tmp_path, "x.png")
    _grid(photos, ["neutral"], preset, tmp_path / "grid", _fake_generator([]), _fake_evaluator([]), ["full"])
    generated = []
    with pytest.raises(BatchError, match="generated with other params .* delete it or choose another"):
        _grid(photos, ["neutral"], preset, tmp_path / "grid", _fake_generator(generated), _fake_evaluator([]),
              ["full"], overrides=["train.iterations=7"])
    assert generated == []


def test_grid_resolves_free_text_as_generate_does(tmp_path, repo_root):
    spec = ablation_spec(_photos(tmp_path, "x.png"), ["smiling broadly"], [repo_root / "params/quick.yaml"],
                         tmp_path / "grid", ["full"])
    (run,) = spec.runs()
    assert run.name == "full/x__smiling broadly" and run.request.method == "word list"
    conditioning = run.config().conditioning
    assert (conditioning.expression, conditioning.expression_class) == ("smiling broadly", "happy")
    with pytest.raises(ManifestError, match="unknown emotion 'smug'.*surprise"):
        ablation_spec(_photos(tmp_path, "x.png"), ["smug"], [repo_root / "params/quick.yaml"], tmp_path / "grid")


def test_grid_checks_every_photo_before_any_run(tmp_path, repo_root):
    present = save_image(astronaut()[:64, :64], tmp_path / "present.png")
    with pytest.raises(ManifestError, match="missing.png"):
        ablation_spec([present, tmp_path / "missing.png"], ["neutral"], [repo_root / "params/quick.yaml"],
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
def test_the_ablation_grid_generates_evaluates_and_reuses_real_runs(tmp_path, repo_root, capsys,
                                                                    one_torch_thread):
    """One real quick-preset ablation cell (2 iterations) run serially by the engine, evaluated offline;
    then reused by the CLI."""
    photo = save_image(astronaut(), tmp_path / "photos" / "astronaut.png")
    out = tmp_path / "grid"
    lines = []
    spec = ablation_spec([photo], ["neutral"], [repo_root / "params/quick.yaml"], out, ["no_emotion_loss"],
                         [*TINY, "train.iterations=2"])
    study = run_batch(spec.runs(), spec.out, evaluate_fn=evaluate_grid, progress=False, log=lines.append,
                      serial=True)
    run_dir = out / "no_emotion_loss" / "astronaut__neutral"
    assert [(o.name, o.status, o.run_dir) for o in study.outcomes] == [
        ("no_emotion_loss/astronaut__neutral", "generated", str(run_dir))]
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["status"] == "finished" and manifest["ablation"] == "no_emotion_loss"
    config = load_config(run_dir / "config.yaml")
    assert config.loss.lambda_emotion == 0.0 and config.train.iterations == 2 and config.render.resolution == 32
    assert read_summary(run_dir).iterations == 2

    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["group"] == "no_emotion_loss" and metrics["n_renders"] == 1 + config.eval.n_views
    assert metrics["identity"]["model"] == "sface" and metrics["emotion"]["loss"]["classifier"] == "fer"
    assert metrics["identity_conditioning"]["model"] == "dlib" and metrics["emotion"]["held_out"]["classifier"] == "faceapi"
    assert spec.out / EVALUATION_DIR == out / "evaluation"
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
    study = run_batch(spec.runs(), spec.out, evaluate_fn=evaluate_grid, progress=False, log=lines.append,
                      serial=True)
    assert [o.status for o in study.outcomes] == ["resumed"]
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


def test_comparison_puts_paper_and_ours_in_columns_apart():
    provenance = Provenance(preset="quick", frechet_label="Fréchet distance in dlib-descriptor space (not FID)",
                            identity_model="dlib", loss_classifier="fer", held_out_classifier="deepface")
    ours = [OurRow("full", fid=0.1234, id=0.91, nps_loss=0.5, nps_held_out=None, n_runs=2),
            OurRow("SDS instead of ISM", fid=0.2, id=0.8, nps_loss=1.5, nps_held_out=None, n_runs=2)]
    text = comparison_markdown(ours, provenance)
    lines = text.splitlines()
    assert lines[2] == ("| method | paper: FID ↓ (Inception) | paper: ID ↑ (CosFace) | paper: NPS ↓ (classifier not "
                        "named) | ours: Fréchet distance in dlib-descriptor space (not FID) ↓ | ours: ID ↑ (dlib) | "
                        "ours: NPS ↓ (fer, loss) | ours: NPS ↓ (deepface, held out) | our runs |")
    assert "| full | 227.11 | 0.3672 | 0.3667 | 0.1234 | 0.9100 | 0.5000 | n/a | 2 |" in lines
    assert "| w/o semantic embedding | 238.43 | 0.3977 | 3.1178 | — | — | — | — | — |" in lines
    assert "| SDS instead of ISM | — | — | — | 0.2000 | 0.8000 | 1.5000 | n/a | 2 |" in lines
    assert "not comparable" in text and "names no classifier" not in text and "does not name" in text
    assert text.index("SDS instead of ISM") > text.index("w/o perceptual expression loss")
    no_distance = comparison_markdown([OurRow("full", id=0.9, nps_loss=0.5, n_runs=1)], provenance)
    assert "ours: Fréchet" not in no_distance and "is left out" in no_distance
    inception = Provenance("paper", "FID (Inception-v3 pool features, clean-fid 'clean' resize)", "arcface",
                           "deepface", "fer")
    text = comparison_markdown([OurRow("SIE3D", fid=250.0, id=0.4, nps_loss=0.3, nps_held_out=0.9, n_runs=1)],
                               inception, paper=TABLE1, title="Table 1")
    assert "| SIE3D | 227.11 | 0.3672 | 0.3667 | 250.00 | 0.4000 | 0.3000 | 0.9000 | 1 |" in text
    assert "| Arc2Avatar | 237.81 | 0.4459 | 3.5884 | — | — | — | — | — |" in text  # ours ranked among none
    assert "ours: FID ↓ (Inception)" in text

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
