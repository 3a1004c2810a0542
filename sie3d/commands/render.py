"""``sie3d render RUN_OR_PLY [--turntable out.mp4] [--views out.png]``: turntables and view grids of splats."""

from __future__ import annotations

from pathlib import Path

from ._common import UserError

#: file a run directory keeps its final splats in
RUN_SPLATS = "avatar.ply"


def add_parser(sub, name, help_text):
    parser = sub.add_parser(name, help=help_text, description=help_text)
    parser.add_argument("source", metavar="RUN_OR_PLY", help=f"a .ply file or a run directory with {RUN_SPLATS}")
    parser.add_argument("--turntable", action="append", default=[], metavar="PATH",
                        help="write a turntable (.mp4 or .gif; repeatable)")
    parser.add_argument("--views", metavar="PATH", help="write a view grid (.png): front, front-left, left, back, right")
    parser.add_argument("--frames", type=int, default=None,
                        help="turntable frames (default: eval.turntable_frames of the run, else 36)")
    parser.add_argument("--fps", type=int, default=12)
    parser.add_argument("--resolution", type=int, default=256, help="image side in pixels (default 256)")
    parser.add_argument("--radius", type=float, default=None, help="camera distance (default: cameras.eval_radius)")
    parser.add_argument("--fovy", type=float, default=None, help="vertical field of view in radians "
                                                                 "(default: cameras.eval_fovy)")
    parser.add_argument("--polar", type=float, default=None, help="polar angle in degrees, 90 = level "
                                                                  "(default: cameras.eval_polar)")
    parser.add_argument("--background", default="white", help="white | black | R,G,B in [0, 1]")
    parser.add_argument("--backend", default="auto", help="auto | torch | gsplat | dense")
    return parser


def _background(text: str) -> tuple[float, float, float]:
    named = {"white": (1.0, 1.0, 1.0), "black": (0.0, 0.0, 0.0)}
    if text in named:
        return named[text]
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        values = ()
    if len(values) != 3 or not all(0.0 <= v <= 1.0 for v in values):
        raise UserError(f"--background must be white, black or R,G,B in [0, 1], got {text!r}")
    return values


def run(args) -> int:
    from ..avatar.ply import load_ply
    from ..config import CameraConfig, config_from_dict, read_params_file
    from ..render.media import render_turntable, save_image, save_turntable, view_grid

    source = Path(args.source)
    camera_cfg, frames = CameraConfig(), 36
    if source.is_dir():
        ply = source / RUN_SPLATS
        if not ply.is_file():
            raise UserError(f"{source} is a directory without {RUN_SPLATS}; is it a finished run directory?")
        if (source / "config.yaml").is_file():
            config = config_from_dict(read_params_file(source / "config.yaml"))
            camera_cfg, frames = config.cameras, config.eval.turntable_frames
        turntables = args.turntable or [str(source / "turntable.mp4")]
        views = args.views or (str(source / "views.png") if not args.turntable else None)
    else:
        ply, turntables, views = source, args.turntable, args.views
        if not turntables and not views:
            raise UserError("nothing to write: give --turntable PATH (.mp4/.gif) and/or --views PATH (.png)")
    for path in turntables:
        if Path(path).suffix.lower() not in (".mp4", ".gif"):
            raise UserError(f"--turntable {path}: the file must end in .mp4 or .gif")
    splats = load_ply(ply)
    options = dict(camera_cfg=camera_cfg, radius=args.radius, fovy=args.fovy, polar_deg=args.polar,
                   background=_background(args.background), backend=args.backend)
    if turntables:
        clip = render_turntable(splats, args.frames or frames, args.resolution, **options)
        for path in turntables:
            print(f"turntable: {save_turntable(clip, path, fps=args.fps)}")
    if views:
        print(f"views: {save_image(view_grid(splats, resolution=args.resolution, **options), views)}")
    return 0
