"""``sie3d generate PHOTO... --expression E --out DIR``: one avatar into a run directory."""

from __future__ import annotations

import sys

from ._common import UserError
from ._common import add_config_arguments, config_from_args


def add_parser(sub, name, help_text):
    parser = sub.add_parser(name, help=help_text, description=help_text)
    parser.add_argument("photos", nargs="+", metavar="PHOTO",
                        help="photo(s) of one person (several: identity embeddings averaged)")
    parser.add_argument("--expression", default=None,
                        help="target emotion: angry, disgust, fear, happy, sad, surprise, neutral")
    parser.add_argument("--intensity", type=float, default=None, help="η in [0, 1] (paper eq 6)")
    parser.add_argument("--accessory", default=None, help='free text, e.g. "wearing glasses"')
    parser.add_argument("--out", required=True, help="run directory to create (or resume)")
    parser.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in --out")
    add_config_arguments(parser, default_params="params/quick.yaml")
    return parser


def run(args) -> int:
    from ..face.emotion import emotion_index
    from ..generate import configure, generate

    if args.expression is not None:
        emotion_index(args.expression)  # unknown emotion -> one-line error before any work
    if args.intensity is not None and not 0.0 <= args.intensity <= 1.0:
        raise UserError(f"--intensity must be in [0, 1], got {args.intensity}")
    config = configure(config_from_args(args), args.expression, args.intensity, args.accessory)
    try:
        summary = generate(args.photos, config, args.out, resume=args.resume, progress=sys.stderr.isatty())
    except KeyboardInterrupt:
        print(f"sie3d generate: interrupted; continue with: sie3d generate ... --out {args.out} --resume",
              file=sys.stderr)
        return 130
    frontal = summary["frontal"]
    print(f"avatar: {args.out}/avatar.ply  turntable: {args.out}/turntable.mp4")
    if frontal.get("face_found"):
        print(f"identity (dlib distance, photo vs frontal render): {frontal['dlib_distance']:.3f} "
              f"({'same person' if frontal['dlib_distance'] < 0.6 else 'NOT the same person'} by dlib's 0.6 rule)")
    else:
        print("no face detected in the frontal render")
    return 0
