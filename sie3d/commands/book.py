"""``sie3d book``: execute every notebook with papermill and a params file, then build the HTML book."""

from __future__ import annotations

import sys
from pathlib import Path

from ..book import build_book


def add_parser(sub, name, help_text):
    parser = sub.add_parser(name, help=help_text, description=help_text)
    parser.add_argument("--params", action="append", required=True, metavar="YAML",
                        help="preset, then optional ablation deltas")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--only", action="append", default=None, metavar="NAME",
                        help="execute only notebooks whose name contains NAME (repeatable)")
    parser.add_argument("--no-html", action="store_true", help="execute notebooks, skip the HTML build")
    parser.add_argument("--root", default=".", help="repository root (holds notebooks/ and book/)")
    return parser


def run(args) -> int:
    root = Path(args.root)
    if not (root / "notebooks").is_dir():
        print(f"sie3d book: error: no notebooks/ under {root.resolve()}; run it from the repository root "
              "or pass --root", file=sys.stderr)
        return 1
    result = build_book(args.params, args.overrides, repo_root=root, only=args.only,
                        build_html=not args.no_html)
    failed = [n for n in result.notebooks if not n.ok]
    for n in failed:
        print(f"sie3d book: notebook {n.name} failed at {n.error} (partial output: {n.output})",
              file=sys.stderr)
    if result.build_error:
        print(f"sie3d book: jupyter-book build failed:\n{result.build_error}", file=sys.stderr)
    if result.html_index and not args.no_html:
        print(f"book: {result.html_index}")
    ok = not failed and (args.no_html or result.ok)
    return 0 if ok else 1
