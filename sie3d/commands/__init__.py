"""The command line, one module per ``sie3d`` subcommand (``add_parser(subparsers)`` and ``run(args)``),
plus the shared argument helpers and :class:`~sie3d.commands._common.UserError` in ``_common``.

The top of the package: may import every stage; only :mod:`sie3d.cli` imports it.
"""
