"""``sie3d evaluate RUN_DIR... --out DIR [--reference DIR] [--features auto|inception|dlib]``."""

from __future__ import annotations

import sys
from pathlib import Path

from ..config import EvalConfig

_DEFAULTS = EvalConfig()


def add_parser(sub, name, help_text):
    from ..face.detect import DETECTORS

    parser = sub.add_parser(
        name, help=help_text, description=help_text + ". Per-run metrics.json/metrics.csv are written into each "
        "run directory; runs.csv, groups.csv, metrics.md and evaluation.json into --out.")
    parser.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="run directories written by `sie3d generate`")
    parser.add_argument("--out", required=True, metavar="DIR", help="where the combined tables go")
    parser.add_argument("--reference", metavar="DIR", default=None,
                        help="reference images for FID/KID (default: the runs' input photos)")
    parser.add_argument("--features", choices=("auto", "inception", "dlib"), default="auto",
                        help="feature space of the distribution distance: inception = FID/KID (needs "
                             "`sie3d weights download inception-fid`); dlib = labelled offline substitute, "
                             "not FID; auto = inception when cached (default)")
    parser.add_argument("--identity", default="auto", metavar="ENCODER",
                        help="identity encoder for ID: auto (arcface-metric, arcface, dlib: first available) "
                             "| arcface-metric | arcface | dlib")
    parser.add_argument("--detector", choices=("auto", *DETECTORS.names()), default="auto",
                        help="face detector (auto: scrfd when antelopev2 is cached, else dlib)")
    parser.add_argument("--device", default="cpu", help="torch device for the classifiers and Inception")
    parser.add_argument("--kid-subsets", type=int, default=_DEFAULTS.kid_subsets)
    parser.add_argument("--kid-subset-size", type=int, default=_DEFAULTS.kid_subset_size)
    return parser


def run(args) -> int:
    from ..evaluation.evaluate import evaluate_runs
    from ..evaluation.evaluator import Evaluator
    from ..evaluation.tables import TABLE_MD
    from ._common import UserError

    evaluator = Evaluator(features=args.features, detector=args.detector, identity=args.identity,
                          device=args.device, kid_subsets=args.kid_subsets, kid_subset_size=args.kid_subset_size)
    try:
        evaluation = evaluate_runs(args.run_dirs, args.out, reference_dir=args.reference, evaluator=evaluator)
    except ImportError as exc:  # an optional runtime (onnxruntime) missing for a model asked for by name
        raise UserError(str(exc)) from None
    models = evaluation["models"]
    print(f"evaluated {len(evaluation['runs'])} run(s); distribution distance: {models['frechet_label']}; "
          f"identity: {models['identity']}", file=sys.stderr)
    print((Path(args.out) / TABLE_MD).read_text())
    return 0
