"""The command line, one module per ``sie3d`` subcommand (``add_parser(subparsers)`` and ``run(args)``),
plus :class:`~sie3d.commands._common.UserError` in ``_common`` (the config arguments are :mod:`sie3d.config_args`).

The top of the package: may import every stage; only :mod:`sie3d.cli` imports it.
"""
