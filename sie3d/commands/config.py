"""``sie3d config``: print the resolved config tree (YAML) and its hash."""

from __future__ import annotations

from ..config_args import add_config_arguments, config_from_args


def add_parser(sub, name, help_text):
    parser = sub.add_parser(name, help=help_text, description=help_text)
    add_config_arguments(parser)
    return parser


def run(args) -> int:
    config = config_from_args(args)
    print(config.to_yaml(), end="")
    print(f"# params hash: {config.params_hash()}")
    return 0
