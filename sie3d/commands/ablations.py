"""``sie3d ablations PHOTO... --out DIR [--expressions E...] [--only NAME...] [--iterations N]``."""

from __future__ import annotations

import sys

from ..evaluation.ablations import ABLATIONS

DEFAULT_PRESET = "params/quick.yaml"


def add_parser(sub, name, help_text):
    names = [a for a, _, _ in ABLATIONS]
    parser = sub.add_parser(
        name, help=help_text, description=help_text + ". Runs go to OUT/<ablation>/<photo stem>__<expression>; "
        "finished runs with the same params are reused; the combined tables go to OUT/evaluation.")
    parser.add_argument("photos", nargs="+", metavar="PHOTO", help="one photo per identity (distinct file names)")
    parser.add_argument("--out", required=True, metavar="DIR", help="grid root")
    parser.add_argument("--expressions", nargs="+", default=["neutral"], metavar="E",
                        help="target expressions (default: neutral)")
    parser.add_argument("--only", nargs="+", choices=names, default=None, metavar="NAME",
                        help=f"ablations to run (default: all: {', '.join(names)})")
    parser.add_argument("--params", action="append", default=None, metavar="YAML",
                        help="preset the ablation deltas are merged onto; repeat to add deltas applied to every "
                             f"run (default: {DEFAULT_PRESET})")
    parser.add_argument("--iterations", type=int, default=None, help="train.iterations of every run "
                        "(default: the preset's)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="dotted override applied to every run (repeatable)")
    return parser


def run(args) -> int:
    from ..evaluation.ablations import run_ablations
    from ..evaluation.tables import TABLE_MD
    from ..face.emotion import emotion_index
    from ._common import UserError

    for expression in args.expressions:
        emotion_index(expression)  # unknown emotion -> one-line error before any work
    if args.iterations is not None and args.iterations < 1:
        raise UserError(f"--iterations must be at least 1, got {args.iterations}")
    ablations = [a for a in ABLATIONS if args.only is None or a[0] in args.only]
    study = run_ablations(args.photos, args.expressions, args.params or [DEFAULT_PRESET], args.out,
                          iterations=args.iterations, ablations=ablations, overrides=args.overrides,
                          log=lambda line: print(line, file=sys.stderr))
    print((study.evaluation_dir / TABLE_MD).read_text())
    return 0
