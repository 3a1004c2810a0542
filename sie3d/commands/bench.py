"""``sie3d bench NAME``: dispatch to the benchmark modules in ``sie3d.bench``."""

from __future__ import annotations

import importlib

from ..bench import available


def add_parser(sub, name, help_text):
    parser = sub.add_parser(name, help=help_text, description=help_text)
    benches = parser.add_subparsers(dest="bench", metavar="BENCH", required=True)
    for bench in available():
        module = importlib.import_module(f"sie3d.bench.{bench}")
        p = benches.add_parser(bench, help=module.DESCRIPTION, description=module.DESCRIPTION)
        module.add_arguments(p)
        p.set_defaults(_bench=module.run)
    return parser


def run(args) -> int:
    return int(args._bench(args) or 0)
