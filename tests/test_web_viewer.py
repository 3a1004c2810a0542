"""The viewer page's files, staging avatars for it, the book helper and ``sie3d view`` over HTTP
(no browser here; tests/test_viewer_browser.py renders the page)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import urllib.request
from urllib.parse import parse_qs

import pytest
import torch

from sie3d.avatar.ply import save_ply
from sie3d.avatar.spz import load_spz
from sie3d.avatar.web import export_spz, show_avatar, stage_avatar
from sie3d.render.splats import random_splats
from sie3d.render.web_viewer import PAGE_DIR, install_viewer, viewer_query
from sie3d.weights import is_available

needs_scripts = pytest.mark.skipif(not (is_available("viewer-three") and is_available("viewer-spark")),
                                   reason="viewer scripts not cached: sie3d weights download --offline-set")


@pytest.fixture
def run_dir(tmp_path):
    run = tmp_path / "grid" / "full run"
    splats = random_splats(300, torch.Generator().manual_seed(0), center=(0.0, 0.0, 0.0))
    save_ply(splats, run / "avatar.ply")  # COLMAP convention on disk
    (run / "turntable.gif").write_bytes(b"GIF89a")
    (run / "config.yaml").write_text("cameras:\n  eval_radius: 3.25\n  eval_fovy: 0.5\n")
    return run, splats


def test_page_imports_only_files_beside_it():
    page = (PAGE_DIR / "index.html").read_text() + (PAGE_DIR / "viewer.js").read_text()
    assert not re.search(r"https?://", page)
    imports = re.findall(r'"(\./vendor/[^"]+)"', page)
    assert {i.split("/")[2] for i in imports} == {"three", "spark"}


def test_query_carries_the_frontal_camera():
    query = parse_qs(viewer_query("avatars/a.spz", up="-y", radius=4.5, fovy=0.7, turntable="avatars/a.gif"))
    assert query == {"src": ["avatars/a.spz"], "up": ["-y"], "radius": ["4.5"], "fov": ["40.11"],
                     "turntable": ["avatars/a.gif"]}
    with pytest.raises(ValueError, match="up must be"):
        viewer_query("a.spz", up="z")


def test_staged_spz_is_in_the_y_up_world_whatever_the_ply_convention(run_dir, tmp_path):
    run, splats = run_dir
    query = parse_qs(stage_avatar(run, tmp_path / "site", "a"))
    assert query["src"] == ["avatars/a.spz"] and query["up"] == ["y"] and query["radius"] == ["3.25"]
    assert (tmp_path / "site/avatars/a.gif").read_bytes() == b"GIF89a"
    staged = load_spz(tmp_path / "site/avatars/a.spz")
    assert (staged.means - splats.means).abs().max() < 1e-3  # back in sie3d's world, not y-down
    save_ply(splats, tmp_path / "up.ply", convention="y-up")
    again = load_spz(export_spz(tmp_path / "up.ply", tmp_path / "up.spz"))
    assert (again.means - splats.means).abs().max() < 1e-3
    with pytest.raises(ValueError, match="avatar name"):
        stage_avatar(run, tmp_path / "site", "../x")
    with pytest.raises(FileNotFoundError, match="neither"):
        export_spz(tmp_path, tmp_path / "x.spz")


@needs_scripts
def test_show_avatar_writes_into_the_book_and_embeds_a_relative_iframe(run_dir, tmp_path, monkeypatch):
    run, _ = run_dir
    monkeypatch.setenv("SIE3D_BOOK_DIR", str(tmp_path / "book"))
    html = show_avatar(run).data
    assert '<iframe src="../sie3d-viewer/index.html?src=avatars%2Fgrid__full_run.spz' in html
    assert "Drag to rotate" in html and "http" not in html
    assert (tmp_path / "book/_extra/sie3d-viewer/avatars/grid__full_run.spz").is_file()
    site = install_viewer(tmp_path / "site").parent
    assert (site / "vendor/spark/dist/spark.module.min.js").is_file()
    assert (site / "vendor/three/build/three.core.min.js").is_file()


@needs_scripts
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
        assert "importmap" in page
        base = url.group(0).split("index.html")[0]
        spz = urllib.request.urlopen(base + "avatars/avatar.spz", timeout=10).read()
        assert spz[:2] == b"\x1f\x8b"  # gzip
        js = urllib.request.urlopen(base + "vendor/spark/dist/spark.module.min.js", timeout=10)
        assert js.headers["Content-Type"].startswith("text/javascript")
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
