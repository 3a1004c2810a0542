"""The run directory's status and reuse rules (sie3d.run_dir), on hand-made directories."""

import pytest

from sie3d.config import load_config
from sie3d.run_dir import (CHECKPOINT_DIR, SUMMARY_FILE, RunDir, StaleRunError, Summary, read_config, read_summary,
                           reuse_for, run_status, write_summary)


@pytest.fixture
def quick(repo_root):
    return load_config(repo_root / "params/quick.yaml")


def test_status_follows_the_manifest_and_the_summary(tmp_path, quick):
    assert run_status(tmp_path / "nothing") == "absent"
    run = RunDir.create(tmp_path / "run", quick)
    assert run_status(run.path) == "running"
    run.finish(status="interrupted")
    assert run_status(run.path) == "interrupted"
    run.finish(status="finished")
    assert run_status(run.path) == "interrupted"  # the manifest says finished, but no summary.json
    (run.path / SUMMARY_FILE).write_text("{}")
    assert run_status(run.path) == "finished"
    run.finish(status="failed")
    assert run_status(run.path) == "failed"


def test_reuse_for_a_config(tmp_path, quick, repo_root):
    assert reuse_for(tmp_path / "empty", quick) == "new"
    run = RunDir.create(tmp_path / "run", quick)
    assert reuse_for(run.path, quick) == "new"
    (run.path / CHECKPOINT_DIR).mkdir()
    (run.path / CHECKPOINT_DIR / "ckpt_000010.pt").write_bytes(b"")
    assert reuse_for(run.path, quick) == "resume"
    (run.path / SUMMARY_FILE).write_text("{}")
    run.finish(status="finished")
    assert reuse_for(run.path, quick) == "done"
    other = load_config(repo_root / "params/quick.yaml", overrides=["train.iterations=3"])
    with pytest.raises(StaleRunError, match="other params"):
        reuse_for(run.path, other)


def test_read_config_round_trips_and_names_a_missing_file(tmp_path, quick):
    run = RunDir.create(tmp_path / "run", quick)
    assert read_config(run.path) == quick
    with pytest.raises(FileNotFoundError, match="config.yaml"):
        read_config(tmp_path)


def test_summary_round_trips_its_json(tmp_path):
    data = {"photos": ["a.png"], "expression": "happy", "frontal": {"face_found": True, "dlib_distance": 0.3,
            "landmarks": {"mouth_open": 0.1}, "emotion_fer": {"happy": 0.9}}, "unknown_key": 1}
    summary = Summary.from_dict(data)
    assert summary.frontal.emotions == {"fer": {"happy": 0.9}} and summary.photo.to_dict() == {}
    write_summary(tmp_path, summary)
    again = read_summary(tmp_path)
    assert again == summary and "unknown_key" not in again.to_dict()
    assert again.to_dict()["frontal"] == data["frontal"] and "expression_match" not in again.to_dict()
    assert Summary.from_dict({"photos": "one.png"}).photos == ["one.png"]
