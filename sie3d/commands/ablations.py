"""``sie3d ablations PHOTO... --out DIR [--expressions E...] [--only NAME...] [--iterations N]``."""

from __future__ import annotations

import sys

from ..evaluation.ablations import ABLATIONS

DEFAULT_PRESET = "params/quick.yaml"


def add_parser(sub, name, help_text):
    names = [a for a, _, _ in ABLATIONS]
    parser = sub.add_parser(
        name, help=help_text, description=help_text + ". Runs go to OUT/<ablation>/<photo stem>__<expression>, "
        "through the engine of `sie3d batch` (a local Ray cluster, one single-threaded worker per core); "
        "finished runs with the same params are reused; the combined tables go to OUT/evaluation.")
    parser.add_argument("photos", nargs="+", metavar="PHOTO", help="one photo per identity (distinct file names)")
    parser.add_argument("--out", required=True, metavar="DIR", help="grid root")
    parser.add_argument("--expressions", nargs="+", default=["neutral"], metavar="E",
                        help="target expressions, free text as for `sie3d generate --expression` "
                             "(default: neutral)")
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
    from ..batch.engine import EVALUATION_DIR, evaluate_grid, run_batch
    from ..batch.manifest import ablation_spec
    from ..evaluation.tables import TABLE_MD
    from ._common import UserError

    if args.iterations is not None and args.iterations < 1:
        raise UserError(f"--iterations must be at least 1, got {args.iterations}")
    iterations = [f"train.iterations={args.iterations}"] if args.iterations is not None else []
    # every text resolved as `sie3d generate --expression` resolves it; errors before any work
    spec = ablation_spec(args.photos, args.expressions, args.params or [DEFAULT_PRESET], args.out, args.only,
                         [*args.overrides, *iterations])
    try:
        import ray  # noqa: F401
    except ImportError:
        raise UserError("sie3d ablations runs its grid on Ray: pip install 'sie3d[batch]'") from None
    result = run_batch(spec.runs(), spec.out, evaluate_fn=evaluate_grid, progress=sys.stderr.isatty(),
                       log=lambda line: print(line, file=sys.stderr))
    for outcome in result.outcomes:
        print(f"[ablations] {outcome.name}: {outcome.status}", file=sys.stderr)
    if result.evaluation is not None:
        print((spec.out / EVALUATION_DIR / TABLE_MD).read_text())
    return 1 if result.failed else 0
