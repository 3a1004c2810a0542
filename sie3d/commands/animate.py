"""``sie3d animate RUN_DIR``: re-pose a finished avatar on video (``--to``), bake static expressions for splat
viewers (``--bake``), or write its posable rig (``--write-rig``, for runs older than ``avatar.rig``)."""

from __future__ import annotations

from pathlib import Path

from ._common import UserError


def add_parser(sub, name, help_text):
    parser = sub.add_parser(name, help=help_text, description=help_text)
    parser.add_argument("run_dir", metavar="RUN_DIR", help="a finished run directory (config.yaml + checkpoints/)")
    parser.add_argument("--to", metavar="EXPRESSION[:WEIGHT]",
                        help="video target: an emotion word or text (surprised, 'smiling broadly'; built-in head), "
                             "or template components (smile:0.6,brow_raise:1 / flame_expr_03:2); WEIGHT scales it "
                             "(default 1); needs --out")
    parser.add_argument("--frames", type=int, default=48, help="video frames (default 48)")
    parser.add_argument("--orbit", type=float, default=30.0,
                        help="camera azimuth swept during the morph, degrees, centred on the front (default 30)")
    parser.add_argument("--out", help="video to write with --to (.mp4 or .gif)")
    parser.add_argument("--ply-every", type=int, default=0, metavar="K",
                        help="also write the posed splats of every K-th frame (and the last) as .ply "
                             "into OUT_STEM_ply/ (default 0: none)")
    parser.add_argument("--fps", type=int, default=24)
    parser.add_argument("--resolution", type=int, default=256, help="image side in pixels (default 256)")
    parser.add_argument("--backend", default=None, help="auto | torch | gsplat | dense (default: the run's)")
    parser.add_argument("--bake", metavar="EXPR[:W],EXPR[:W],...",
                        help="write one static avatar_EXPR.spz + .ply per expression (e.g. neutral,happy,surprise) "
                             "that SuperSplat and Spark open upright")
    parser.add_argument("--bake-dir", default=None, help="where --bake writes (default RUN_DIR/baked)")
    parser.add_argument("--write-rig", nargs="?", const="", default=None, metavar="PATH",
                        help="write the posable rig (default RUN_DIR/avatar.rig; finished runs already have one)")
    return parser


def run(args) -> int:
    from ..avatar.animate import bake_expressions, morph_coefficients, orbit_azimuths, render_morph, target_coefficients
    from ..avatar.ply import save_ply
    from ..avatar.rig import write_rig
    from ..render.media import save_turntable
    from ..run_dir import AVATAR_RIG
    from ..train.finished import load_finished_avatar

    if args.to is None and args.bake is None and args.write_rig is None:
        raise UserError("say what to write: --to EXPRESSION --out VIDEO, --bake EXPRESSIONS, or --write-rig")
    out = Path(args.out) if args.out else None
    if args.to is not None and (out is None or out.suffix.lower() not in (".mp4", ".gif")):
        raise UserError(f"--to needs --out VIDEO ending in .mp4 or .gif (got {args.out})")
    if args.frames < 1 or args.ply_every < 0 or args.resolution < 16:
        raise UserError("--frames must be >= 1, --ply-every >= 0 and --resolution >= 16")
    avatar = load_finished_avatar(args.run_dir)
    if args.write_rig is not None:
        path = write_rig(avatar.gaussians, avatar.expression, args.write_rig or Path(args.run_dir) / AVATAR_RIG,
                         avatar.config.cameras)
        print(f"rig: {path} ({path.stat().st_size / 1e6:.2f} MB)")
    if args.bake is not None:
        requests = [r for r in args.bake.split(",") if r.strip()]
        if not requests:
            raise UserError("--bake needs expressions, e.g. --bake neutral,happy,surprise")
        for spz, ply in bake_expressions(avatar.gaussians, requests, args.bake_dir or Path(args.run_dir) / "baked"):
            print(f"baked: {spz} + {ply.name}")
    if args.to is None:
        return 0
    target, described = target_coefficients(args.to, avatar.template)
    coefficients = morph_coefficients(avatar.expression, target, args.frames)
    azimuths = orbit_azimuths(args.frames, args.orbit)
    ply_dir = out.with_name(out.stem + "_ply")
    written = []

    def keep_pose(i, splats):
        if args.ply_every and (i % args.ply_every == 0 or i == args.frames - 1):
            written.append(save_ply(splats.to("cpu"), ply_dir / f"frame_{i:04d}.ply"))

    print(f"animate: {args.run_dir} (iteration {avatar.iteration}) -> {described}; "
          f"{args.frames} frames, orbit {args.orbit:g}°")
    frames = render_morph(avatar.gaussians, coefficients, azimuths, args.resolution, on_pose=keep_pose,
                          camera_cfg=avatar.config.cameras, backend=args.backend or avatar.config.render.backend)
    print(f"video: {save_turntable(frames, out, fps=args.fps)}")
    if written:
        print(f"posed .ply: {len(written)} files in {ply_dir}")
    return 0
