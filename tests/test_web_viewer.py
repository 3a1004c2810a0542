"""The viewer page's files, staging avatars for it (a run's rig, or static splats), the book helper and
``sie3d view`` over HTTP (no browser here; tests/test_viewer_browser.py renders the page)."""

from __future__ import annotations

import base64
import gzip
import os
import re
import subprocess
import sys
import urllib.request
from pathlib import Path
from urllib.parse import parse_qs

import pytest
import torch

from sie3d.avatar.gaussians import MeshGaussians
from sie3d.avatar.ply import save_ply
from sie3d.avatar.rig import write_rig
from sie3d.avatar.spz import decode_spz
from sie3d.avatar.web import show_avatar, spz_bytes, stage_avatar
from sie3d.config import GaussiansConfig
from sie3d.render.splats import random_splats
from sie3d.render.web_viewer import PAGE_DIR, PAGE_FILES, avatar_script, install_viewer, viewer_query
from tests.helpers_avatar import sphere_template


@pytest.fixture
def run_dir(tmp_path):
    run = tmp_path / "grid" / "full run"
    splats = random_splats(300, torch.Generator().manual_seed(0), center=(0.0, 0.0, 0.0))
    save_ply(splats, run / "avatar.ply")  # COLMAP convention on disk
    (run / "turntable.gif").write_bytes(b"GIF89a")
    (run / "config.yaml").write_text("cameras:\n  eval_radius: 3.25\n  eval_fovy: 0.5\n")
    return run, splats


def _script_bytes(path, global_name: str, name: str) -> bytes:
    """The gzip bytes an avatar script carries (checks its exact form)."""
    match = re.fullmatch(rf'\(window\.{global_name} = window\.{global_name} \|\| \{{\}}\)\["{name}"\] = '
                         r'"([A-Za-z0-9+/=]+)";\n', path.read_text())
    assert match, path.read_text()[:200]
    return base64.b64decode(match.group(1))


def test_page_is_classic_scripts_beside_it():
    """Chromium refuses module scripts and fetch() on file:// pages: the page uses neither."""
    page = (PAGE_DIR / "index.html").read_text()
    scripts = {name: (PAGE_DIR / name).read_text() for name in PAGE_FILES if name.endswith(".js")}
    assert re.findall(r'<script src="([^"]+)"></script>', page) == list(scripts)
    for text in [page, *scripts.values()]:
        assert not re.search(r"https?://|type=\"module\"|importmap|\bimport\s*\(|\bfetch\s*\(|^\s*(import|export)\s",
                             text, re.M)


def test_query_carries_the_frontal_camera():
    query = parse_qs(viewer_query("avatars/a.rig.js", radius=4.5, fovy=0.7, turntable="avatars/a.gif"))
    assert query == {"src": ["avatars/a.rig.js"], "radius": ["4.5"], "fov": ["40.11"], "turntable": ["avatars/a.gif"]}
    with pytest.raises(ValueError, match="kind"):
        avatar_script("ply", "a", b"")


def test_a_run_without_a_rig_is_staged_as_static_splats_in_the_y_up_world(run_dir, tmp_path):
    run, splats = run_dir
    query = parse_qs(stage_avatar(run, tmp_path / "site", "a"))
    assert query["src"] == ["avatars/a.spz.js"] and query["radius"] == ["3.25"]
    assert (tmp_path / "site/avatars/a.gif").read_bytes() == b"GIF89a"
    staged = decode_spz(_script_bytes(tmp_path / "site/avatars/a.spz.js", "SIE3D_SPLATS", "a"))
    assert (staged.means - splats.means).abs().max() < 1e-3  # back in sie3d's world, not y-down
    save_ply(splats, tmp_path / "up.ply", convention="y-up")
    assert (decode_spz(spz_bytes(tmp_path / "up.ply")).means - splats.means).abs().max() < 1e-3
    with pytest.raises(ValueError, match="avatar name"):
        stage_avatar(run, tmp_path / "site", "../x")
    with pytest.raises(FileNotFoundError, match="neither"):
        spz_bytes(tmp_path)


def test_a_run_with_a_rig_is_staged_as_the_rig(run_dir, tmp_path):
    run, _ = run_dir
    template = sphere_template()
    rig = write_rig(MeshGaussians(template, GaussiansConfig(subdivisions=0)), torch.zeros(1), run / "avatar.rig")
    query = parse_qs(stage_avatar(run, tmp_path / "site", "b"))
    assert query["src"] == ["avatars/b.rig.js"] and query["turntable"] == ["avatars/b.gif"]
    assert _script_bytes(tmp_path / "site/avatars/b.rig.js", "SIE3D_RIGS", "b") == rig.read_bytes()
    assert gzip.decompress(rig.read_bytes())[:8] == b"SIE3DRIG"
    stage_avatar(rig, tmp_path / "site", "c")  # the file alone
    assert _script_bytes(tmp_path / "site/avatars/c.rig.js", "SIE3D_RIGS", "c") == rig.read_bytes()


def test_sie3d_view_makes_the_rig_of_a_run_that_predates_it(tmp_path):
    """A run with only config.yaml and a checkpoint: ``sie3d view`` writes its avatar.rig from the checkpoint."""
    from sie3d.avatar.rig import decode_rig
    from sie3d.avatar.template_files import load_template
    from sie3d.commands.view import prepare_site
    from sie3d.config import load_config, save_config
    from sie3d.train.checkpoint import checkpoint_path, save_checkpoint

    run = tmp_path / "run"
    run.mkdir()
    config = load_config(Path(__file__).resolve().parents[1] / "params/quick.yaml")
    config.gaussians.subdivisions = 0
    save_config(config, run / "config.yaml")
    template = load_template(config.models)
    gaussians = MeshGaussians(template, config.gaussians)
    own = template.expression_coefficients(smile=0.7)
    save_checkpoint(checkpoint_path(run, 5), {"iteration": 5, "gaussians": gaussians.state_dict(), "expression": own,
                                               "template_vertices": template.vertices})
    page = prepare_site(run, tmp_path / "site")
    assert "avatars%2Favatar.rig.js" in page and (run / "avatar.rig").is_file()
    rig = decode_rig(_script_bytes(tmp_path / "site/avatars/avatar.rig.js", "SIE3D_RIGS", "avatar"))
    assert rig.header["num_gaussians"] == gaussians.num_gaussians
    assert rig.header["coefficients"] == pytest.approx(own.tolist())


def test_show_avatar_writes_into_the_book_and_embeds_a_relative_iframe(run_dir, tmp_path, monkeypatch):
    run, _ = run_dir
    monkeypatch.setenv("SIE3D_BOOK_DIR", str(tmp_path / "book"))
    html = show_avatar(run).data
    assert '<iframe src="../sie3d-viewer/index.html?src=avatars%2Fgrid__full_run.spz.js' in html
    assert "Drag to rotate" in html and "http" not in html
    assert (tmp_path / "book/_extra/sie3d-viewer/avatars/grid__full_run.spz.js").is_file()
    site = install_viewer(tmp_path / "site").parent
    assert sorted(p.name for p in site.iterdir() if p.is_file()) == sorted(PAGE_FILES)


def test_sie3d_view_serves_the_page_and_the_avatar(run_dir):
    run, splats = run_dir
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "sie3d.cli", "view", str(run), "--no-browser", "--port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        line = proc.stdout.readline()
        url = re.search(r"http://\S+", line)
        assert url, line + proc.stderr.read()
        page = urllib.request.urlopen(url.group(0), timeout=10).read().decode()
        assert '<script src="viewer.js">' in page and "avatars%2Favatar.spz.js" in url.group(0)
        base = url.group(0).split("index.html")[0]
        script = urllib.request.urlopen(base + "avatars/avatar.spz.js", timeout=10)
        assert script.headers["Content-Type"].startswith("text/javascript")
        assert script.read().startswith(b"(window.SIE3D_SPLATS")
    finally:
        proc.terminate()
        proc.wait(10)


def test_sie3d_view_refuses_a_missing_source(tmp_path):
    from argparse import Namespace

    from sie3d.commands._common import UserError
    from sie3d.commands.view import run

    with pytest.raises(UserError, match="does not exist"):
        run(Namespace(source=str(tmp_path / "nope.ply"), port=0, host="127.0.0.1", no_browser=True))


def test_external_loads_finds_fetching_tags_only(tmp_path):
    from sie3d.book import external_loads

    (tmp_path / "sub").mkdir()
    (tmp_path / "ok.html").write_text('<a href="https://example.org">a link</a><script src="_static/x.js"></script>'
                                      '<link rel="stylesheet" href="../_static/s.css">')
    (tmp_path / "sub/bad.html").write_text('<script defer src="https://cdn.example/mathjax.js"></script>'
                                           "<img alt=x src=//img.example/a.png><iframe src='http://e.x/v'></iframe>")
    assert external_loads(tmp_path) == {"sub/bad.html": ["https://cdn.example/mathjax.js", "//img.example/a.png",
                                                         "http://e.x/v"]}
