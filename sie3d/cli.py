"""``sie3d`` command line: each subcommand lives in ``sie3d.commands.<name>``.

A subcommand whose module is not there yet is listed with the issue that adds it and exits 2;
none pretends to work. Errors the user can fix are printed as one line (exit 1), never a traceback.
Only the chosen subcommand's module is imported: the top-level parser (``--help``, ``--version``) is
built from :data:`COMMANDS` alone, so it answers without torch.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys

from . import __version__

#: subcommand -> (one-line help, issue that delivers it)
COMMANDS: dict[str, tuple[str, str]] = {
    "weights": ("list, download and verify model weights", "foundation"),
    "config": ("print the fully resolved config of a params file + overrides", "foundation"),
    "book": ("execute the notebooks with a params file and build the HTML book", "foundation"),
    "analyze": ("detect faces, identity and emotion probabilities of a photo", "issue 5 (face/emotion)"),
    "render": ("render a run or .ply: turntable, view grid", "issue 3 (avatar/renderer)"),
    "view": ("serve a run or .ply/.spz in the interactive 3DGS viewer (local HTTP)", "issue 14 (web viewer)"),
    "generate": ("photo + expression text -> 3D Gaussian avatar run directory", "issue 6 (generation)"),
    "animate": ("re-pose a finished avatar: morph to another expression on video, bake static expressions, "
                "write its rig", "issue 16 (expression control)"),
    "evaluate": ("FID/KID, ID and NPS over run directories", "issue 7 (evaluation)"),
    "ablations": ("generate and evaluate the ablation grid (skips finished runs)", "issue 7 (evaluation)"),
    "batch": ("many avatars from a YAML manifest on Ray (resumable, skips finished runs)", "issue 15 (batch)"),
    "bench": ("benchmarks (render, ism, generate as they land)", "foundation"),
    "check": ("a preset's full-size prior through the real loaders (--synthetic-weights: no download)", "issue 11"),
}


def _chosen(argv: list[str]) -> str | None:
    """The subcommand named in ``argv``: its first word that is not an option (the top-level options
    take no value), or None."""
    return next((arg for arg in argv if not arg.startswith("-")), None)


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The ``sie3d`` parser; only ``command``'s module is imported and adds its arguments, the other
    subcommands are listed with their help line."""
    parser = argparse.ArgumentParser(prog="sie3d", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"sie3d {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (help_text, issue) in COMMANDS.items():
        if importlib.util.find_spec(f"sie3d.commands.{name}") is None:
            p = sub.add_parser(name, help=f"[not implemented yet: {issue}] {help_text}")
            p.set_defaults(_run=lambda args, n=name, i=issue: _not_implemented(n, i))
        elif name == command:
            module = importlib.import_module(f"sie3d.commands.{name}")
            p = module.add_parser(sub, name, help_text)
            p.set_defaults(_run=module.run)
        else:
            sub.add_parser(name, help=help_text)
    return parser


def _not_implemented(name: str, issue: str) -> int:
    print(f"sie3d {name}: not implemented yet; it is delivered by {issue}", file=sys.stderr)
    return 2


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser(_chosen(argv))
    args = parser.parse_args(argv)
    if not getattr(args, "_run", None):
        parser.print_help()
        return 0
    try:
        return int(args._run(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # user-facing errors from the library carry a fix in their message
        from .commands._common import UserError
        from .config import ConfigError
        from .weights import ChecksumMismatch, ModelNotAvailable

        user_errors = (UserError, ConfigError, ModelNotAvailable, ChecksumMismatch, KeyError,
                       FileNotFoundError, FileExistsError, ValueError)
        if isinstance(exc, user_errors) or type(exc).__name__ == "TrainingDiverged":
            message = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
            print(f"sie3d {args.command}: error: {message}", file=sys.stderr)
            return 1
        raise


if __name__ == "__main__":
    sys.exit(main())
