"""Turntables, view grids and the ``sie3d render`` command."""

import imageio.v3 as iio
import numpy as np
import pytest
import torch

from sie3d.avatar.ply import save_ply
from sie3d.cli import main
from sie3d.config import CameraConfig, Config, save_config
from sie3d.render.cameras import orbit_cameras
from sie3d.render.media import render_turntable, render_views, save_turntable, to_uint8, view_grid
from sie3d.render.renderer import render
from sie3d.render.splats import random_splats


@pytest.fixture(scope="module")
def splats():
    return random_splats(400, torch.Generator().manual_seed(0), center=(0.0, 0.0, 0.0), extent=1.5)


def test_turntable_starts_frontal_and_turns(splats):
    frames = render_turntable(splats, n_frames=4, resolution=32)
    assert frames.shape == (4, 32, 32, 3) and frames.dtype == np.uint8
    cfg = CameraConfig()
    front = render(splats, orbit_cameras(cfg.eval_radius, cfg.eval_polar, 0.0, cfg.eval_fovy, 32), torch.ones(3))
    assert np.array_equal(frames[0], to_uint8(front.rgb[0]))
    assert np.array_equal(frames[1], render_views(splats, [90.0], 32)[0])
    assert not np.array_equal(frames[0], frames[2])
    with pytest.raises(ValueError, match="frame"):
        render_turntable(splats, n_frames=0)


def test_save_gif_and_mp4(tmp_path, splats):
    frames = render_turntable(splats, n_frames=3, resolution=33)  # odd size: padded for H.264
    gif = iio.imread(save_turntable(frames, tmp_path / "t.gif"))
    assert gif.shape[:3] == (3, 33, 33)
    mp4 = iio.imread(save_turntable(frames, tmp_path / "t.mp4", fps=10))
    assert mp4.shape[0] == 3 and mp4.shape[1:3] == (34, 34)
    assert np.abs(mp4[:, :33, :33].astype(int) - frames.astype(int)).mean() < 12  # lossy but the same pictures
    with pytest.raises(ValueError, match=".gif or .mp4"):
        save_turntable(frames, tmp_path / "t.avi")


def test_view_grid(splats):
    grid = view_grid(splats, resolution=24)
    assert grid.shape == (24, 5 * 24, 3)
    plain = view_grid(splats, views=((0.0, "front"), (180.0, "back")), resolution=24, labels=False)
    assert np.array_equal(plain[:, :24], render_views(splats, [0.0], 24)[0])


def test_render_command_on_a_ply_and_a_run_dir(tmp_path, splats, capsys):
    ply = save_ply(splats, tmp_path / "s.ply")
    assert main(["render", str(ply), "--turntable", str(tmp_path / "o.gif"), "--views", str(tmp_path / "v.png"),
                 "--frames", "2", "--resolution", "16", "--background", "0,0.5,1"]) == 0
    assert iio.imread(tmp_path / "o.gif").shape == (2, 16, 16, 3)
    assert iio.imread(tmp_path / "v.png").shape == (16, 80, 3)
    run = tmp_path / "run"
    run.mkdir()
    save_ply(splats, run / "avatar.ply")
    config = Config()
    config.eval.turntable_frames = 3
    save_config(config, run / "config.yaml")
    assert main(["render", str(run), "--resolution", "16"]) == 0
    assert (run / "views.png").is_file() and iio.imread(run / "turntable.mp4").shape[0] == 3
    capsys.readouterr()
    assert main(["render", str(ply)]) == 1
    assert "nothing to write" in capsys.readouterr().err
    assert main(["render", str(ply), "--views", "x.png", "--background", "pink"]) == 1
    assert main(["render", str(tmp_path / "empty_dir_missing"), "--views", "x.png"]) == 1
