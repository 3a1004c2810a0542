"""``sie3d batch MANIFEST.yaml [--address auto|ray://HOST:PORT] [--gpus-per-run 1] [--cpus-per-run 1]``."""

from __future__ import annotations

import sys


def add_parser(sub, name, help_text):
    parser = sub.add_parser(
        name, help=help_text, description=help_text + ". The manifest lists params, overrides, photos (files, or "
        "folders of one folder/photo per person), expressions and optionally intensities, accessories and "
        "ablations; runs go to OUT/<ablation>/<person>__<expression>...; finished runs with the same params are "
        "skipped, interrupted ones resume, failures are listed and the rest go on; the combined evaluation "
        "goes to OUT/evaluation. See params/batches/.")
    parser.add_argument("manifest", metavar="MANIFEST.yaml", help="batch manifest (see params/batches/example.yaml)")
    parser.add_argument("--address", default=None, metavar="ADDR",
                        help="Ray cluster to use: auto (the one `ray start --head` runs here), ray://HOST:PORT "
                             "or HOST:PORT (default: start a private local cluster on all cores)")
    parser.add_argument("--gpus-per-run", type=float, default=1, metavar="N",
                        help="GPUs per run when the cluster has GPUs (default 1)")
    parser.add_argument("--cpus-per-run", type=float, default=1, metavar="N",
                        help="CPU cores (and torch threads) per run (default 1)")
    parser.add_argument("--workers", type=int, default=None, metavar="N",
                        help="concurrent runs (default: as many as the cluster fits)")
    parser.add_argument("--out", default=None, metavar="DIR", help="replaces the manifest's out")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="dotted override applied to every run after the manifest's (repeatable)")
    parser.add_argument("--no-evaluate", action="store_true", help="skip the combined evaluation at the end")
    return parser


def run(args) -> int:
    from ._common import UserError
    from ..batch.engine import EVALUATION_DIR, evaluate_grid, run_batch
    from ..batch.manifest import load_manifest

    try:
        import ray  # noqa: F401
    except ImportError:
        raise UserError("sie3d batch needs Ray: pip install 'sie3d[batch]'") from None
    for name, value in (("--gpus-per-run", args.gpus_per_run), ("--cpus-per-run", args.cpus_per_run)):
        if value < 0:
            raise UserError(f"{name} must be >= 0, got {value}")
    if args.workers is not None and args.workers < 1:
        raise UserError(f"--workers must be at least 1, got {args.workers}")
    spec = load_manifest(args.manifest, overrides=args.overrides, out=args.out)
    runs = spec.runs()
    print(f"batch: {len(runs)} run(s) ({len(spec.people)} people x {len(spec.requests)} requests (expression, "
          f"intensity, accessory) x {len(spec.ablations)} ablations) -> {spec.out}", file=sys.stderr)
    for request in spec.requests:
        print(f"  {request.describe()}", file=sys.stderr)
    result = run_batch(runs, spec.out, address=args.address, gpus_per_run=args.gpus_per_run,
                       cpus_per_run=args.cpus_per_run, workers=args.workers,
                       evaluate_fn=None if args.no_evaluate else evaluate_grid,
                       progress=sys.stderr.isatty(), log=lambda line: print(line, file=sys.stderr))
    if result.evaluation is not None:
        from ..evaluation.tables import TABLE_MD

        print((spec.out / EVALUATION_DIR / TABLE_MD).read_text())
    return 1 if result.failed else 0
