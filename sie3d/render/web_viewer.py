"""The interactive 3DGS viewer page that the book embeds and ``sie3d view`` serves.

The page is ours, plain files shipped in the package (``sie3d/render/viewer/``): ``index.html`` and three
classic scripts (no ES modules, no ``fetch``: Chromium refuses both on pages opened from ``file://``, how
most readers open a built book): ``splat-data.js`` (decode and pose a rig or an ``.spz``), ``splat-gl.js``
(a WebGL 2 Gaussian-splat renderer: EWA-projected instanced quads, back-to-front counting sort,
premultiplied alpha) and ``viewer.js`` (orbit controls, the expression sliders, the test hooks). Installed
layout::

    <dest>/index.html  splat-data.js  splat-gl.js  viewer.js
    <dest>/avatars/<name>.rig.js   (a live rig)   or   <name>.spz.js   (static splats)   [+ <name>.gif]

An avatar script is a classic script holding the gzip bytes in base64 (:func:`avatar_script`), so it loads
from disk like the page. The page reads ``?src=avatars/<name>.rig.js&radius=R&fov=DEG&turntable=...``
(see ``viewer.js``); a rig's header camera (the run's frontal evaluation camera) wins over the query's.
"""

from __future__ import annotations

import base64
import html
import math
import shutil
from pathlib import Path
from urllib.parse import urlencode

#: the page and scripts of ours, shipped inside the package
PAGE_DIR = Path(__file__).resolve().parent / "viewer"
PAGE_FILES = ("index.html", "splat-data.js", "splat-gl.js", "viewer.js")
AVATARS = "avatars"
#: the global each kind of avatar script fills: name -> base64 of the gzip bytes
SCRIPT_GLOBALS = {"rig": "SIE3D_RIGS", "spz": "SIE3D_SPLATS"}
HELP_TEXT = ("Drag to rotate, scroll to zoom, double-click for the front view; the sliders pose the expression "
             "(c = blendshapes + intensity × Σ emotion × its prototype).")


def install_viewer(dest: str | Path) -> Path:
    """Copy the viewer page and its scripts into ``dest`` (and make ``dest/avatars``); returns ``dest/index.html``."""
    dest = Path(dest)
    (dest / AVATARS).mkdir(parents=True, exist_ok=True)
    for name in PAGE_FILES:
        shutil.copyfile(PAGE_DIR / name, dest / name)
    return dest / "index.html"


def avatar_script(kind: str, name: str, data: bytes) -> str:
    """The classic script that makes ``data`` (an ``avatar.rig`` or ``.spz``, gzip bytes) available to the page:
    ``(window.SIE3D_RIGS = window.SIE3D_RIGS || {})["name"] = "<base64>";`` (``SIE3D_SPLATS`` for ``spz``)."""
    if kind not in SCRIPT_GLOBALS:
        raise ValueError(f"avatar script kind must be one of {sorted(SCRIPT_GLOBALS)}, got {kind!r}")
    g = SCRIPT_GLOBALS[kind]
    return f'(window.{g} = window.{g} || {{}})["{name}"] = "{base64.b64encode(data).decode("ascii")}";\n'


def viewer_query(src: str, radius: float = 4.5, fovy: float = 0.7, turntable: str | None = None) -> str:
    """The page's query string: ``src`` the avatar script relative to the page, ``fovy`` in radians."""
    query = {"src": src, "radius": f"{radius:g}", "fov": f"{math.degrees(fovy):.2f}"}
    if turntable:
        query["turntable"] = turntable
    return urlencode(query)


def iframe_html(page_url: str, height: int = 420, title: str = "avatar viewer") -> str:
    """An ``<iframe>`` of the viewer page and a line saying how to rotate, zoom and pose."""
    return (f'<iframe src="{html.escape(page_url)}" title="{html.escape(title)}" width="100%" height="{height}" '
            f'style="border:1px solid #ddd;border-radius:4px;max-width:720px" loading="lazy"></iframe>'
            f'<p style="font-size:90%;color:#555">{html.escape(title)}: {html.escape(HELP_TEXT)} Without WebGL 2 '
            "the page shows the turntable.</p>")
