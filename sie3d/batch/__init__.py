"""Grids of runs on Ray: a YAML manifest expands to run directories (:mod:`.manifest`), actors that keep
their models loaded run them, resumably (:mod:`.engine`).

Sits beside the CLI, above generation and evaluation: may import every stage, :mod:`sie3d.generate`
and :mod:`sie3d.evaluation`; only the commands import it.
"""
