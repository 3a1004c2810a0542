"""``sie3d view RUN_DIR|avatar.ply|avatar.spz [--port N] [--no-browser]``: the book's orbit viewer, served locally.

The viewer page (our WebGL 2 splat renderer, :mod:`sie3d.render.web_viewer`) and the avatar (a run's
``avatar.rig`` with its expression sliders, else static splats) go to a temporary folder that the
standard library's HTTP server serves on 127.0.0.1 until Ctrl-C.
"""

from __future__ import annotations

import functools
import shutil
import sys
import tempfile
import webbrowser
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from ._common import UserError

DEFAULT_PORT = 8765


def add_parser(sub, name, help_text):
    parser = sub.add_parser(name, help=help_text, description=help_text)
    parser.add_argument("source", metavar="RUN_OR_SPLATS",
                        help="a run directory (avatar.rig, else avatar.spz / avatar.ply), an avatar.rig, a .ply "
                             "(either convention) or an .spz")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT}; 0: any free)")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--no-browser", action="store_true", help="only print the URL")
    return parser


class _QuietHandler(SimpleHTTPRequestHandler):
    extensions_map = {**SimpleHTTPRequestHandler.extensions_map, ".js": "text/javascript"}

    def log_message(self, format, *args):  # noqa: A002 (the base class's name)
        pass


def prepare_site(source: str | Path, root: str | Path) -> str:
    """Install the viewer into ``root`` with the avatar of ``source``; returns the page path + query. A run
    directory that predates ``avatar.rig`` gets it from its newest checkpoint (:func:`~sie3d.train.finished.ensure_rig`)."""
    from ..avatar.web import stage_avatar
    from ..render.web_viewer import install_viewer
    from ..run_dir import AVATAR_RIG, has_checkpoints

    source = Path(source)
    if source.is_dir() and not (source / AVATAR_RIG).is_file() and has_checkpoints(source):
        from ..train.finished import ensure_rig  # torch: only a run that predates avatar.rig needs it

        ensure_rig(source)
    install_viewer(root)
    return "index.html?" + stage_avatar(source, root, "avatar")


def make_server(root: str | Path, host: str = "127.0.0.1", port: int = 0) -> ThreadingHTTPServer:
    """A threaded static-file server of ``root`` (call ``serve_forever``; ``server_address`` has the port)."""
    handler = functools.partial(_QuietHandler, directory=str(root))
    try:
        return ThreadingHTTPServer((host, port), handler)
    except OSError as exc:
        raise UserError(f"cannot listen on {host}:{port} ({exc.strerror}); choose another --port (0: any free)")


def run(args) -> int:
    source = Path(args.source)
    if not source.exists():
        raise UserError(f"{source} does not exist; give a run directory, an avatar.rig, a .ply or an .spz")
    root = Path(tempfile.mkdtemp(prefix="sie3d-view-"))
    try:
        page = prepare_site(source, root)
        server = make_server(root, args.host, args.port)
        host, port = server.server_address[:2]
        url = f"http://{host}:{port}/{page}"
        print(f"viewer: {url}\n(Ctrl-C to stop)", flush=True)
        if not args.no_browser:
            webbrowser.open(url)
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            print("stopped", file=sys.stderr)
        finally:
            server.server_close()
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return 0
