"""The command-line arguments that build a :class:`~sie3d.config.Config`: ``--params`` and ``--set``.

Shared by the CLI's subcommands (:mod:`sie3d.commands`) and the benchmarks (:mod:`sie3d.bench`).
"""

from __future__ import annotations

import argparse

from .config import Config, load_config


def add_config_arguments(parser: argparse.ArgumentParser, default_params: str | None = None) -> None:
    """Add ``--params YAML`` (repeatable, merged in order) and ``--set KEY=VALUE`` (repeatable)."""
    parser.add_argument("--params", action="append", default=None, metavar="YAML",
                        help="params file; repeat to merge ablation deltas onto a preset "
                             f"(default: {default_params or 'built-in defaults'})")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="dotted override, e.g. --set guidance.delta_t=50 (repeatable)")
    parser.set_defaults(_default_params=default_params)


def params_files(args: argparse.Namespace) -> list[str]:
    """The ``--params`` files, or the command's default preset."""
    return args.params or ([args._default_params] if args._default_params else [])


def config_from_args(args: argparse.Namespace) -> Config:
    """The config of parsed :func:`add_config_arguments` (ConfigError on a bad file, key or value)."""
    return load_config(*params_files(args), overrides=args.overrides)
