"""The interactive 3DGS viewer page (three.js + Spark) that the book embeds and ``sie3d view`` serves.

The page is ours (``sie3d/render/viewer/index.html`` + ``viewer.js``); its JavaScript libraries are
npm tarballs fetched once through the weights registry (``viewer-three``, ``viewer-spark``, version
and integrity pinned) and copied beside it, so a served or built copy loads nothing from another
host. Installed layout::

    <dest>/index.html  viewer.js  vendor/three/...  vendor/spark/...  avatars/<name>.spz

The page reads ``?src=avatars/<name>.spz&up=y&radius=R&fov=DEG&turntable=...`` (see ``viewer.js``);
its default camera is the frontal evaluation camera (``cameras.eval_radius`` / ``eval_fovy``).
"""

from __future__ import annotations

import html
import math
import shutil
from pathlib import Path
from urllib.parse import urlencode

from ..weights import get_spec, model_path

#: the page and script of ours, shipped inside the package
PAGE_DIR = Path(__file__).resolve().parent / "viewer"
PAGE_FILES = ("index.html", "viewer.js")
#: registry model -> folder under ``vendor/`` its files are copied to (the import map in index.html)
VENDOR = {"viewer-three": "three", "viewer-spark": "spark"}
AVATARS = "avatars"
HELP_TEXT = "Drag to rotate, scroll or pinch to zoom, right-drag to pan, double-click for the front view."


def install_viewer(dest: str | Path) -> Path:
    """Copy the viewer page and its vendored scripts into ``dest``; returns ``dest/index.html``.

    Raises:
        ModelNotAvailable: when the scripts are not cached (``sie3d weights download --offline-set``).
    """
    dest = Path(dest)
    for name in PAGE_FILES:
        target = dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(PAGE_DIR / name, target)
    for model, folder in VENDOR.items():
        root = model_path(model)
        for rel in get_spec(model).files():
            target = dest / "vendor" / folder / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(root / rel, target)
    (dest / AVATARS).mkdir(exist_ok=True)
    return dest / "index.html"


def viewer_query(src: str, up: str = "y", radius: float = 4.5, fovy: float = 0.7,
                 turntable: str | None = None) -> str:
    """The page's query string: ``src`` relative to the page, ``up`` ``y`` or ``-y``, ``fovy`` in radians."""
    if up not in ("y", "-y"):
        raise ValueError(f"up must be 'y' or '-y', got {up!r}")
    query = {"src": src, "up": up, "radius": f"{radius:g}", "fov": f"{math.degrees(fovy):.2f}"}
    if turntable:
        query["turntable"] = turntable
    return urlencode(query)


def iframe_html(page_url: str, height: int = 420, title: str = "avatar viewer") -> str:
    """An ``<iframe>`` of the viewer page and a line saying how to rotate and zoom."""
    return (f'<iframe src="{html.escape(page_url)}" title="{html.escape(title)}" width="100%" height="{height}" '
            f'style="border:1px solid #ddd;border-radius:4px;max-width:640px" loading="lazy"></iframe>'
            f'<p style="font-size:90%;color:#555">{html.escape(title)}: {HELP_TEXT} Without WebGL 2 the page shows '
            "the turntable.</p>")
