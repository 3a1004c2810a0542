"""Avatars on a web page: a run's live rig (or static splats) beside the viewer page (:mod:`sie3d.render.web_viewer`).

:func:`stage_avatar` puts one avatar into an installed viewer folder as a classic script
(``avatars/<name>.rig.js``: the run's ``avatar.rig``, posable with the page's sliders; ``<name>.spz.js``:
static splats, for a ``.ply``, an ``.spz`` or a run without a rig) and returns the page's query string;
:func:`show_avatar` does that for the book (the folder ``book/_extra/sie3d-viewer`` is copied to the site
root by Jupyter Book) and returns the ``<iframe>`` a notebook displays.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

from ..config import CameraConfig, config_from_dict, read_params_file
from ..render.web_viewer import AVATARS, avatar_script, iframe_html, viewer_query
from ..run_dir import AVATAR_PLY as RUN_PLY, AVATAR_RIG as RUN_RIG, AVATAR_SPZ as RUN_SPZ, \
    CONFIG_FILE as RUN_CONFIG, TURNTABLE_GIF as RUN_TURNTABLE

#: the viewer folder inside the book sources (``html_extra_path: [_extra]`` in book/_config.yml)
BOOK_VIEWER = Path("_extra") / "sie3d-viewer"
#: how an executed notebook page (``_build/html/executed/NN.html``) reaches the viewer page
BOOK_VIEWER_URL = "../sie3d-viewer/index.html"


def spz_bytes(source: str | Path) -> bytes:
    """The ``.spz`` bytes (sie3d's y-up world) of a run directory (its ``avatar.spz``, else its ``avatar.ply``),
    a ``.ply`` (convention read from its header) or an ``.spz`` file."""
    source = Path(source)
    if source.is_dir():
        if not (source / RUN_SPZ).is_file() and not (source / RUN_PLY).is_file():
            raise FileNotFoundError(f"{source} has neither {RUN_SPZ} nor {RUN_PLY}; is it a finished run directory?")
        source = source / RUN_SPZ if (source / RUN_SPZ).is_file() else source / RUN_PLY
    if not source.is_file():
        raise FileNotFoundError(f"splat file not found: {source}")
    if source.suffix.lower() == ".spz":
        return source.read_bytes()
    if source.suffix.lower() == ".ply":
        from .ply import load_ply  # torch: only a .ply needs converting
        from .spz import encode_spz

        return encode_spz(load_ply(source))
    raise ValueError(f"{source}: expected a run directory, an avatar.rig, a .ply or an .spz file")


def avatar_bytes(source: str | Path) -> tuple[str, bytes]:
    """``("rig", avatar.rig bytes)`` for a run directory with a rig or a ``.rig`` file, else ``("spz", .spz bytes)``."""
    source = Path(source)
    rig = source / RUN_RIG if source.is_dir() else source
    if rig.is_file() and rig.suffix.lower() == ".rig":
        return "rig", rig.read_bytes()
    return "spz", spz_bytes(source)


def stage_avatar(source: str | Path, viewer_dir: str | Path, name: str) -> str:
    """Write ``source`` (a run directory, an ``avatar.rig``, a ``.ply`` or an ``.spz``) into
    ``viewer_dir/avatars/`` as ``<name>.rig.js`` or ``<name>.spz.js`` (with a run's turntable as
    ``<name>.gif``, the no-WebGL fallback); returns the page's query string, its camera the run's frontal
    evaluation camera."""
    source, viewer_dir = Path(source), Path(viewer_dir)
    if not re.fullmatch(r"[A-Za-z0-9_-]+", name):
        raise ValueError(f"avatar name {name!r}: use letters, digits, '_', '-'")
    kind, data = avatar_bytes(source)
    script = viewer_dir / AVATARS / f"{name}.{kind}.js"
    script.parent.mkdir(parents=True, exist_ok=True)
    script.write_text(avatar_script(kind, name, data))
    cameras, turntable = CameraConfig(), None
    if source.is_dir():
        if (source / RUN_CONFIG).is_file():
            cameras = config_from_dict(read_params_file(source / RUN_CONFIG)).cameras
        if (source / RUN_TURNTABLE).is_file():
            shutil.copyfile(source / RUN_TURNTABLE, viewer_dir / AVATARS / f"{name}.gif")
            turntable = f"{AVATARS}/{name}.gif"
    return viewer_query(f"{AVATARS}/{script.name}", radius=cameras.eval_radius, fovy=cameras.eval_fovy,
                        turntable=turntable)


def book_dir() -> Path:
    """The book sources: ``$SIE3D_BOOK_DIR``, else ``../book`` of the working directory (notebooks run in
    ``notebooks/``)."""
    return Path(os.environ.get("SIE3D_BOOK_DIR") or Path.cwd().parent / "book")


def show_avatar(run_dir: str | Path, name: str | None = None, height: int = 420, title: str | None = None):
    """An interactive viewer of a run's avatar for a book page (``IPython.display.HTML``): orbit controls
    and, when the run has its ``avatar.rig``, a slider per emotion and per blendshape that re-pose it live.

    The avatar goes to ``book/_extra/sie3d-viewer/avatars/<name>.rig.js`` (or ``.spz.js``); the built page
    embeds the viewer page from the book's own files (no other host), which works from disk and over HTTP.
    ``name`` defaults to the run directory's name prefixed with its parent's.
    """
    from IPython.display import HTML

    run_dir = Path(run_dir)
    name = name or re.sub(r"[^A-Za-z0-9_-]+", "_", f"{run_dir.parent.name}__{run_dir.name}")
    query = stage_avatar(run_dir, book_dir() / BOOK_VIEWER, name)
    return HTML(iframe_html(f"{BOOK_VIEWER_URL}?{query}", height=height, title=title or f"avatar {run_dir.name}"))
