"""Safe run directories: one writer per run (lock with pid/host/start, stale locks taken over), and
`--resume` falling back to the newest checkpoint that loads."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time

import pytest
import torch

from sie3d.cli import main
from sie3d.run_dir import LOCK_FILE, RunDirLocked, RunLock
from sie3d.runtime import ModelCache
from sie3d.train.checkpoint import (NoUsableCheckpoint, checkpoint_path, list_checkpoints, load_newest_checkpoint,
                                    save_checkpoint)

HOLDER = """
import sys, time
from sie3d.run_dir import RunLock
lock = RunLock(sys.argv[1]).acquire()
print("held", flush=True)
time.sleep(60)
"""


def test_second_writer_is_refused_naming_the_holder_then_a_dead_holder_is_taken_over(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        record = json.loads((tmp_path / LOCK_FILE).read_text())
        assert (record["pid"], record["host"]) == (holder.pid, platform.node()) and record["started"]
        with pytest.raises(RunDirLocked) as info:
            RunLock(tmp_path).acquire()
        message = str(info.value)
        assert f"in use by pid {holder.pid} on {platform.node()}" in message and "\n" not in message
    finally:
        holder.kill()
        holder.wait()
    warnings = []
    with RunLock(tmp_path, warn=warnings.append):  # the holder is gone: its lock is stale
        assert json.loads((tmp_path / LOCK_FILE).read_text())["pid"] == os.getpid()
    assert len(warnings) == 1 and f"stale lock (pid {holder.pid}" in warnings[0]
    assert not (tmp_path / LOCK_FILE).exists()  # released on exit


def test_second_sie3d_generate_into_the_same_out_is_refused(tmp_path, capsys):
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(tmp_path / "run")], stdout=subprocess.PIPE,
                              text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        assert main(["generate", str(tmp_path / "photo.png"), "--out", str(tmp_path / "run")]) == 1
    finally:
        holder.kill()
        holder.wait()
    err = capsys.readouterr().err.strip()
    assert err.startswith("sie3d generate: error:") and f"in use by pid {holder.pid}" in err and "\n" not in err
    assert not (tmp_path / "run" / "manifest.json").exists()  # nothing written by the refused writer


def test_live_local_holder_refused_recycled_pid_and_other_hosts(tmp_path):
    lock = RunLock(tmp_path).acquire()
    with pytest.raises(RunDirLocked, match=f"pid {os.getpid()}"):
        RunLock(tmp_path).acquire()
    lock.release()
    # this process's pid, but a lock written long before this process started: the pid was recycled
    (tmp_path / LOCK_FILE).write_text(json.dumps({"pid": os.getpid(), "host": platform.node(),
                                                  "started": "1970-01-01", "time": 0.0}))
    warnings = []
    RunLock(tmp_path, warn=warnings.append).acquire().release()
    assert "stale lock" in warnings[0]
    # another host's process cannot be checked from here: refused
    (tmp_path / LOCK_FILE).write_text(json.dumps({"pid": 1, "host": "elsewhere", "started": "x", "time": time.time()}))
    with pytest.raises(RunDirLocked, match="on elsewhere"):
        RunLock(tmp_path).acquire()


def test_truncated_newest_checkpoint_falls_back_to_the_previous_one(tmp_path):
    for iteration in (10, 20):
        save_checkpoint(checkpoint_path(tmp_path, iteration), {"iteration": iteration, "x": torch.arange(iteration)})
    newest = checkpoint_path(tmp_path, 20)
    newest.write_bytes(newest.read_bytes()[: newest.stat().st_size // 2])  # a write cut off half-way
    warnings = []
    path, state = load_newest_checkpoint(tmp_path, warn=warnings.append)
    assert path == checkpoint_path(tmp_path, 10) and state["iteration"] == 10
    assert torch.equal(state["x"], torch.arange(10))
    assert len(warnings) == 1 and "ckpt_000020.pt" in warnings[0]
    assert [p.name for p in list_checkpoints(tmp_path)] == ["ckpt_000010.pt"]  # the damaged one is set aside
    assert (tmp_path / "checkpoints/ckpt_000020.pt.corrupt").is_file()
    # nothing loads: an error naming every file, not a traceback from torch
    checkpoint_path(tmp_path, 10).write_bytes(b"")
    with pytest.raises(NoUsableCheckpoint, match="ckpt_000010.pt"):
        load_newest_checkpoint(tmp_path, warn=warnings.append)
    assert load_newest_checkpoint(tmp_path / "no-run") is None


@pytest.mark.slow
def test_trainer_resume_skips_a_truncated_newest_checkpoint_and_continues_identically(tmp_path, repo_root):
    from skimage.data import astronaut

    from sie3d.config import load_config
    from sie3d.subject import initial_avatar, make_subject, prepare_subject
    from sie3d.train.trainer import AvatarTrainer

    config = load_config(repo_root / "params/quick.yaml", overrides=[
        "render.resolution=24", "render.frontal_resolution=128", "train.iterations=4", "train.checkpoint_every=2"])
    device = torch.device("cpu")
    prepared = prepare_subject(make_subject([astronaut()], config.models, ["astronaut"]), config, device)

    def trainer(run_dir, log=lambda *_: None):
        return AvatarTrainer(config, prepared, initial_avatar(prepared, config, device), run_dir, device, log=log)

    straight = trainer(tmp_path / "a")
    straight.fit()
    trainer(tmp_path / "b").fit()
    newest = checkpoint_path(tmp_path / "b", 4)
    newest.write_bytes(newest.read_bytes()[:1000])
    lines = []
    resumed = trainer(tmp_path / "b", log=lines.append)
    assert resumed.resume() and resumed.iteration == 2
    assert any("skipped" in line and "ckpt_000004.pt" in line for line in lines)
    resumed.fit()
    for a, b in zip(list(straight.gaussians.parameters()) + [straight.expression],
                    list(resumed.gaussians.parameters()) + [resumed.expression]):
        assert torch.equal(a.detach(), b.detach())


def test_model_cache_builds_each_key_once():
    cache, calls = ModelCache(), []
    first = cache.get(("prior", "tiny", "cpu"), lambda: calls.append(1) or object())
    assert cache.get(("prior", "tiny", "cpu"), lambda: calls.append(1) or object()) is first
    assert cache.get(("prior", "tiny", "cuda"), lambda: calls.append(1) or object()) is not first
    assert len(calls) == 2 and set(cache.builds) == {("prior", "tiny", "cpu"), ("prior", "tiny", "cuda")}
