"""``sie3d animate RUN_DIR --to EXPRESSION[:WEIGHT] --out anim.mp4``: re-pose a finished avatar on video."""

from __future__ import annotations

from pathlib import Path

from ._common import UserError


def add_parser(sub, name, help_text):
    parser = sub.add_parser(name, help=help_text, description=help_text)
    parser.add_argument("run_dir", metavar="RUN_DIR", help="a finished run directory (config.yaml + checkpoints/)")
    parser.add_argument("--to", required=True, metavar="EXPRESSION[:WEIGHT]",
                        help="target: an emotion word or text (surprised, 'smiling broadly'; built-in head), or "
                             "template components (smile:0.6,brow_raise:1 / flame_expr_03:2); WEIGHT scales it "
                             "(default 1)")
    parser.add_argument("--frames", type=int, default=48, help="video frames (default 48)")
    parser.add_argument("--orbit", type=float, default=30.0,
                        help="camera azimuth swept during the morph, degrees, centred on the front (default 30)")
    parser.add_argument("--out", required=True, help="video to write (.mp4 or .gif)")
    parser.add_argument("--ply-every", type=int, default=0, metavar="K",
                        help="also write the posed splats of every K-th frame (and the last) as .ply "
                             "into OUT_STEM_ply/ (default 0: none)")
    parser.add_argument("--fps", type=int, default=24)
    parser.add_argument("--resolution", type=int, default=256, help="image side in pixels (default 256)")
    parser.add_argument("--backend", default=None, help="auto | torch | gsplat | dense (default: the run's)")
    return parser


def run(args) -> int:
    from ..avatar.animate import morph_coefficients, orbit_azimuths, render_morph, target_coefficients
    from ..avatar.ply import save_ply
    from ..render.media import save_turntable
    from ..train.finished import load_finished_avatar

    out = Path(args.out)
    if out.suffix.lower() not in (".mp4", ".gif"):
        raise UserError(f"--out {out}: the video must end in .mp4 or .gif")
    if args.frames < 1 or args.ply_every < 0 or args.resolution < 16:
        raise UserError("--frames must be >= 1, --ply-every >= 0 and --resolution >= 16")
    avatar = load_finished_avatar(args.run_dir)
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
