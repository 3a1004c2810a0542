"""`sie3d batch`: manifest expansion, and the grid on a local 2-CPU Ray cluster with a fake generator
(finished runs skipped, interrupted ones resumed, a bad photo isolated, models built once per worker)."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import pytest

from sie3d.batch.manifest import ManifestError, load_manifest, slug
from sie3d.cli import main
from sie3d.run_dir import RunLock
from sie3d.runtime import write_json_atomic

ITERATIONS = 4
STOP_MARKER = "stop-happy-runs-at-2"  # in the batch root: "happy" runs die at iteration 2


def _touch_photo(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"not decoded by the fake generator")
    return path


@pytest.fixture
def people(tmp_path):
    """people/alice/{1,2}.jpg (one person, two photos), people/bob.png (one person), carol.png."""
    _touch_photo(tmp_path / "people/alice/2.jpg")
    _touch_photo(tmp_path / "people/alice/1.jpg")
    _touch_photo(tmp_path / "people/bob.png")
    (tmp_path / "people/notes.txt").write_text("not a photo")
    _touch_photo(tmp_path / "carol.png")
    return tmp_path


def _manifest(tmp_path, repo_root, **entries) -> Path:
    data = {"params": str(repo_root / "params/quick.yaml"), "overrides": [f"train.iterations={ITERATIONS}"],
            "out": str(tmp_path / "out"), **entries}
    path = tmp_path / "batch.yaml"
    path.write_text(json.dumps(data))  # JSON is YAML
    return path


def test_manifest_expands_people_and_requests_to_stable_names(people, repo_root):
    path = _manifest(people, repo_root, photos=[str(people / "people"), str(people / "carol.png")],
                     expressions=["neutral", "happy"], intensities=[0.5], accessories=["", "Wearing glasses!"],
                     ablations=["full", "sds"])
    spec = load_manifest(path)
    assert [(p.name, [f.name for f in p.photos]) for p in spec.people] == [
        ("bob", ["bob.png"]), ("alice", ["1.jpg", "2.jpg"]), ("carol", ["carol.png"])]
    runs = spec.runs()
    assert len(runs) == 2 * 3 * 2 * 1 * 2
    assert runs[0].name == "full/bob__neutral__eta0.5"
    assert runs[1].name == "full/bob__neutral__eta0.5__wearing_glasses"
    assert runs[-1].name == "sds/carol__happy__eta0.5__wearing_glasses"
    assert runs[-1].run_dir == people / "out" / "sds/carol__happy__eta0.5__wearing_glasses"
    assert len({r.name for r in runs}) == len(runs)
    config = runs[-1].config()
    assert (config.conditioning.expression, config.conditioning.eta_expr) == ("happy", 0.5)
    assert config.conditioning.accessory == "Wearing glasses!"
    assert config.guidance.method == "sds" and runs[0].config().guidance.method == "ism"
    assert config.train.iterations == ITERATIONS
    # the same manifest expands to the same names and params; a limit on photos per person
    assert [(r.name, r.config().params_hash()) for r in load_manifest(path).runs()] == \
        [(r.name, r.config().params_hash()) for r in runs]
    limited = load_manifest(_manifest(people, repo_root, photos=[str(people / "people")], photos_per_person=1))
    assert [len(p.photos) for p in limited.people] == [1, 1]
    assert [r.name for r in limited.runs()] == ["full/bob__neutral", "full/alice__neutral"]
    assert slug("  Red HAT, wool ") == "red_hat_wool"


@pytest.mark.parametrize("entries, message", [
    ({"photos": ["carol.png"], "expresions": ["happy"]}, "did you mean 'expressions'"),
    ({"photos": ["missing.png"]}, "missing.png not found"),
    ({"photos": ["carol.png", "people/alice/1.jpg", "elsewhere/carol.jpg"]}, "repeated: carol"),
    ({"photos": ["carol.png"], "expressions": ["smug"]}, "unknown emotion 'smug'"),
    ({"photos": ["carol.png"], "ablations": ["no_lora"]}, "unknown 'no_lora'"),
    ({"photos": ["carol.png"], "intensities": [2]}, "in [0, 1]"),
    ({"photos": ["carol.png"], "overrides": ["train.iteration=3"]}, "train.iteration"),
    ({"photos": ["empty"]}, "neither photos nor one folder per person"),
])
def test_manifest_errors_name_the_problem(people, repo_root, monkeypatch, entries, message):
    monkeypatch.chdir(people)
    _touch_photo(people / "elsewhere/carol.jpg")
    (people / "empty").mkdir()
    with pytest.raises(ManifestError) as info:
        load_manifest(_manifest(people, repo_root, **entries))
    assert message in str(info.value)


def test_cli_reports_a_bad_manifest_in_one_line(people, repo_root, capsys):
    path = _manifest(people, repo_root, photos=[str(people / "nobody.png")])
    assert main(["batch", str(path)]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("sie3d batch: error:") and "nobody.png not found" in err and "\n" not in err


# --------------------------------------------------------------------------- on Ray


def fake_generate(run, config, resume, models, log):
    """Stands in for sie3d.generate.generate: a lock, a manifest, one checkpoint file per iteration.

    A photo named ``broken*`` fails like an unreadable photo; with the stop marker, "happy" runs stop at
    iteration 2: alice's kills its worker process (a crash), the others raise; every call is appended
    to ``calls.txt``.
    """
    models.get("prior", lambda: time.sleep(0.3) or object())  # the expensive model: once per worker
    with RunLock(run.run_dir, warn=log):
        if run.person.photos[0].name.startswith("broken"):
            raise ValueError(f"{run.person.photos[0]} could not be decoded; the file is truncated or corrupt")
        checkpoints = sorted((run.run_dir / "checkpoints").glob("ckpt_*"))
        start = int(checkpoints[-1].stem[5:]) if resume and checkpoints else 0
        with (run.run_dir / "calls.txt").open("a") as handle:
            handle.write(f"{start}\n")
        manifest = {"params_hash": config.params_hash(), "status": "running", **run.info()}
        write_json_atomic(run.run_dir / "manifest.json", manifest)  # RunDir's fields the batch reads
        for iteration in range(start + 1, ITERATIONS + 1):
            (run.run_dir / "checkpoints").mkdir(exist_ok=True)
            (run.run_dir / "checkpoints" / f"ckpt_{iteration:06d}").write_text("")
            if iteration == 2 and run.request.text == "happy" and (run.run_dir.parents[1] / STOP_MARKER).exists():
                if run.person.name == "alice":
                    os._exit(1)
                raise RuntimeError("stopped at iteration 2")
        (run.run_dir / "summary.json").write_text(json.dumps({"worker": os.getpid()}))
        write_json_atomic(run.run_dir / "manifest.json", {**manifest, "status": "finished"})


@pytest.fixture(scope="module")
def ray_session():
    ray = pytest.importorskip("ray")
    from ray import cloudpickle

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers need not import this test file
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, _node_ip_address="127.0.0.1")
    yield ray
    ray.shutdown()


def _calls(run) -> list[int]:
    return [int(line) for line in (run.run_dir / "calls.txt").read_text().split()]


def test_grid_stopped_part_way_resumes_and_isolates_a_bad_photo(ray_session, tmp_path, repo_root):
    from sie3d.batch.engine import BATCH_JSON, run_batch
    from sie3d.run_dir import is_finished

    for name in ("alice.png", "bob.png", "broken.png"):
        _touch_photo(tmp_path / "photos" / name)
    spec = load_manifest(_manifest(tmp_path, repo_root, photos=[str(tmp_path / "photos")],
                                   expressions=["neutral", "happy"]))
    runs = spec.runs()
    assert len(runs) == 6
    evaluated = []

    def evaluate(run_dirs, out_dir):
        evaluated.append((sorted(p.name for p in run_dirs), out_dir))

    spec.out.mkdir(parents=True)
    (spec.out / STOP_MARKER).write_text("")
    first = run_batch(runs, spec.out, run_fn=fake_generate, evaluate_fn=evaluate, progress=False, log=lambda _: None)
    status = {o.name: o.status for o in first.outcomes}
    assert status == {"full/alice__neutral": "generated", "full/alice__happy": "failed",
                      "full/bob__neutral": "generated", "full/bob__happy": "failed",
                      "full/broken__neutral": "failed", "full/broken__happy": "failed"}
    errors = {o.name: o.error for o in first.failed}
    assert "could not be decoded" in errors["full/broken__neutral"]
    assert errors["full/alice__happy"].startswith("worker died")
    assert errors["full/bob__happy"] == "RuntimeError: stopped at iteration 2"
    assert evaluated == [(["alice__neutral", "bob__neutral"], spec.out / "evaluation")]
    assert json.loads((spec.out / BATCH_JSON).read_text())["runs"][4]["error"] == errors["full/broken__neutral"]
    # the expensive model was built once per worker process, not once per run
    built = [o.worker for o in first.outcomes if "prior" in o.models_built]
    assert len(built) == len(set(built)) and len(built) < len([o for o in first.outcomes if o.worker])

    (spec.out / STOP_MARKER).unlink()
    second = run_batch(runs, spec.out, run_fn=fake_generate, evaluate_fn=evaluate, progress=False, log=lambda _: None)
    status = {o.name: o.status for o in second.outcomes}
    assert status == {"full/alice__neutral": "skipped", "full/alice__happy": "resumed",
                      "full/bob__neutral": "skipped", "full/bob__happy": "resumed",
                      "full/broken__neutral": "failed", "full/broken__happy": "failed"}
    by_name = {run.name: run for run in runs}
    assert _calls(by_name["full/alice__neutral"]) == [0]  # not recomputed
    assert _calls(by_name["full/alice__happy"]) == [0, 2]  # continued from its newest checkpoint
    assert is_finished(by_name["full/bob__happy"].run_dir)
    # the worker that died held the run's lock; the resumed run took the stale lock over
    assert "taking over a stale lock" in (by_name["full/alice__happy"].run_dir / "batch.log").read_text()
    assert "stale" not in (by_name["full/bob__happy"].run_dir / "batch.log").read_text()
    assert evaluated[-1][0] == ["alice__happy", "alice__neutral", "bob__happy", "bob__neutral"]


def _finished_with_other_params(tmp_path, repo_root):
    """One run of a manifest whose directory holds a finished run made with another params hash."""
    _touch_photo(tmp_path / "alice.png")
    (run,) = load_manifest(_manifest(tmp_path, repo_root, photos=[str(tmp_path / "alice.png")])).runs()
    run.run_dir.mkdir(parents=True)
    write_json_atomic(run.run_dir / "manifest.json", {"params_hash": "0123456789abcdef", "status": "finished"})
    (run.run_dir / "summary.json").write_text("{}")
    return run


def test_finished_runs_made_with_other_params_stop_the_batch_first(tmp_path, repo_root):
    from sie3d.batch.engine import BatchError, run_batch

    run = _finished_with_other_params(tmp_path, repo_root)
    with pytest.raises(BatchError, match="generated with other params"):  # before Ray is even started
        run_batch([run], tmp_path / "out", run_fn=fake_generate, evaluate_fn=None, progress=False)


def test_replace_stale_remakes_finished_runs_made_with_other_params(tmp_path, repo_root):
    from sie3d.batch.engine import BatchError, BatchResult, Outcome, plan

    run = _finished_with_other_params(tmp_path, repo_root)
    skipped, todo = plan([run], replace_stale=True)
    assert skipped == [] and [(r.name, resume) for r, _, resume in todo] == [(run.name, False)]
    assert not run.run_dir.exists()  # the stale run is gone, so it is made from scratch
    result = BatchResult([Outcome("a", "a", "generated"), Outcome("b", "b", "failed", error="ValueError: bad")],
                         1.0, 0.0)
    with pytest.raises(BatchError, match="b: ValueError: bad"):
        result.raise_for_failures()
    BatchResult([Outcome("a", "a", "skipped")], 1.0, 0.0).raise_for_failures()

@pytest.mark.slow
def test_a_worker_reuses_its_models_and_gets_the_same_avatar(tmp_path, repo_root):
    """The real cell function twice in one process: the second run builds no model, and sharing the
    prior and classifiers changes nothing (the same avatar, bit for bit, as with fresh models)."""
    import imageio.v3 as iio
    from skimage.data import astronaut

    from sie3d.batch.engine import generate_run
    from sie3d.runtime import ModelCache

    iio.imwrite(tmp_path / "astronaut.png", astronaut())
    path = _manifest(tmp_path, repo_root, photos=[str(tmp_path / "astronaut.png")],
                     overrides=["train.iterations=1", "eval.n_views=2", "eval.turntable_frames=2"])
    (run,) = load_manifest(path).runs()
    models, lines = ModelCache(), []
    generate_run(run, run.config(), False, models, lines.append)
    built = dict(models.builds)
    assert any(key[0] == "prior" for key in built) and any(key[0] == "emotion" for key in built)
    (again,) = load_manifest(path, out=tmp_path / "again").runs()
    generate_run(again, again.config(), False, models, lines.append)
    assert models.builds == built  # nothing rebuilt
    assert (again.run_dir / "avatar.ply").read_bytes() == (run.run_dir / "avatar.ply").read_bytes()
