"""Benchmarks run by ``sie3d bench NAME``: one module per benchmark in this package.

Each module defines ``DESCRIPTION``, ``add_arguments(parser)`` and ``run(args) -> int``. Benchmarks
report ratios measured side by side in one run; absolute times are only meaningful on a GPU.

A benchmark may import every stage (it times them) and the config arguments of
:mod:`sie3d.config_args`, never :mod:`sie3d.commands`; only :mod:`sie3d.commands.bench` imports this package.
"""

import pkgutil


def available() -> list[str]:
    return sorted(m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_"))
